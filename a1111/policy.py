"""The administrator policy: from the Settings page and from a policy file.

A deployment can lock the sanitizer in two ways:

* the Settings page (``Embedding Sanitizer`` section): lock, intensity floor, forced
  method, required concepts. These options are ``restrict_api``, so neither
  ``/sdapi/v1/options`` nor a request's ``override_settings`` can change them;
* a JSON policy file named with ``--embedding-sanitizer-policy PATH`` (see
  ``preload.py``), for installations configured by file. It cannot be loosened from the
  UI: the effective policy is the stricter of the two.

Policy file format (every key optional)::

    {"locked": true, "min_intensity": 1.0, "forced_mode": "safree",
     "required_concepts": ["nudity", "gore"],
     "defaults": {"enabled": true, "preset": "high"}}

``defaults`` become the Settings-page defaults. A policy file that cannot be read is an
error at every generation (the lock fails closed, never open).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from embedding_sanitizer import MODES, Policy, Settings, SettingsError
from embedding_sanitizer.settings import FIELD_BY_NAME, parse_concepts

POLICY_KEYS = ("locked", "min_intensity", "forced_mode", "required_concepts", "defaults")


class PolicyFileError(ValueError):
    """The policy file is missing or malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class PolicyFile:
    policy: Policy = field(default_factory=Policy)
    defaults: dict = field(default_factory=dict)
    source: str = ""


def read_policy_file(path: str | Path | None) -> PolicyFile:
    """Parse and validate a policy file; ``None`` or ``""`` gives the empty policy."""
    if not path:
        return PolicyFile()
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyFileError(f"Embedding Sanitizer policy file {path.name!r} does not exist "
                              "(--embedding-sanitizer-policy)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PolicyFileError(f"Embedding Sanitizer policy file {path.name!r} cannot be read: {exc}") from None
    if not isinstance(raw, dict):
        raise PolicyFileError(f"policy file {path.name!r} must hold a JSON object")
    unknown = set(raw) - set(POLICY_KEYS)
    if unknown:
        raise PolicyFileError(f"policy file {path.name!r}: unknown key(s) {sorted(unknown)}; "
                              f"known: {list(POLICY_KEYS)}")
    try:
        policy = make_policy(bool(raw.get("locked", False)), raw.get("min_intensity", 0.0),
                             raw.get("forced_mode", ""), raw.get("required_concepts", ()))
        defaults = dict(raw.get("defaults") or {})
        Settings.from_dict(defaults)  # validate now, not at the first generation
    except (SettingsError, TypeError, ValueError) as exc:
        raise PolicyFileError(f"policy file {path.name!r}: {exc}") from None
    return PolicyFile(policy, defaults, str(path))


def make_policy(locked: bool, min_intensity, forced_mode: str | None, required_concepts) -> Policy:
    """A validated ``Policy`` from loosely typed values (Settings page or file)."""
    spec = FIELD_BY_NAME["intensity"]
    floor = float(min_intensity or 0.0)
    if not spec.minimum <= floor <= spec.maximum:
        raise SettingsError(f"policy min_intensity {floor} is outside [{spec.minimum}, {spec.maximum}]")
    forced = (forced_mode or "").strip()
    if forced and (forced not in MODES or forced == "off"):
        raise SettingsError(f"policy forced_mode {forced!r} must be one of {[m for m in MODES if m != 'off']}")
    return Policy(locked=bool(locked), min_intensity=floor, forced_mode=forced,
                  required_concepts=parse_concepts(required_concepts or ()))


def stricter(a: Policy, b: Policy) -> Policy:
    """The policy that satisfies both ``a`` and ``b`` (lock if either locks, highest floor, ...)."""
    if not (a.locked or b.locked):
        return Policy()
    active = [p for p in (a, b) if p.locked]
    forced = next((p.forced_mode for p in active if p.forced_mode), "")
    floor = max(p.min_intensity for p in active)
    concepts = parse_concepts([c for p in active for c in p.required_concepts])
    return Policy(locked=True, min_intensity=floor, forced_mode=forced, required_concepts=concepts)
