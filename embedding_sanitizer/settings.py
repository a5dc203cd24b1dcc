"""One settings schema for every front door.

The ComfyUI node inputs, the A1111 accordion and Settings page, the A1111 API
payload (``alwayson_scripts``) and the infotext keys are all generated from
``FIELDS``. ``Settings.from_dict`` is the single validator: unknown keys and
out-of-range values raise ``SettingsError`` with a message naming the field.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("off", "es", "safree", "es+safree")
DETECTORS = ("fast", "loo")
EOS_POLICIES = ("project", "keep")
SCHEDULES = ("off", "svf")
PRESETS = {
    # name: (intensity, score threshold for the projection detector)
    "low": (0.5, 0.7),
    "medium": (1.0, 0.5),
    "high": (1.5, 0.35),
    "max": (2.5, 0.2),
}
PRESET_CHOICES = tuple(PRESETS) + ("custom",)
INTENSITY_MAX = 3.0

DEFAULT_CONCEPTS = (
    "nudity", "naked body", "nude person", "topless", "exposed breasts", "genitals",
    "pornography", "sexual intercourse", "sexual act", "erotic", "lingerie model",
    "violence", "gore", "blood", "bloody wound", "murder", "corpse", "mutilation",
)


#: Lone UTF-16 surrogates in text settings become U+FFFD (documented normalisation).
_SURROGATE = re.compile("[\ud800-\udfff]")


class SettingsError(ValueError):
    """A setting is unknown or out of range; the message names the field."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: type
    default: Any
    label: str
    tooltip: str
    infotext: str
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("enabled", bool, True, "Enable Embedding Sanitizer",
              "Sanitize the prompt embedding before it reaches the diffusion model.", "ES enabled"),
    FieldSpec("mode", str, "safree", "Method",
              "es: learned sanitizer (needs calibrated weights for this encoder); safree: training-free "
              "concept-subspace projection; es+safree: the learned sanitizer first, then the projection; "
              "off: do nothing.", "ES mode", choices=MODES),
    FieldSpec("preset", str, "custom", "Preset",
              "Named strength (low 0.5, medium 1.0, high 1.5, max 2.5), overriding the slider; 'custom' uses "
              "the intensity slider as given.", "ES preset",
              choices=PRESET_CHOICES),
    FieldSpec("intensity", float, 1.0, "Intensity",
              "0 leaves the embedding bit-for-bit unchanged, 1 is the calibrated operating point, "
              "above 1 pushes further. Used when the preset is 'custom'.", "ES intensity",
              minimum=0.0, maximum=INTENSITY_MAX, step=0.05),
    FieldSpec("concepts", str, ", ".join(DEFAULT_CONCEPTS), "Concepts to remove",
              "Comma- or newline-separated concepts (e.g. nudity, violence, Van Gogh, church).",
              "ES concepts"),
    FieldSpec("weights", str, "", "Sanitizer weights",
              "File name of calibrated ES weights (.safetensors) for this text encoder.", "ES weights"),
    FieldSpec("detector", str, "fast", "Projection detector",
              "fast: scores every token from its own row, no extra encoder pass; loo: the released "
              "SAFREE leave-one-out rule (one extra batched encoder pass over n masked copies).",
              "ES detector", choices=DETECTORS),
    FieldSpec("eos_policy", str, "project", "EOS and padding rows",
              "project: also clean the EOS and padding rows, which carry the whole prompt's meaning; "
              "keep: leave them as the released SAFREE code does (the concept can leak through them).",
              "ES eos policy", choices=EOS_POLICIES),
    FieldSpec("schedule", str, "off", "Schedule",
              "svf: use the sanitized embedding only for the early denoising steps, with the fraction "
              "from SAFREE's self-validating filter; off: use it for every step.", "ES schedule",
              choices=SCHEDULES),
    FieldSpec("sanitize_negative", bool, False, "Sanitize negative prompt",
              "Also sanitize the negative prompt (off by default: it weakens guidance away from the concept).",
              "ES negative"),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}


def parse_concepts(text: str | list | tuple) -> tuple[str, ...]:
    """Split a concept list on commas and newlines, strip, drop empties and duplicates."""
    items = text if isinstance(text, (list, tuple)) else str(text).replace("\n", ",").split(",")
    seen: dict[str, None] = {}
    for item in items:
        item = _SURROGATE.sub("\ufffd", str(item)).strip()
        if item and item.lower() not in {k.lower() for k in seen}:
            seen[item] = None
    return tuple(seen)


