"""The administrator policy: from the Settings page and from a policy file.

A deployment can lock the sanitizer in two ways:

* the Settings page (``Embedding Sanitizer`` section): lock, intensity floor, forced
  method, required concepts. These options are ``restrict_api`` (A1111 refuses them in
  ``/sdapi/v1/options`` and ``override_settings``; Forge's options API does not check it), and
  the extension honours only its sealed copy of them, changed from the Settings page alone
  (``lock_seal``);
* a JSON policy file named with ``--embedding-sanitizer-policy PATH`` (see
  ``preload.py``), for installations configured by file. It cannot be loosened from the
  UI: the effective policy is the stricter of the two.

Policy file format (every key optional)::

    {"locked": true, "min_intensity": 1.0, "forced_mode": "safree",
     "required_concepts": ["nudity", "gore"],
     "defaults": {"enabled": true, "preset": "high"}}

``defaults`` become the Settings-page defaults. A policy file that cannot be read refuses
every generation (``lifecycle`` arms the refusal on the hook; the lock fails closed, never open). The parser is the core's
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
    """``closed`` (also when the policy does not say) or ``open``."""
    return "closed" if policy.fail_closed else "open"


def resolve_args(policy: Policy, args, defaults) -> tuple:
    """Script args (UI values, positional API args, or one dict of names) -> ``(settings, notes)``.

    Without a lock, invalid arguments raise ``SettingsError`` (``schema.settings_from_args``). Under a
    lock nothing a user sends can raise or switch the sanitizer off: ``Policy.resolve`` replaces each
    bad field by the policy's default, ignores unknown names, and says so in the notes."""
    from . import schema

    if not policy.locked:
        return policy.enforce(schema.settings_from_args(args, defaults))
    args = list(args or ())
    # A dict of names comes first; the webui fills the script's other arguments with the UI's defaults,
    # which are ignored then, as without a lock (``schema.settings_from_args``).
    values = args[0] if args and isinstance(args[0], dict) else args
    settings, notes = policy.resolve(values, base=defaults)
    return settings, list(notes)


def stricter(a: Policy, b: Policy) -> Policy:
    """The policy that satisfies both ``a`` and ``b`` (the core's ``Policy.stricter``)."""
    return a.stricter(b)
