"""HTTP routes for the live heatmap, registered on app start (``on_app_started``).

* ``POST /embedding-sanitizer/v1/score`` with ``{"prompt": "...", "settings": {...}}``
  (settings as in the API arguments, by name; missing ones take the Settings-page
  defaults; the administrator policy applies) scores the prompt with the loaded
  checkpoint's own text encoder(s) (the rows its forward returns, emphasis included, as a
  generation sanitizes them) and returns the words with their score, their edit
  weight at the given intensity, and ready-made HTML.
* ``GET /embedding-sanitizer/v1/last?tab=txt2img`` returns the heatmap of the prompts
  actually used by the last generation on that tab (``id`` increases per generation).

Scoring never waits for a generation: while one holds the webui's queue lock, the
answer is ``{"busy": true}`` and the page asks again later.
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager

from embedding_sanitizer import SettingsError

from . import auto_calibration, schema, webui
from .encoder import adapter_for
from .runtime import host_forward, merge_words, word_view, words_html

log = logging.getLogger("embedding_sanitizer.a1111")

ROUTE_SCORE = "/embedding-sanitizer/v1/score"
ROUTE_LAST = "/embedding-sanitizer/v1/last"
MAX_PROMPT_CHARS = 20000
ROUTE_WAIT_S = 10.0  # how long the live heatmap waits for a background calibration's turn
_fallback_lock = threading.Lock()


@contextmanager
def _try_queue_lock():
    try:
        from modules.call_queue import queue_lock
    except ImportError:
        queue_lock = _fallback_lock
    acquired = queue_lock.acquire(blocking=False)
    if not acquired and auto_calibration.turn_in_progress():  # a background calibration's short turn, not a generation
        acquired = queue_lock.acquire(timeout=ROUTE_WAIT_S)
    try:
        yield acquired
    finally:
        if acquired:
            queue_lock.release()


def score_prompt(payload: dict) -> tuple[int, dict]:
    """Score one prompt; returns ``(http_status, body)``."""
    if not isinstance(payload, dict):
        return 422, {"error": "the request body must be a JSON object"}
    prompt = payload.get("prompt", "")
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
        return 422, {"error": f"'prompt' must be text of at most {MAX_PROMPT_CHARS} characters"}
    given = payload.get("settings") or {}
    if not isinstance(given, dict):
        return 422, {"error": "'settings' must be an object of setting names to values"}
    try:
        settings, notes = webui.resolve([{k: v for k, v in given.items() if k in schema.ARG_NAMES}])
    except (SettingsError, ValueError) as exc:
        return 422, {"error": str(exc)}
    active = settings.enabled and settings.mode != "off"
    body = {"prompt": prompt, "active": active, "settings": settings.to_dict(), "policy_notes": notes,
            "words": [], "html": ""}
    if not prompt.strip():
        return 200, body
    # Scores are shown even when the sanitizer is off; nothing would be edited then.
    scoring = settings if active else settings.replace(enabled=True, mode="safree", preset="custom", intensity=0.0)
    shared = webui._shared()
    hosts = webui.text_models(getattr(shared, "sd_model", None))
    if not hosts:
        why = ("no checkpoint is loaded yet (Forge loads it at the first generation)"
               if getattr(shared, "sd_model", None) is None else "the loaded checkpoint has no supported text encoder")
        return 200, {**body, "error": why}
    with _try_queue_lock() as acquired:
        if not acquired:
            return 200, {**body, "busy": True}
        try:
            views, names, whole = [], [], []
            for host in hosts:
                adapter = adapter_for(host, webui.layer_tag)
                with webui.HOOK.bypass():  # the host's own rows, emphasis included, as a generation sees them
                    batch, result = webui.RUNTIME.score_texts(adapter, [prompt], scoring,
                                                              lambda texts, host=host: host_forward(host, texts))
                views.append(word_view(batch.pieces[0], result.scores[0], result.weights[0], result.flagged[0]))
                names.append(adapter.name)
                if result.prompt_scores is not None:
                    whole.append(float(result.prompt_scores[0]))
        except Exception as exc:  # noqa: BLE001 - reported to the page, logged here
            log.warning("Embedding Sanitizer: live heatmap failed: %s", exc)
            return 200, {**body, "error": str(exc)}
    words = merge_words(views)
    public = [{k: v for k, v in w.items() if k != "positions"} for w in words]
    return 200, {**body, "words": public, "html": words_html(words), "encoders": names,
                 "prompt_score": round(max(whole), 4) if whole else None}


def last_report(tab: str) -> dict:
    if tab not in ("txt2img", "img2img"):
        return {"error": "tab must be txt2img or img2img"}
    return webui.LAST_REPORTS.get(tab) or {"id": 0, "tab": tab, "prompts": []}


def register(app) -> None:
    """Add the routes to the webui's FastAPI app (``on_app_started(demo, app)``)."""
    from fastapi import Body
    from fastapi.responses import JSONResponse

    def score(payload: dict = Body(...)):
        status, body = score_prompt(payload)
        return JSONResponse(body, status_code=status)

    def last(tab: str = "txt2img"):
        return last_report(tab)

    app.add_api_route(ROUTE_SCORE, score, methods=["POST"])
    app.add_api_route(ROUTE_LAST, last, methods=["GET"])
