"""Calibrated ES weights in ``.safetensors`` with JSON metadata."""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .encoders.base import fingerprints_match, short_fingerprint
from .es_model import OPTIONAL_BUFFERS, PROMPT_BUFFERS, ESConfig, EmbeddingSanitizerNet
from .pooled_erasure import POOLED_BUFFERS

FORMAT_VERSION = "1"
log = logging.getLogger(__name__)


class WeightsMismatch(ValueError):
    """The weights file was made for another text encoder."""


class WeightsFileError(ValueError):
    """The weights file is unreadable, malformed, oversized or holds non-finite values; the message names it."""


#: Bounds on the stored model configuration, checked before anything is allocated.
CONFIG_LIMITS = {"width": (1, 16384), "hidden": (2, 4096), "layers": (1, 32), "heads": (1, 64),
                 "max_length": (1, 1024)}
CONFIG_CHOICES = {"edit_scope": ("chunk", "tokens"), "prompt_pooling": ("", "mean", "eos")}
MAX_PARAMETERS = 256 * 1024 * 1024  # values; the shipped files hold about 0.4 million


def save_es(path: str | Path, model: EmbeddingSanitizerNet, *, encoder_name: str, encoder_fingerprint: str,
            layout: dict, concepts: list[str], training: dict | None = None, metrics: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "embedding-sanitizer",
        "format_version": FORMAT_VERSION,
        "encoder_name": encoder_name,
        "encoder_fingerprint": encoder_fingerprint,
        "width": str(model.config.width),
        "config": json.dumps(model.config.to_dict()),
        "layout": json.dumps(layout),
        "concepts": json.dumps(list(concepts)),
        "training": json.dumps(training or {}),
        "metrics": json.dumps(metrics or {}),
    }
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    return path


