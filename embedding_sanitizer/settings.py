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
# The longest concept list accepted. Each concept is one text-encoder row to encode (in batches, with
# progress) when a list is first used on an encoder; README "Concept lists" gives the measured times.
MAX_CONCEPT_LIST = 1000


def concept_cap_message(count: int) -> str:
    return (f"the concept list has {count} concepts; at most {MAX_CONCEPT_LIST} are accepted. Merge synonyms "
            "into fewer concepts, or split the list over several sanitizer nodes")


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
              "File name of calibrated ES weights (.safetensors) for this text encoder; empty: a file that matches it; "
              "auto-calibrate: as empty, and when none matches, calibrate one in the background (the training-free "
              "projection is used until it is ready).", "ES weights"),
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
    folded: set[str] = set()
    for item in items:
        item = _SURROGATE.sub("\ufffd", str(item)).strip()
        if item and item.lower() not in folded:
            folded.add(item.lower())
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
    # Set by ``Policy.enforce`` only, never by a user: not in ``FIELDS`` (no UI, API or infotext key) and
    # not in ``to_dict()``. ``required_concepts`` are scored and projected as their own list, beside the
    # user's ``concepts``, so extra user concepts cannot dilute them; ``max_threshold`` caps the
    # detection threshold the preset would give (1.0: no cap).
    required_concepts: tuple[str, ...] = ()
    max_threshold: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.required_concepts, (list, str)):
            object.__setattr__(self, "required_concepts", parse_concepts(self.required_concepts))
        if not isinstance(self.required_concepts, tuple) or not all(
                isinstance(c, str) for c in self.required_concepts):
            raise SettingsError(f"required_concepts must be a tuple of text, got {self.required_concepts!r}")
        cap = self.max_threshold
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0.0 < cap <= 1.0:
            raise SettingsError(f"max_threshold must be a number in (0, 1], got {cap!r}")
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
        for label, listed in (("concepts", parse_concepts(self.concepts)), ("required_concepts",
                                                                            self.required_concepts)):
            if len(listed) > MAX_CONCEPT_LIST:
                raise SettingsError(f"setting {label!r}: {concept_cap_message(len(listed))}")

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
        """The user-facing fields (``FIELDS``): what ``from_dict`` accepts back."""
        return {spec.name: getattr(self, spec.name) for spec in FIELDS}

    def effective_dict(self) -> dict:
        """Everything that decides a run (for reports and the audit log), including the policy-set fields."""
        out = self.to_dict()
        out.update(required_concepts=list(self.required_concepts), threshold=self.threshold,
                   effective_intensity=self.effective_intensity)
        return out

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
        return min(PRESETS.get(self.preset, PRESETS["medium"])[1], float(self.max_threshold))

    @property
    def all_concepts(self) -> tuple[str, ...]:
        """The user's concepts and the required ones, once each (e.g. the pooled vector's concept span)."""
        return parse_concepts(self.concept_list + self.required_concepts)

    @property
    def projection_concept_lists(self) -> tuple[tuple[str, ...], ...]:
        """The concept lists the projection runs over, each with its own subspace and threshold.

        The user's list, then the policy's required list when it is not the same set; only the
        required list when the user's is empty (under a lock an empty list cannot switch it off).
        """
        user, required = self.concept_list, self.required_concepts
        if not required:
            return (user,)
        if not user or {c.lower() for c in user} == {c.lower() for c in required}:
            return (required,)
        return (user, required)

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
        base = base or cls()
        values = base.to_dict()
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
        return base.replace(**values)


def __getattr__(name: str):
    """``Policy`` lives in ``embedding_sanitizer.policy``; kept importable from here for older callers."""
    if name == "Policy":
        from .policy import Policy

        return Policy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
