"""The settings flags shared by ``demo`` and ``scan``, and what they load.

``add_settings_arguments(parser)`` adds ``--encoder --mode --preset --intensity
--concepts --detector --weights --device`` and the check that refuses contradicting ones
(``check_flag_conflicts``, run by ``cli.main`` for every command with these flags); ``prepare(args, defaults)`` turns them
into a ready ``SanitizerRun`` (encoder, ES model, settings after the policy, its notes).

The flags given are the user's values; ``Policy.resolve`` (the hosts' entry) turns
them into settings: a flag that is not given takes the policy file's ``defaults``
(as A1111's Settings page does), else the schema's default, and a lock is enforced,
with a note for every override. ``--mode auto`` (the default) picks ``es+safree`` when
calibrated weights for the encoder exist, else ``safree``. The ES weights are loaded
whenever a weights file is available, whatever the mode, so that the whole-prompt
score can be reported; a broken file is an error naming it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..policy import Policy
from ..settings import DETECTORS, FIELD_BY_NAME, MODES, PRESET_CHOICES, PRESETS, Settings

AUTO = "auto"
FLAG_FIELDS = ("preset", "intensity", "concepts", "detector")  # flags that map 1:1 onto a setting
#: Flags whose value a named preset (low, medium, high, max) replaces: giving both is an error.
PRESET_OWNED_FLAGS = ("intensity",)


def add_settings_arguments(parser) -> None:
    parser.add_argument("--encoder", default="bundled",
                        help="'bundled' (all-MiniLM-L6-v2), a local SD checkpoint .safetensors, or a transformers folder")
    parser.add_argument("--mode", choices=MODES + (AUTO,), default=None,
                        help="auto (default): es+safree when calibrated weights for the encoder exist, else safree")
    parser.add_argument("--preset", choices=PRESET_CHOICES, default=None, help="default: custom")
    parser.add_argument("--intensity", type=float, default=None,
                        help="0 = identity, 1 = operating point; default 1. Only with --preset custom (the default): "
                             "a named preset sets its own, and giving both is an error")
    parser.add_argument("--concepts", default=None,
                        help=f"comma-separated concepts to remove; default: {FIELD_BY_NAME['concepts'].default}")
    parser.add_argument("--detector", choices=DETECTORS, default=None, help="projection detector; default: fast")
    parser.add_argument("--weights", default="", help="ES weights .safetensors (default: the shipped ones, if any)")
    parser.add_argument("--device", default=AUTO, help="auto (default: cuda when available, else cpu), cpu, cuda, cuda:N")
    parser.set_defaults(check_flags=check_flag_conflicts)  # run by cli.main right after parsing


def check_flag_conflicts(parser, args) -> None:
    """Refuse flags that contradict each other (``parser.error``: usage and exit status 2).

    A named preset sets the intensity itself, so ``--preset low --intensity 3`` would silently
    drop the 3; ``--intensity`` goes with ``--preset custom`` (or no ``--preset``).
    """
    preset = getattr(args, "preset", None)
    if preset is None or preset == "custom":
        return
    given = [f"--{name}" for name in PRESET_OWNED_FLAGS if getattr(args, name, None) is not None]
    if given:
        parser.error(f"--preset {preset} sets the intensity itself ({PRESETS[preset][0]:g}); "
                     f"{' and '.join(given)} cannot be used with it: drop {' '.join(given)} or use --preset custom")


@dataclass
class SanitizerRun:
    encoder: object
    settings: Settings  # after the admin policy
    es_model: object | None
    es_meta: dict = field(default_factory=dict)
    weights: Path | None = None
    device: str = "cpu"
    policy_notes: list[str] = field(default_factory=list)  # what the policy overrode

    @property
    def has_prompt_detector(self) -> bool:
        return self.es_model is not None and bool(self.es_model.has_prompt_detector)


def resolve_device(spec: str | None) -> str:
    import torch

    spec = (spec or AUTO).strip()
    if spec == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: no CUDA device is available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {spec}: only cpu and cuda are supported")
    return str(device)


def prepare(args, policy: Policy | None = None) -> SanitizerRun:
    """Load the encoder and ES weights named by the flags; settings = ``policy.resolve(flags given)``."""
    from ..encoders.select import default_weights_path

    policy = policy if policy is not None else Policy()
    defaults = dict(policy.defaults)
    base = policy.default_settings
    device = resolve_device(getattr(args, "device", AUTO))
    encoder = load_encoder_checked(args.encoder, device)
    weights = _weights_path(args.weights, base.weights) or default_weights_path(encoder)
    mode = args.mode if args.mode is not None else defaults.get("mode", AUTO)
    if mode == AUTO:
        mode = "es+safree" if weights else "safree"
    es_model, es_meta = None, {}
    if weights is not None:
        es_model, es_meta = load_weights_checked(weights, encoder, device)
    values = {name: getattr(args, name) for name in FLAG_FIELDS if getattr(args, name, None) is not None}
    values.update(mode=mode, weights=weights.name if weights else "")
    settings, notes = policy.resolve(values, base)
    intensity = getattr(args, "intensity", None)
    if intensity is not None and settings.preset != "custom":  # the preset came from the policy, not a flag
        notes = notes + [f"--intensity {intensity:g} is not used: the preset {settings.preset!r} sets the "
                         f"intensity ({PRESETS[settings.preset][0]:g})"]
    check_ready(settings, es_model, encoder)
    return SanitizerRun(encoder, settings, es_model, es_meta, weights, device, notes)


def check_ready(settings: Settings, es_model, encoder) -> None:
    """Refuse, before any work, settings that need ES weights when none are loaded."""
    if settings.uses_es and es_model is None:
        raise FileNotFoundError(f"mode {settings.mode!r} needs calibrated weights for {encoder.name}: run "
                                "`python -m embedding_sanitizer train` or pass --weights")


def _weights_path(flag: str, setting: str) -> Path | None:
    if flag:
        return Path(flag)
    if setting:  # a file name from the policy defaults: as given, else in the weights folder
        from ..paths import WEIGHTS_DIR

        path = Path(setting)
        return path if path.exists() else WEIGHTS_DIR / setting
    return None


def load_encoder_checked(spec: str, device: str):
    """``load_encoder`` with every failure turned into one clear error naming the encoder."""
    from ..encoders.select import load_encoder

    try:
        return load_encoder(spec, device=device)
    except (FileNotFoundError, ValueError):  # already one clear line
        raise
    except Exception as exc:  # noqa: BLE001 - a command-line front door: one line, no traceback
        name = Path(spec).name if spec else spec
        raise ValueError(f"--encoder {name}: cannot be loaded ({type(exc).__name__}: {exc})") from None


def load_weights_checked(path: Path, encoder, device: str) -> tuple[object, dict]:
    """``load_es`` for ``encoder``, with a broken or foreign file reported by name."""
    from ..weights_io import WeightsMismatch, load_es

    if not path.is_file():
        raise FileNotFoundError(f"ES weights file not found: {path.name}"
                                + (" (it is a folder)" if path.is_dir() else ""))
    try:
        model, meta = load_es(path, encoder_name=encoder.name, encoder_fingerprint=encoder.fingerprint,
                              width=encoder.width, device=device)
    except WeightsMismatch:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for broken files
        raise ValueError(f"ES weights {path.name}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    meta["file"] = path.name
    return model, meta
