"""The administrator policy: one engine for the A1111 and ComfyUI glue and the ``scan`` command.

A policy comes from a JSON policy file (``Policy.from_file``) or from loosely typed values
such as an A1111 Settings page (``Policy.make``); two policies combine with ``stricter``.
Every key is optional::

    {"locked": true,                  # nothing a user sends can weaken the settings below
     "min_intensity": 1.0,            # floor on the effective intensity
     "forced_mode": "safree",         # es | safree | es+safree ("" = the user's, never off)
     "required_concepts": ["nudity"], # scored and projected as their own list (default: DEFAULT_CONCEPTS)
     "max_threshold": 0.5,            # cap on the detection threshold (a preset may not loosen it)
     "detector": "fast",              # force the projection detector ("" = the user's)
     "allow_svf": false,              # allow the early-steps-only schedule under the lock
     "on_error": "closed",            # closed: refuse the generation on any failure; open: warn, pass through
     "scope": "graph",                # ComfyUI: graph (nodes in the graph) | server (every text encode)
     "audit": {"path": "audit.jsonl", "store_prompt": "hash", "max_bytes": 10485760, "backups": 3},
     "defaults": {"preset": "high"}}  # settings used where the user gives none, or an invalid value

A relative ``audit.path`` is relative to the policy file's folder. ``Policy.enforce`` applies
the lock to validated settings; ``Policy.resolve`` starts from raw user values and, under a
lock, never raises for bad user input (the field falls back to the policy's default, with a
note). Every override comes back as a note for the infotext or the report.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import (
    DEFAULT_CONCEPTS, DETECTORS, FIELD_BY_NAME, FIELDS, MODES, PRESETS, Settings, SettingsError, parse_concepts,
)

ON_ERROR = ("closed", "open")
SCOPES = ("graph", "server")
STORE_PROMPT = ("none", "hash", "text")
#: The lock's default cap on the detection threshold: the calibrated operating point (preset custom/medium).
DEFAULT_MAX_THRESHOLD = PRESETS["medium"][1]
AUDIT_MAX_BYTES = 10 * 1024 * 1024
AUDIT_BACKUPS = 3
AUDIT_KEYS = ("path", "store_prompt", "max_bytes", "backups")
LOCK_MODES = tuple(m for m in MODES if m != "off")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class AuditConfig:
    """Where and how the audit log is written (the policy file's ``audit`` object)."""

    path: str
    store_prompt: str = "hash"
    max_bytes: int = AUDIT_MAX_BYTES
    backups: int = AUDIT_BACKUPS

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.strip():
            raise SettingsError(f"audit 'path' must be a non-empty file path, got {self.path!r}")
        if self.store_prompt not in STORE_PROMPT:
            raise SettingsError(f"audit 'store_prompt' = {self.store_prompt!r} is not one of {list(STORE_PROMPT)}")
        if not _is_int(self.max_bytes) or self.max_bytes < 1024:
            raise SettingsError(f"audit 'max_bytes' must be a whole number of bytes >= 1024, got {self.max_bytes!r}")
        if not _is_int(self.backups) or not 0 <= self.backups <= 100:
            raise SettingsError(f"audit 'backups' must be a whole number in [0, 100], got {self.backups!r}")

    @classmethod
    def parse(cls, raw: Any, base_dir: str | os.PathLike | None = None) -> "AuditConfig":
        """From the policy file's ``audit`` value; a relative path is taken relative to ``base_dir``."""
        if isinstance(raw, str):
            raw = {"path": raw}
        if not isinstance(raw, Mapping):
            raise SettingsError(f"'audit' must be an object such as {{\"path\": \"audit.jsonl\"}}, got {raw!r}")
        unknown = set(raw) - set(AUDIT_KEYS)
        if unknown:
            raise SettingsError(f"'audit': unknown key(s) {sorted(unknown)}; known: {list(AUDIT_KEYS)}")
        if "path" not in raw:
            raise SettingsError("'audit' needs a 'path' (the JSONL file to write)")
        path = raw["path"]
        if isinstance(path, str) and path.strip():
            path = os.path.expanduser(path.strip())
            if base_dir is not None and not os.path.isabs(path):
                path = os.path.join(os.fspath(base_dir), path)
        return cls(path=path, store_prompt=raw.get("store_prompt", "hash"),
                   max_bytes=raw.get("max_bytes", AUDIT_MAX_BYTES), backups=raw.get("backups", AUDIT_BACKUPS))


@dataclass(frozen=True)
class Policy:
    """Administrator policy for shared installations (see the module docstring for the keys).

    When ``locked``, nothing the UI or API sends can disable the sanitizer, switch its mode
    off, lower the intensity below ``min_intensity``, loosen the detection threshold above
    ``max_threshold``, use the svf schedule (unless ``allow_svf``), keep the EOS/padding rows,
    change a forced detector, or dilute the ``required_concepts`` (projected as their own list).
    A locked policy always has required concepts: the default concept list when none are given.
    """

    locked: bool = False
    min_intensity: float = 1.0
    forced_mode: str = ""
    required_concepts: tuple[str, ...] = field(default_factory=tuple)
    max_threshold: float = DEFAULT_MAX_THRESHOLD
    detector: str = ""
    allow_svf: bool = False
    on_error: str = ""  # "" = not set: fails closed, and loses to an explicit value in ``stricter``
    scope: str = "graph"
    audit: AuditConfig | None = None
    defaults: tuple[tuple[str, Any], ...] = ()  # validated (name, value) pairs of the file's ``defaults``
    KEYS = ("locked", "min_intensity", "forced_mode", "required_concepts", "defaults",
            "max_threshold", "detector", "allow_svf", "on_error", "scope", "audit")  # policy-file keys

    def __post_init__(self) -> None:
        spec = FIELD_BY_NAME["intensity"]
        floor = self.min_intensity
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not spec.minimum <= floor <= spec.maximum:
            raise SettingsError(f"policy min_intensity must be a number in [{spec.minimum}, {spec.maximum}], "
                                f"got {floor!r}")
        object.__setattr__(self, "min_intensity", float(floor))
        if self.forced_mode not in ("",) + LOCK_MODES:
            raise SettingsError(f"policy forced_mode {self.forced_mode!r} must be one of {list(LOCK_MODES)}")
        required = parse_concepts(self.required_concepts or ())
        if self.locked and not required:
            required = DEFAULT_CONCEPTS
        object.__setattr__(self, "required_concepts", tuple(required))
        cap = self.max_threshold
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0.0 < cap < 1.0:
            raise SettingsError(f"policy max_threshold must be a number in (0, 1), got {cap!r}")
        object.__setattr__(self, "max_threshold", float(cap))
        if self.detector not in ("",) + DETECTORS:
            raise SettingsError(f"policy detector {self.detector!r} must be one of {list(DETECTORS)}")
        if not isinstance(self.allow_svf, bool):
            raise SettingsError(f"policy allow_svf must be true or false, got {self.allow_svf!r}")
        if self.on_error not in ("",) + ON_ERROR:
            raise SettingsError(f"policy on_error {self.on_error!r} must be one of {list(ON_ERROR)}")
        if self.scope not in SCOPES:
            raise SettingsError(f"policy scope {self.scope!r} must be one of {list(SCOPES)}")
        if self.audit is not None and not isinstance(self.audit, AuditConfig):
            raise SettingsError(f"policy audit must be an AuditConfig, got {type(self.audit).__name__}")
        defaults = dict(self.defaults.items() if isinstance(self.defaults, Mapping) else self.defaults)
        normalised = Settings.from_dict(defaults).to_dict()  # validates; concepts lists become text
        object.__setattr__(self, "defaults", tuple((k, normalised[k]) for k in sorted(defaults)))

    # -- what the hosts ask -----------------------------------------------------------------
    @property
    def fail_closed(self) -> bool:
        """True unless ``on_error`` is ``"open"``: on any failure, refuse the generation with a clear error."""
        return self.on_error != "open"

    @property
    def server_scope(self) -> bool:
        """ComfyUI: sanitize every text encode on the server, not only graphs with the node."""
        return self.scope == "server"

    @property
    def default_settings(self) -> Settings:
        """The policy's ``defaults`` over the schema's defaults."""
        return Settings.from_dict(dict(self.defaults))

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def make(cls, locked: bool, min_intensity, forced_mode: str | None, required_concepts, *,
             max_threshold=None, detector: str | None = "", allow_svf: bool = False, on_error: str | None = "",
             scope: str | None = "graph", audit=None, defaults=None, base_dir=None) -> "Policy":
        """A validated policy from loosely typed values (a settings page or a policy file).

        ``required_concepts`` may be text or a list; none under a lock means the default list.
        ``audit`` is an ``AuditConfig``, the file's ``audit`` object, or None.
        """
        try:
            floor = float(min_intensity or 0.0)
        except (TypeError, ValueError):
            raise SettingsError(f"policy min_intensity must be a number, got {min_intensity!r}") from None
        if math.isnan(floor):
            raise SettingsError("policy min_intensity must be a number, got NaN")
        if not isinstance(required_concepts, (str, list, tuple, type(None))):
            raise SettingsError(f"policy required_concepts must be a list of concepts, got {required_concepts!r}")
        cap = DEFAULT_MAX_THRESHOLD if max_threshold is None else max_threshold
        if isinstance(cap, str):
            try:
                cap = float(cap)
            except ValueError:
                raise SettingsError(f"policy max_threshold must be a number, got {max_threshold!r}") from None
        if audit is not None and not isinstance(audit, AuditConfig):
            audit = AuditConfig.parse(audit, base_dir)
        if defaults is not None and not isinstance(defaults, Mapping):
            raise SettingsError(f"policy defaults must be an object of settings, got {defaults!r}")
        for name, value in (("forced_mode", forced_mode), ("detector", detector), ("on_error", on_error),
                            ("scope", scope)):
            if value is not None and not isinstance(value, str):
                raise SettingsError(f"policy {name} must be text, got {value!r}")
        return cls(locked=bool(locked), min_intensity=floor, forced_mode=(forced_mode or "").strip(),
                   required_concepts=parse_concepts(required_concepts or ()), max_threshold=cap,
                   detector=(detector or "").strip(), allow_svf=allow_svf, on_error=(on_error or "").strip(),
                   scope=(scope or "graph").strip(), audit=audit, defaults=tuple((defaults or {}).items()))

    @classmethod
    def parse_json(cls, text: str, source: str = "policy",
                   base_dir: str | os.PathLike | None = None) -> tuple["Policy", dict]:
        """(policy, validated ``defaults``) from a policy file's text; ``SettingsError`` names ``source``.

        ``base_dir`` is the folder relative audit paths are resolved against (the file's folder).
        """
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise SettingsError(f"Embedding Sanitizer policy file {source!r} cannot be read: {exc}") from None
        if not isinstance(raw, dict):
            raise SettingsError(f"policy file {source!r} must hold a JSON object")
        unknown = set(raw) - set(cls.KEYS)
        if unknown:
            raise SettingsError(f"policy file {source!r}: unknown key(s) {sorted(unknown)}; "
                                f"known: {list(cls.KEYS)}")
        try:
            for key in ("locked", "allow_svf"):
                if key in raw and not isinstance(raw[key], bool):
                    raise SettingsError(f"{key!r} must be true or false, got {raw[key]!r}")
            if "max_threshold" in raw and (isinstance(raw["max_threshold"], (bool, str))):
                raise SettingsError(f"'max_threshold' must be a number, got {raw['max_threshold']!r}")
            policy = cls.make(raw.get("locked", False), raw.get("min_intensity", 0.0), raw.get("forced_mode", ""),
                              raw.get("required_concepts", ()), max_threshold=raw.get("max_threshold"),
                              detector=raw.get("detector", ""), allow_svf=raw.get("allow_svf", False),
                              on_error=raw.get("on_error", ""), scope=raw.get("scope", "graph"),
                              audit=raw.get("audit"), defaults=raw.get("defaults") or {}, base_dir=base_dir)
        except (SettingsError, TypeError, ValueError) as exc:
            raise SettingsError(f"policy file {source!r}: {exc}") from None
        return policy, dict(policy.defaults)

    @classmethod
    def from_json(cls, text: str, source: str = "policy", base_dir: str | os.PathLike | None = None) -> "Policy":
        return cls.parse_json(text, source, base_dir)[0]

    @classmethod
    def from_file(cls, path) -> "Policy":
        """The policy in a JSON policy file; an unreadable or malformed file raises ``SettingsError``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"Embedding Sanitizer policy file {path.name!r} cannot be read: {exc}") from None
        return cls.from_json(text, path.name, path.absolute().parent)

    def stricter(self, other: "Policy") -> "Policy":
        """The policy that satisfies both: lock if either locks, highest floor, lowest threshold cap,
        union of required concepts, first forced mode and detector, svf only if every lock allows it;
        closed wins over open, server over graph, and the first audit configuration and defaults."""
        both = (self, other)
        active = [p for p in both if p.locked]
        errors = {p.on_error for p in both}
        on_error = "closed" if "closed" in errors else ("open" if "open" in errors else "")
        common = dict(on_error=on_error, scope="server" if any(p.server_scope for p in both) else "graph",
                      audit=self.audit or other.audit, defaults=self.defaults or other.defaults)
        if not active:
            return Policy(**common)
        return Policy(
            locked=True, min_intensity=max(p.min_intensity for p in active),
            forced_mode=next((p.forced_mode for p in active if p.forced_mode), ""),
            required_concepts=parse_concepts([c for p in active for c in p.required_concepts]),
            max_threshold=min(p.max_threshold for p in active),
            detector=next((p.detector for p in active if p.detector), ""),
            allow_svf=all(p.allow_svf for p in active), **common)

    # -- the lock ----------------------------------------------------------------------------
    def enforce(self, settings: Settings) -> tuple[Settings, list[str]]:
        """Settings that satisfy the policy, and a note for every override (empty when unlocked)."""
        if not self.locked:
            return settings, []
        changes: dict[str, Any] = {}
        notes: list[str] = []
        if not settings.enabled:
            changes["enabled"] = True
            notes.append("enabled forced on by policy")
        mode = self.forced_mode or (settings.mode if settings.mode != "off" else "safree")
        if mode == "es" and not self.forced_mode:
            mode = "es+safree"  # 'es' alone has no concept projection: the required concepts would not apply
        if mode != settings.mode:
            changes["mode"] = mode
            why = " (the required concepts need the projection)" if settings.mode == "es" else ""
            notes.append(f"mode forced to {mode!r} by policy{why}")
        current = settings.replace(**changes)
        chosen_threshold = current.threshold  # the user's preset's; raising the floor must not loosen it
        if current.effective_intensity < self.min_intensity:
            changes["preset"] = "custom"
            changes["intensity"] = float(self.min_intensity)
            notes.append(f"intensity raised to the policy floor {self.min_intensity}")
        if chosen_threshold > self.max_threshold:
            notes.append(f"detection threshold capped at {self.max_threshold} by policy (preset "
                         f"{current.preset!r} would use {chosen_threshold})")
        changes["max_threshold"] = min(chosen_threshold, self.max_threshold)
        if settings.schedule == "svf" and not self.allow_svf:
            changes["schedule"] = "off"
            notes.append("schedule 'svf' (original conditioning for the later steps) turned off by policy; "
                         "every step is sanitized")
        if settings.eos_policy != "project":
            changes["eos_policy"] = "project"
            notes.append(f"eos_policy {settings.eos_policy!r} forced to 'project' by policy "
                         "(the EOS and padding rows carry the concept)")
        if self.detector and settings.detector != self.detector:
            changes["detector"] = self.detector
            notes.append(f"detector forced to {self.detector!r} by policy")
        required = parse_concepts(list(settings.required_concepts) + list(self.required_concepts))
        changes["required_concepts"] = required
        have = {c.lower() for c in settings.concept_list}
        missing = [c for c in required if c.lower() not in have]
        if missing:
            shown = missing if len(missing) <= 6 else missing[:6] + [f"... {len(missing) - 6} more"]
            notes.append(f"concepts required by policy are removed as their own list: {shown}")
        if mode == "es" and required:
            notes.append("forced mode 'es' has no concept projection: the required concepts are covered only "
                         "as far as the learned weights cover them")
        return settings.replace(**changes), notes

    def resolve(self, values: Mapping | Sequence | None, base: Settings | None = None
                ) -> tuple[Settings, list[str]]:
        """Raw user values -> (settings after the policy, notes).

        ``values`` maps field names to raw values (a host's inputs or an API payload; ints for
        floats, numeric text and "true"/"false" are accepted), or is a sequence in ``FIELDS`` order;
        missing or ``None`` values keep ``base`` (default: the policy's ``defaults``).
        Unlocked: bad input raises ``SettingsError``, as ``Settings.from_dict`` does.
        Locked: never raises for bad input; each bad field falls back to the policy's default,
        with a note saying what was rejected and why, and then the lock is enforced.
        """
        if base is not None and not isinstance(base, Settings):
            raise TypeError(f"base must be Settings or None, got {type(base).__name__}")
        base = base if base is not None else self.default_settings
        if not self.locked:
            return self.enforce(_strict_settings(values, base))
        notes: list[str] = []
        given = _named_values(values, notes)
        fallback = self.default_settings
        unknown = [k for k in given if k not in FIELD_BY_NAME]
        if unknown:
            notes.append(f"unknown setting(s) {_short(sorted(map(str, unknown)))} ignored (policy lock)")
        merged: dict[str, Any] = {}
        for spec in FIELDS:
            if spec.name not in given or given[spec.name] is None:
                continue
            try:
                merged[spec.name] = _valid_field(spec.name, given[spec.name])
            except SettingsError as exc:
                default = getattr(fallback, spec.name)
                merged[spec.name] = default
                notes.append(f"{exc}; the policy default {_short(default)} was used instead")
        enforced, more = self.enforce(base.replace(**merged))
        return enforced, notes + more


# -- resolve helpers ----------------------------------------------------------------------------
def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _coerce(name: str, value):
    """What UIs and JSON clients send: ints for floats, numbers as text, "true"/"false", concept lists."""
    spec = FIELD_BY_NAME[name]
    if spec.kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise SettingsError(f"setting {name!r} must be a number, got {_short(value)}") from None
    if spec.kind is float and _is_int(value):
        return float(value)
    if spec.kind is bool and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if name == "concepts" and isinstance(value, (list, tuple)):
        if not all(isinstance(c, str) for c in value):
            raise SettingsError(f"setting 'concepts' must be text or a list of text, got {_short(value)}")
        return ", ".join(parse_concepts(value))
    return value


def _valid_field(name: str, value):
    """The coerced value of one field, or ``SettingsError`` naming it."""
    coerced = _coerce(name, value)
    Settings().replace(**{name: coerced})  # validates this field (every other one is a default)
    return coerced


def _named_values(values, notes: list[str]) -> dict:
    if values is None:
        return {}
    if isinstance(values, Mapping):
        return dict(values)
    if isinstance(values, Sequence) and not isinstance(values, (str, bytes)):
        names = [spec.name for spec in FIELDS]
        if len(values) > len(names):
            notes.append(f"{len(values) - len(names)} extra positional setting(s) ignored (policy lock)")
        return dict(zip(names, values))
    notes.append(f"settings {_short(values)} are not named values; the policy defaults were used (policy lock)")
    return {}


def _strict_settings(values, base: Settings) -> Settings:
    if values is None:
        return base
    if isinstance(values, Mapping):
        given = dict(values)
    elif isinstance(values, Sequence) and not isinstance(values, (str, bytes)):
        names = [spec.name for spec in FIELDS]
        if len(values) > len(names):
            raise SettingsError(f"at most {len(names)} settings ({', '.join(names)}), got {len(values)}")
        given = dict(zip(names, values))
    else:
        raise SettingsError(f"settings must be named values, got {_short(values)}")
    unknown = set(given) - set(FIELD_BY_NAME)
    if unknown:
        raise SettingsError(f"unknown setting(s): {sorted(map(str, unknown))}; known: {sorted(FIELD_BY_NAME)}")
    clean = {k: _coerce(k, v) for k, v in given.items() if v is not None}
    return base.replace(**clean)