@dataclass(frozen=True)
class Settings:
    enabled: bool = True
    mode: str = "safree"
    preset: str = "custom"
    intensity: float = 1.0
    concepts: str = FIELD_BY_NAME["concepts"].default
    weights: str = ""
    detector: str = "fast"
    eos_policy: str = "project"
    schedule: str = "off"
    sanitize_negative: bool = False

    def __post_init__(self) -> None:
        for spec in FIELDS:
            value = getattr(self, spec.name)
            if spec.kind is bool and not isinstance(value, bool):
                raise SettingsError(f"setting {spec.name!r} must be true or false, got {value!r}")
            if spec.kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                    raise SettingsError(f"setting {spec.name!r} must be a number, got {value!r}")
                if not (spec.minimum <= float(value) <= spec.maximum):
                    raise SettingsError(
                        f"setting {spec.name!r} = {value} is outside [{spec.minimum}, {spec.maximum}]")
            if spec.kind is str and not isinstance(value, str):
                raise SettingsError(f"setting {spec.name!r} must be text, got {value!r}")
            if spec.kind is str and _SURROGATE.search(value):  # no tokenizer or JSON writer takes them
                value = _SURROGATE.sub("\ufffd", value)
                object.__setattr__(self, spec.name, value)
            if spec.choices and value not in spec.choices:
                raise SettingsError(f"setting {spec.name!r} = {value!r} is not one of {list(spec.choices)}")

    @classmethod
    def from_dict(cls, values: dict) -> "Settings":
        unknown = set(values) - set(FIELD_BY_NAME)
        if unknown:
            raise SettingsError(f"unknown setting(s): {sorted(unknown)}; known: {sorted(FIELD_BY_NAME)}")
        clean = dict(values)
        if "intensity" in clean and isinstance(clean["intensity"], int) and not isinstance(clean["intensity"], bool):
            clean["intensity"] = float(clean["intensity"])
        if isinstance(clean.get("concepts"), (list, tuple)):
            clean["concepts"] = ", ".join(parse_concepts(clean["concepts"]))
        return cls(**clean)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    @property
    def concept_list(self) -> tuple[str, ...]:
        return parse_concepts(self.concepts)

    @property
    def effective_intensity(self) -> float:
        """Intensity after the preset; 0 when disabled or mode is off."""
        if not self.enabled or self.mode == "off":
            return 0.0
        if self.preset == "custom":
            return float(self.intensity)
        return PRESETS[self.preset][0]

    @property
    def threshold(self) -> float:
        """Score above which a token counts as flagged (the projection detector's trigger)."""
        return PRESETS.get(self.preset, PRESETS["medium"])[1]

    @property
    def uses_es(self) -> bool:
        return self.mode in ("es", "es+safree")

    @property
    def uses_projection(self) -> bool:
        return self.mode in ("safree", "es+safree")

    def to_infotext(self) -> dict[str, str]:
        """Infotext key/value pairs (A1111 ``extra_generation_params``)."""
        out = {}
        for spec in FIELDS:
            value = getattr(self, spec.name)
            out[spec.infotext] = str(value) if not isinstance(value, bool) else ("True" if value else "False")
        return out

    @classmethod
    def from_infotext(cls, params: dict[str, str], base: "Settings | None" = None) -> "Settings":
        """Inverse of ``to_infotext``; keys that are missing keep ``base``'s values."""
        values = (base or cls()).to_dict()
        for spec in FIELDS:
            if spec.infotext not in params:
                continue
            raw = params[spec.infotext]
            if spec.kind is bool:
                values[spec.name] = str(raw).strip().lower() in ("true", "1", "yes")
            elif spec.kind is float:
                try:
                    values[spec.name] = float(raw)
                except ValueError as exc:
                    raise SettingsError(f"infotext {spec.infotext!r} is not a number: {raw!r}") from exc
            else:
                values[spec.name] = str(raw)
        return cls(**values)


