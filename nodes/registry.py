"""What the sanitizer did to each conditioning tensor it produced, and pushes to the browser.

Entries are keyed by the identity of the cond tensor that the patched CLIP
returned (ComfyUI passes that very object on in the CONDITIONING), and vanish
when the tensor is garbage-collected.
"""
from __future__ import annotations

import logging
import threading
import weakref

log = logging.getLogger("embedding_sanitizer.comfyui")
EVENT = "embedding_sanitizer.heatmap"
_lock = threading.Lock()
_entries: dict[int, tuple] = {}


def remember(tensor, entry) -> None:
    key = id(tensor)
    ref = weakref.ref(tensor)
    with _lock:
        _entries[key] = (ref, entry)
    weakref.finalize(tensor, _forget, key, ref)


def _forget(key, ref) -> None:
    with _lock:
        held = _entries.get(key)
        if held is not None and held[0] is ref:
            del _entries[key]


def lookup(tensor):
    with _lock:
        held = _entries.get(id(tensor))
    if held is None or held[0]() is not tensor:
        return None
    return held[1]


def push(payload: dict) -> None:
    """Send a heatmap event to the browser when running inside the ComfyUI server."""
    try:
        from server import PromptServer

        instance = PromptServer.instance
    except Exception:  # noqa: BLE001 - not inside the ComfyUI server (tests, scripts)
        return
    try:
        instance.send_sync(EVENT, payload)
    except Exception as exc:  # noqa: BLE001 - the UI push must never break an encode
        log.debug("Embedding Sanitizer: could not push the heatmap: %s", exc)
