"""Live preview of a sanitizer node's heatmap: re-score prompt texts with the node's current settings.

Each sanitizer node remembers the CLIP it was last run with (``remember_clip``). The widget then sends
``{"node": id, "texts": [...], "settings": {...}}`` whenever the slider, another setting or the prompt
text changes; ``preview`` encodes each text with that CLIP (record only, nothing is queued or cached
for the graph) and applies the node's settings (after the admin policy) with the core sanitizer, so the
heatmap shows the scores and the edit at the current intensity. Nothing here touches the graph: no
audit line, no push, no calibration job (``auto-calibrate`` previews as ``auto``).

The preview never runs beside a prompt: while the queue runs one, the answer is ``{"busy": true}``
and the widget asks again later; while a preview runs, the queue does not start the next prompt.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from contextlib import contextmanager

import torch

from embedding_sanitizer import SettingsError
from embedding_sanitizer.sanitize import SanitizerInputError
from embedding_sanitizer.weights_io import WeightsMismatch

from .proxy import Patch
from .report import widget_payload
from .schema import node_settings
from .weights import AUTO, AUTO_CALIBRATE

log = logging.getLogger("embedding_sanitizer.comfyui")

MAX_TEXTS = 8
MAX_TEXT_CHARS = 20000
MAX_NODES = 32
NEEDS_RUN = ("Queue the graph once so this node knows its CLIP; after that, the slider and the prompt "
             "re-score here without queueing.")
_lock = threading.Lock()
_run_lock = threading.Lock()
_clips: OrderedDict = OrderedDict()


def remember_clip(node_id, clip) -> None:
    """The CLIP a sanitizer node was last run with (the input CLIP, never the patched clone)."""
    if node_id is None or clip is None:
        return
    with _lock:
        _clips[str(node_id)] = clip
        _clips.move_to_end(str(node_id))
        while len(_clips) > MAX_NODES:
            _clips.popitem(last=False)


def _clip_for(node_id: str):
    with _lock:
        return _clips.get(node_id)


def _queue():
    try:
        from server import PromptServer

        return PromptServer.instance.prompt_queue
    except Exception:  # noqa: BLE001 - not inside the ComfyUI server (tests call preview directly)
        return None


@contextmanager
def _queue_idle():
    """Yields False while the prompt queue runs a prompt; else holds the queue (no prompt starts) and yields True."""
    queue = _queue()
    mutex = getattr(queue, "mutex", None)
    if mutex is None:
        with _run_lock:
            yield True
        return
    with mutex:
        if queue.currently_running:
            yield False
            return
        with _run_lock:
            yield True


def _scoring_settings(settings):
    """Scores are shown even with the sanitizer off; nothing is edited then."""
    if settings.enabled and settings.mode != "off":
        return settings
    return settings.replace(enabled=True, mode="safree", preset="custom", intensity=0.0)


def _slider_note(given: dict, settings) -> list[str]:
    preset = given.get("preset")
    if preset and preset != "custom" and settings.enabled and settings.mode != "off":
        return [f"preset '{preset}' sets the intensity ({settings.effective_intensity:g}); the intensity slider "
                "applies with preset 'custom'"]
    return []


def preview(payload) -> tuple[int, dict]:
    """``(http_status, body)``: the widget's payload (``report.widget_payload``) for the given texts."""
    from .conditioning_node import _prepare, _record_for_text

    if not isinstance(payload, dict):
        return 422, {"error": "the request body must be a JSON object"}
    node = payload.get("node")
    texts = payload.get("texts")
    given = payload.get("settings") or {}
    if not isinstance(node, (str, int)) or isinstance(node, bool):
        return 422, {"error": "'node' must be the sanitizer node's id"}
    if not isinstance(texts, list) or len(texts) > MAX_TEXTS or \
            not all(isinstance(t, str) and len(t) <= MAX_TEXT_CHARS for t in texts):
        return 422, {"error": f"'texts' must be a list of at most {MAX_TEXTS} prompts of at most "
                              f"{MAX_TEXT_CHARS} characters"}
    if not isinstance(given, dict):
        return 422, {"error": "'settings' must be an object of setting names to values"}
    node = str(node)
    try:
        settings, choice, notes, in_force = node_settings(dict(given), "Embedding Sanitizer preview")
    except SettingsError as exc:
        return 422, {"error": str(exc)}
    if settings is None:  # a locked policy with on_error: open and invalid settings
        return 200, {**widget_payload(node, []), "preview": True, "notes": notes}
    notes = notes + _slider_note(given, settings)
    texts = [t for t in texts if t.strip()]
    if not texts:
        return 200, {**widget_payload(node, []), "preview": True, "notes": notes}
    clip = _clip_for(node)
    if clip is None:
        return 200, {"needs_run": True, "message": NEEDS_RUN, "node": node}  # not an error: the page shows it
    patch = Patch(_scoring_settings(settings), AUTO if choice == AUTO_CALIBRATE else choice, node, notes,
                  policy=in_force)
    with _queue_idle() as idle:
        if not idle:
            return 200, {"busy": True, "node": node}
        try:
            entries = []
            with torch.inference_mode():  # as ComfyUI runs nodes: the concept spans are shared with the runs
                for text in texts:
                    record = _record_for_text(clip, text)
                    _prepare(clip)
                    entries.append(patch.apply(record)[1])
        except (SanitizerInputError, WeightsMismatch, SettingsError, ValueError) as exc:
            return 422, {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - reported to the widget, logged here
            log.warning("Embedding Sanitizer: live preview failed: %s: %s", type(exc).__name__, exc)
            return 500, {"error": f"{type(exc).__name__}: {exc}"}
    body = widget_payload(node, entries)
    body["preview"] = True
    return 200, body