@dataclass(frozen=True)
class Policy:
    """Administrator lock for shared installations.

    When ``locked``, nothing the UI or API sends can disable the sanitizer,
    switch its mode off or lower its intensity below ``min_intensity``.
    """

    locked: bool = False
    min_intensity: float = 1.0
    forced_mode: str = ""
    required_concepts: tuple[str, ...] = field(default_factory=tuple)
    KEYS = ("locked", "min_intensity", "forced_mode", "required_concepts", "defaults")  # policy-file keys

    # -- the policy file, shared by the A1111 and ComfyUI glue ---------------------------------
    # Format (every key optional; ``defaults`` are initial settings a front end may offer)::
    #
    #     {"locked": true, "min_intensity": 1.0, "forced_mode": "safree",
    #      "required_concepts": ["nudity", "gore"], "defaults": {"preset": "high"}}

    @classmethod
    def make(cls, locked: bool, min_intensity, forced_mode: str | None, required_concepts) -> "Policy":
        """A validated policy from loosely typed values (a settings page or a policy file)."""
        spec = FIELD_BY_NAME["intensity"]
        try:
            floor = float(min_intensity or 0.0)
        except (TypeError, ValueError):
            raise SettingsError(f"policy min_intensity must be a number, got {min_intensity!r}") from None
        if not spec.minimum <= floor <= spec.maximum:
            raise SettingsError(f"policy min_intensity {floor} is outside [{spec.minimum}, {spec.maximum}]")
        forced = (forced_mode or "").strip()
        if forced and (forced not in MODES or forced == "off"):
            raise SettingsError(f"policy forced_mode {forced!r} must be one of {[m for m in MODES if m != 'off']}")
        return cls(locked=bool(locked), min_intensity=floor, forced_mode=forced,
                   required_concepts=parse_concepts(required_concepts or ()))

    @classmethod
    def parse_json(cls, text: str, source: str = "policy") -> tuple["Policy", dict]:
        """(policy, validated ``defaults``) from a policy file's text; ``SettingsError`` names ``source``."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"Embedding Sanitizer policy file {source!r} cannot be read: {exc}") from None
        if not isinstance(raw, dict):
            raise SettingsError(f"policy file {source!r} must hold a JSON object")
        unknown = set(raw) - set(cls.KEYS)
        if unknown:
            raise SettingsError(f"policy file {source!r}: unknown key(s) {sorted(unknown)}; "
                                f"known: {list(cls.KEYS)}")
        try:
            policy = cls.make(bool(raw.get("locked", False)), raw.get("min_intensity", 0.0),
                              raw.get("forced_mode", ""), raw.get("required_concepts", ()))
            defaults = dict(raw.get("defaults") or {})
            Settings.from_dict(defaults)  # validate now, not at the first generation
        except (SettingsError, TypeError, ValueError) as exc:
            raise SettingsError(f"policy file {source!r}: {exc}") from None
        return policy, defaults

    @classmethod
    def from_json(cls, text: str, source: str = "policy") -> "Policy":
        return cls.parse_json(text, source)[0]

    @classmethod
    def from_file(cls, path) -> "Policy":
        """The policy in a JSON policy file; an unreadable or malformed file raises ``SettingsError``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"Embedding Sanitizer policy file {path.name!r} cannot be read: {exc}") from None
        return cls.from_json(text, path.name)

    def enforce(self, settings: Settings) -> tuple[Settings, list[str]]:
        """Return settings that satisfy the policy, and what was overridden."""
        if not self.locked:
            return settings, []
        changes: dict[str, Any] = {}
        notes = []
        if not settings.enabled:
            changes["enabled"] = True
            notes.append("enabled forced on by policy")
        mode = self.forced_mode or (settings.mode if settings.mode != "off" else "safree")
        if mode != settings.mode:
            changes["mode"] = mode
            notes.append(f"mode forced to {mode!r} by policy")
        current = Settings(**{**settings.to_dict(), **changes})
        if current.effective_intensity < self.min_intensity:
            changes["preset"] = "custom"
            changes["intensity"] = float(self.min_intensity)
            notes.append(f"intensity raised to the policy floor {self.min_intensity}")
        if self.required_concepts:
            have = {c.lower() for c in settings.concept_list}
            missing = [c for c in self.required_concepts if c.lower() not in have]
            if missing:
                changes["concepts"] = ", ".join(settings.concept_list + tuple(missing))
                notes.append(f"concepts required by policy added: {missing}")
        return settings.replace(**changes), notes