def read_metadata(path: str | Path) -> dict:
    """The metadata of an ES weights file (JSON fields decoded).

    ``WeightsMismatch``: a readable safetensors file of another kind (a LoRA, a checkpoint);
    ``WeightsFileError``: not readable as safetensors, or its Embedding Sanitizer metadata is malformed.
    """
    name = Path(path).name
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types and OSError
        raise WeightsFileError(f"ES weights file {name} cannot be read as safetensors: {_reason(exc)}") from None
    if raw.get("format") != "embedding-sanitizer":
        raise WeightsMismatch(f"{name} is not an Embedding Sanitizer weights file")
    meta = dict(raw)
    for key in ("config", "layout", "concepts", "training", "metrics"):
        try:
            meta[key] = json.loads(raw.get(key, "{}") or "{}")
        except ValueError as exc:
            raise WeightsFileError(f"ES weights file {name}: metadata field {key!r} is not valid JSON ({exc})") \
                from None
    try:
        meta["width"] = int(raw.get("width", 0))
    except ValueError:
        raise WeightsFileError(f"ES weights file {name}: metadata field 'width' is not a number: "
                               f"{raw.get('width')!r}") from None
    return meta


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def checked_config(meta: dict, name: str) -> ESConfig:
    """The model configuration of a file, refused (naming the file and the field) when out of bounds.

    Runs before any tensor is allocated: a crafted ``hidden`` of 2**22 is refused in microseconds.
    """
    config = meta.get("config")
    if not isinstance(config, dict):
        raise WeightsFileError(f"ES weights file {name}: metadata field 'config' must be a JSON object")
    known = {f.name for f in fields(ESConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise WeightsFileError(f"ES weights file {name}: config has unknown field(s) {unknown}; "
                               "it was made by a newer version or is damaged")
    if "width" not in config:
        raise WeightsFileError(f"ES weights file {name}: config has no 'width'")
    for key, (low, high) in CONFIG_LIMITS.items():
        if key not in config:
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise WeightsFileError(f"ES weights file {name}: config field {key!r} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise WeightsFileError(f"ES weights file {name}: config field {key!r} = {value} is outside "
                                   f"[{low}, {high}]")
    for key, choices in CONFIG_CHOICES.items():
        if key in config and config[key] not in choices:
            raise WeightsFileError(f"ES weights file {name}: config field {key!r} = {config[key]!r} is not one of "
                                   f"{list(choices)}")
    dropout = config.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise WeightsFileError(f"ES weights file {name}: config field 'dropout' = {dropout!r} is outside [0, 1)")
    cfg = ESConfig(**config)
    if cfg.hidden % cfg.heads:
        raise WeightsFileError(f"ES weights file {name}: config field 'hidden' = {cfg.hidden} is not a multiple of "
                               f"'heads' = {cfg.heads}")
    if meta.get("width") and meta["width"] != cfg.width:
        raise WeightsFileError(f"ES weights file {name}: metadata width {meta['width']} and config width "
                               f"{cfg.width} disagree")
    return cfg


def _expected_shapes(config: ESConfig) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of the model for ``config``, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = EmbeddingSanitizerNet(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _checked_state(path: Path, config: ESConfig) -> dict[str, torch.Tensor]:
    """The tensors of a file, after their shapes (from the header) and values are checked."""
    name = path.name
    expected = _expected_shapes(config)
    total = sum(_numel(shape) for shape in expected.values())
    if total > MAX_PARAMETERS:
        raise WeightsFileError(f"ES weights file {name}: config asks for {total:,} values (limit "
                               f"{MAX_PARAMETERS:,}); refused before loading")
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            unexpected = sorted(set(keys) - set(expected))
            missing = sorted(set(expected) - set(keys))
            if unexpected or set(missing) - set(OPTIONAL_BUFFERS):
                raise WeightsMismatch(f"{name} does not match this version's ES model (missing {missing}, "
                                      f"unexpected {unexpected}): calibrate it again")
            for key in keys:  # shapes from the header: nothing is read yet
                shape = tuple(handle.get_slice(key).get_shape())
                if shape != expected[key]:
                    raise WeightsFileError(f"ES weights file {name}: tensor {key!r} has shape {list(shape)}, the "
                                           f"config needs {list(expected[key])}")
            state = {key: handle.get_tensor(key) for key in keys}
    except (WeightsMismatch, WeightsFileError):
        raise
    except Exception as exc:  # noqa: BLE001 - truncated data, bad dtype: safetensors' own errors
        raise WeightsFileError(f"ES weights file {name} cannot be read: {_reason(exc)}") from None
    for key, value in state.items():
        if not value.is_floating_point():
            raise WeightsFileError(f"ES weights file {name}: tensor {key!r} is {value.dtype}, not floating point")
        if not bool(torch.isfinite(value).all()):
            raise WeightsFileError(f"ES weights file {name}: tensor {key!r} holds NaN or infinite values; "
                                   "the file is damaged (calibrate it again)")
    return state


def _numel(shape) -> int:
    out = 1
    for size in shape:
        out *= int(size)
    return out


def check_file(path: str | Path) -> dict:
    """Validate a whole ES weights file without building the model; returns its metadata.

    Raises ``WeightsMismatch`` for a safetensors file of another kind and ``WeightsFileError``
    (naming the file and the reason) for a broken one.
    """
    path = Path(path)
    meta = read_metadata(path)
    _checked_state(path, checked_config(meta, path.name))
    return meta


def load_es(path: str | Path, *, encoder_name: str | None = None, encoder_fingerprint: str | None = None,
            width: int | None = None, device: str | torch.device = "cpu") -> tuple[EmbeddingSanitizerNet, dict]:
    """Load ES weights, refusing a file made for another encoder (the message names both)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ES weights file not found: {path.name} (calibrate one with "
                                "`python -m embedding_sanitizer train`)")
    meta = read_metadata(path)
    made_for = (f"{meta.get('encoder_name', '?')} (width {meta['width']}, "
                f"fingerprint {short_fingerprint(meta.get('encoder_fingerprint', ''))})")
    in_use = (f"{encoder_name or '?'} (width {width}, "
              f"fingerprint {short_fingerprint(encoder_fingerprint or '')})")
    if width is not None and width != meta["width"]:
        raise WeightsMismatch(f"{path.name} was calibrated for {made_for}, but the text encoder in use is "
                              f"{in_use}: calibrate weights for this encoder")
    if (encoder_fingerprint and meta.get("encoder_fingerprint")
            and not fingerprints_match(encoder_fingerprint, meta["encoder_fingerprint"])):
        raise WeightsMismatch(f"{path.name} was calibrated for {made_for}, but the text encoder in use is "
                              f"{in_use}: calibrate weights for this encoder")
    config = checked_config(meta, path.name)
    state = _checked_state(path, config)  # shapes, sizes and finite values, before the model is built
    model = EmbeddingSanitizerNet(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - set(OPTIONAL_BUFFERS):
        raise WeightsMismatch(f"{path.name} does not match this version's ES model (missing {sorted(missing)}, "
                              f"unexpected {sorted(unexpected)}): calibrate it again")
    if set(missing) & set(PROMPT_BUFFERS):  # calibrated before the whole-prompt detector existed: it stays off
        model.config.prompt_pooling = ""
    if set(missing) & set(POOLED_BUFFERS):  # calibrated before the pooled-erasure head: the stage uses its
        model.config.pooled_head = False  # training-free target
    model.eval().to(device)
    return model, meta


@dataclass
class WeightsScan:
    """What a weights folder holds: good ES files, and broken ones with the reason."""

    good: list[Path] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)

    def broken_labels(self) -> list[str]:
        """``"name (unreadable: reason)"`` for every broken file, for listings and reports."""
        return [f"{path.name} (unreadable: {reason})" for path, reason in self.broken]


_scan_cache: dict[tuple, tuple[str, str]] = {}  # (path, mtime_ns, size) -> (status, reason)
_scan_lock = threading.Lock()
_warned: set[tuple] = set()


def _status(path: Path) -> tuple[str, str]:
    """("good" | "foreign" | "broken", reason), cached by path, modification time and size."""
    try:
        stat = path.stat()
    except OSError as exc:
        return "broken", _reason(exc)
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _scan_lock:
        hit = _scan_cache.get(key)
    if hit is not None:
        return hit
    try:
        check_file(path)
        status = ("good", "")
    except WeightsMismatch as exc:
        foreign = "not an Embedding Sanitizer weights file" in str(exc)
        status = ("foreign", "") if foreign else ("broken", str(exc))
    except WeightsFileError as exc:
        status = ("broken", str(exc).replace(f"ES weights file {path.name}: ", "").replace(
            f"ES weights file {path.name} ", ""))
    with _scan_lock:
        _scan_cache[key] = status
        if status[0] == "broken" and key not in _warned:
            _warned.add(key)
            log.warning("Embedding Sanitizer: weights file %s is unreadable and not offered: %s", path, status[1])
    return status


def scan_weight_files(*folders: str | Path) -> WeightsScan:
    """Every ``.safetensors`` file of the folders, sorted by name within a folder: good ES weights files,
    and broken ones with the reason (logged once at WARNING). Files of another kind (LoRAs) are ignored."""
    scan = WeightsScan()
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.safetensors")):
            status, reason = _status(path)
            if status == "good":
                scan.good.append(path)
            elif status == "broken":
                scan.broken.append((path, reason))
            else:
                log.debug("skipping %s: not an Embedding Sanitizer weights file", path.name)
    return scan


def list_weight_files(*folders: str | Path) -> list[Path]:
    """The good ES weights files in the given folders (sorted by name); see ``scan_weight_files``."""
    return scan_weight_files(*folders).good
