"""Administrator lock for ComfyUI: ``models/embedding_sanitizer/policy.json``.

If this file exists under ComfyUI's models folder (``folder_paths.models_dir``), the
'Embedding Sanitizer (CLIP)' and 'Sanitize Conditioning' nodes enforce it: a graph cannot
turn the sanitizer off, switch its mode off or lower the intensity below the floor, and the
required concepts are always removed. What was overridden is listed in each report's notes.
The format is the A1111 policy file's, parsed by the core (``Policy.parse_json``); every key
is optional::

    {"locked": true, "min_intensity": 1.0, "forced_mode": "safree",
     "required_concepts": ["nudity", "gore"]}

``defaults`` (A1111's Settings-page defaults) is validated; the nodes do not use it (node
inputs carry their own values), the server-wide lock does (below). A file that exists but
cannot be read or parsed stops every sanitizer node and every encode with an error (the lock
fails closed, never open). The file is re-read when it changes, and the nodes re-run when it
does (``IS_CHANGED``).

Scope: by default (``"scope": "graph"``) only graphs that use these nodes are covered. With
``"scope": "server"`` and ``"locked": true`` every text encode on the server is sanitized with the
policy's settings (its ``defaults``, then the lock), whether or not the graph has a node
(``server_lock.py``). ``"on_error": "open"`` makes an error in the sanitizer pass the conditioning
through with a warning; the default (closed) fails the prompt with the error.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

from embedding_sanitizer import Policy, Settings, SettingsError

from .weights import FOLDER_NAME

FILE_NAME = "policy.json"
LABEL = f"models/{FOLDER_NAME}/{FILE_NAME}"
_lock = threading.Lock()
_cache: dict[tuple, tuple] = {}
log = logging.getLogger("embedding_sanitizer.comfyui")


class PolicyRefusal(RuntimeError):
    """The admin policy is in force and the sanitizer cannot honour it: the prompt fails (fail closed)."""


def policy_path() -> Path | None:
    """Where the policy file is looked for; None outside ComfyUI."""
    try:
        import folder_paths
    except ImportError:
        return None
    return Path(folder_paths.models_dir) / FOLDER_NAME / FILE_NAME


def _stat_key(path: Path | None):
    if path is None or not os.path.lexists(path):
        return None
    try:
        stat = path.stat()
    except OSError as exc:  # a dangling link or no permission: fail closed later
        return (str(path), "unreadable", str(exc))
    return (str(path), stat.st_mtime_ns, stat.st_size)


def state_key() -> str:
    """Changes whenever the policy file appears, disappears or changes (for ``IS_CHANGED``)."""
    return repr(_stat_key(policy_path()))


def _load(path: Path, key) -> tuple[Policy, dict]:
    with _lock:
        hit = _cache.get(key)
    if hit is None:
        try:
            hit = Policy.parse_json(path.read_text(encoding="utf-8"), path.name, path.absolute().parent)
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"Embedding Sanitizer: the admin policy {LABEL} exists but cannot be read, so "
                                f"nothing is generated until it is fixed: {exc}") from None
        except SettingsError as exc:
            raise SettingsError(f"Embedding Sanitizer: the admin policy {LABEL} is in force but invalid, so "
                                f"nothing is generated until it is fixed: {exc}") from None
        with _lock:
            _cache.clear()
            _cache[key] = hit
    return hit


def current_policy() -> Policy:
    """The policy in force: the file's, or the empty (unlocked) policy when there is no file.

    A file that exists but cannot be read or parsed raises ``SettingsError`` (fail closed).
    """
    path = policy_path()
    key = _stat_key(path)
    if key is None:
        return Policy()
    return _load(path, key)[0]


def in_force(policy: Policy) -> bool:
    """A lock is in force: errors and pass-throughs fail closed unless the policy says ``on_error: open``."""
    return bool(policy.locked)


def fails_open(policy: Policy) -> bool:
    """The policy is locked and asks for ``on_error: open`` (warn and pass through)."""
    return in_force(policy) and not policy.fail_closed


def server_scope(policy: Policy) -> bool:
    """Every text encode on the server is sanitized (``"scope": "server"`` with ``"locked": true``)."""
    return in_force(policy) and policy.server_scope


def cache_marker() -> str | None:
    """A short digest of the policy file's state for ComfyUI's cache keys; None without a file."""
    key = _stat_key(policy_path())
    if key is None:
        return None
    return hashlib.sha256(repr(key).encode()).hexdigest()[:16]


def refuse_or_note(policy: Policy, reason: str, notes: list[str] | None = None) -> None:
    """Where the sanitizer would pass a conditioning through: refuse under a fail-closed lock, else note it."""
    if in_force(policy) and not fails_open(policy):
        raise PolicyRefusal(f"Embedding Sanitizer: the admin policy ({LABEL}) is in force and {reason}; nothing "
                            "is generated from unsanitized conditioning (set \"on_error\": \"open\" in the policy "
                            "to pass it through with a warning instead).")
    if in_force(policy):
        log.warning("Embedding Sanitizer: %s; passed through because the admin policy says on_error: open", reason)
    if notes is not None:
        notes.append(f"passed through unchanged: {reason}")


def enforce(settings: Settings) -> tuple[Settings, list[str]]:
    """Settings that satisfy the policy, and notes for the report naming what was overridden."""
    enforced, notes = current_policy().enforce(settings)
    return enforced, [f"admin policy ({LABEL}): {note}" for note in notes]
