"""Administrator lock for ComfyUI: ``models/embedding_sanitizer/policy.json``.

If this file exists under ComfyUI's models folder (``folder_paths.models_dir``), the
'Embedding Sanitizer (CLIP)' and 'Sanitize Conditioning' nodes enforce it: a graph cannot
turn the sanitizer off, switch its mode off or lower the intensity below the floor, and the
required concepts are always removed. What was overridden is listed in each report's notes.
The format is the A1111 policy file's, parsed by the core (``Policy.parse_json``); every key
is optional::

    {"locked": true, "min_intensity": 1.0, "forced_mode": "safree",
     "required_concepts": ["nudity", "gore"]}

``defaults`` (A1111's Settings-page defaults) is accepted and validated but not used here:
node inputs carry their own values. A file that exists but cannot be read or parsed stops
every sanitizer node with an error (the lock fails closed, never open). The file is re-read
when it changes, and the nodes re-run when it does (``IS_CHANGED``).

Only graphs that use these nodes are covered: a CLIP wired straight to an encode node is
not sanitized. Lock the workflows themselves (or the server) where that matters.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from embedding_sanitizer import Policy, Settings, SettingsError

from .weights import FOLDER_NAME

FILE_NAME = "policy.json"
LABEL = f"models/{FOLDER_NAME}/{FILE_NAME}"
_lock = threading.Lock()
_cache: dict[tuple, Policy] = {}


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


def current_policy() -> Policy:
    """The policy in force: the file's, or the empty (unlocked) policy when there is no file."""
    path = policy_path()
    key = _stat_key(path)
    if key is None:
        return Policy()
    with _lock:
        hit = _cache.get(key)
    if hit is None:
        try:
            hit = Policy.from_file(path)
        except SettingsError as exc:
            raise SettingsError(f"Embedding Sanitizer: the admin policy {LABEL} is in force but invalid, so "
                                f"nothing is generated until it is fixed: {exc}") from None
        with _lock:
            _cache.clear()
            _cache[key] = hit
    return hit


def enforce(settings: Settings) -> tuple[Settings, list[str]]:
    """Settings that satisfy the policy, and notes for the report naming what was overridden."""
    enforced, notes = current_policy().enforce(settings)
    return enforced, [f"admin policy ({LABEL}): {note}" for note in notes]
