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
error at every generation (the lock fails closed, never open). The parser is the core's
``Policy.parse_json``, shared with the ComfyUI nodes' ``models/embedding_sanitizer/policy.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from embedding_sanitizer import Policy, SettingsError

POLICY_KEYS = Policy.KEYS


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
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyFileError(f"Embedding Sanitizer policy file {path.name!r} does not exist "
                              "(--embedding-sanitizer-policy)") from None
    except OSError as exc:
        raise PolicyFileError(f"Embedding Sanitizer policy file {path.name!r} cannot be read: {exc}") from None
    try:
        policy, defaults = Policy.parse_json(text, path.name, path.absolute().parent)
    except SettingsError as exc:
        raise PolicyFileError(str(exc)) from None
    return PolicyFile(policy, defaults, str(path))


def make_policy(locked: bool, min_intensity, forced_mode: str | None, required_concepts) -> Policy:
    """A validated ``Policy`` from loosely typed values (Settings page or file)."""
    return Policy.make(locked, min_intensity, forced_mode, required_concepts)


def on_error_of(policy: Policy) -> str:
    """``closed`` or ``open`` (the policy file's ``on_error``; ``closed`` where the core has no such key yet)."""
    value = getattr(policy, "on_error", "closed") or "closed"
    return value if value in ("closed", "open") else "closed"


def resolve_args(policy: Policy, args, defaults, fallback) -> tuple:
    """Script args -> ``(settings, notes)`` under ``policy``.

    Invalid arguments raise ``SettingsError`` without a lock. Under a lock they are replaced by
    ``fallback()`` (the policy's defaults) with a note, and the result is enforced: never off."""
    from . import schema

    try:
        settings = schema.settings_from_args(args, defaults)
        notes: list[str] = []
    except SettingsError as exc:
        if not policy.locked:
            raise
        settings = fallback()
        notes = [f"invalid Embedding Sanitizer arguments ignored under the lock ({exc}); the policy's defaults apply"]
    settings, more = policy.enforce(settings)
    return settings, notes + list(more)


def stricter(a: Policy, b: Policy) -> Policy:
    """The policy that satisfies both ``a`` and ``b`` (the core's ``Policy.stricter``)."""
    return a.stricter(b)
