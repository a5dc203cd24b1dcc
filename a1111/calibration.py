"""The "Calibrate for this checkpoint" button: train ES weights for the loaded text encoder(s).

The run stays within its time budget, shows its progress in the button's status (Gradio) and in the
webui's own progress state (``shared.state``: job, step, text), prints a console line per epoch, and stops
when the webui's Interrupt button sets ``shared.state.interrupted`` (no file is written then). Weights go
to ``models/embedding_sanitizer`` (written atomically), the encoded corpus cache to
``models/embedding_sanitizer/cache`` (at most 512 MB, oldest files removed first).
"""
from __future__ import annotations

import html
import logging
from contextlib import nullcontext
from pathlib import Path

from embedding_sanitizer.calibration_run import DEFAULT_TIME_BUDGET_S, Cancelled, overall_fraction
from embedding_sanitizer.encoders.base import short_fingerprint
from embedding_sanitizer.paths import WEIGHTS_DIR
from embedding_sanitizer.settings import parse_concepts

from . import webui
from .encoder import adapter_for

log = logging.getLogger("embedding_sanitizer.a1111")
JOB = "Embedding Sanitizer calibration"
CACHE_SUBDIR = "cache"
STATE_STEPS = 1000
DEVICES = ("auto", "cpu", "cuda")


def weights_path(adapter, folder: Path) -> Path:
    """Where the calibrated weights of one text model go (named by family and fingerprint)."""
    return folder / f"es-{adapter.family}-{short_fingerprint(adapter.fingerprint)}.safetensors"


def _state():
    return getattr(webui._shared(), "state", None)


def _progress_callback(progress, index: int, count: int):
    """The trainer's ``progress(done, total, message)`` onto the Gradio bar and the webui's ``shared.state``."""
    seen = {"fraction": 0.0}

    def report(done, total, message=""):
        seen["fraction"] = overall_fraction(done, total, str(message), seen["fraction"])
        overall = (index + seen["fraction"]) / count
        state = _state()
        if state is not None:
            state.job_no = index
            state.sampling_step = int(STATE_STEPS * overall)
            state.sampling_steps = STATE_STEPS
            state.textinfo = f"{JOB}: {message}"
        if progress is not None:
            progress(overall, desc=message or f"Calibrating text encoder {index + 1} of {count}")
    return report


def _console(text: str) -> None:
    print(text, flush=True)  # the webui's console; its logging shows warnings only by default


def calibrate_loaded_model(concepts_text: str, progress=None, time_budget_s: float | None = DEFAULT_TIME_BUDGET_S,
                           device: str = "auto", threads: int | None = None) -> list[tuple[Path, dict]]:
    """Calibrate every text model of the loaded checkpoint; returns ``(saved file, summary)`` per model.

    The budget is shared by the text models (SDXL: CLIP-L and CLIP-G). Raises ``Cancelled`` when the webui's
    Interrupt button was pressed (nothing written for the model in progress).
    """
    try:
        from embedding_sanitizer.train import calibrate
    except ImportError as exc:
        raise RuntimeError("calibration is not available in this installation: embedding_sanitizer.train "
                           f"cannot be imported ({exc}); update the extension") from exc
    import torch

    shared = webui._shared()
    hosts = webui.text_models(getattr(shared, "sd_model", None))
    if not hosts:
        raise RuntimeError("no checkpoint with a supported text encoder is loaded")
    concepts = list(parse_concepts(concepts_text or ""))
    if not concepts:
        raise RuntimeError("the concept list is empty: enter at least one concept (e.g. nudity)")
    if device not in DEVICES:
        raise RuntimeError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was chosen but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    if time_budget_s is not None and float(time_budget_s) <= 0:
        raise RuntimeError("the time budget must be a positive number of seconds")
    folder = webui.models_dir() or WEIGHTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    try:
        from modules.call_queue import queue_lock
    except ImportError:
        queue_lock = nullcontext()
    state = _state()
    per_model = None if not time_budget_s else float(time_budget_s) / len(hosts)
    saved = []
    with queue_lock:  # never next to a generation on the same model
        if state is not None:
            state.begin(job=JOB)
            state.job_count = len(hosts)
        try:
            for index, host in enumerate(hosts):
                adapter = adapter_for(host, webui.layer_tag)
                out = weights_path(adapter, folder)
                summary = calibrate(adapter, concepts, out, progress=_progress_callback(progress, index, len(hosts)),
                                    time_budget_s=per_model, device=None if device == "auto" else device,
                                    threads=int(threads) if threads else None, cache_dir=folder / CACHE_SUBDIR,
                                    should_stop=lambda: bool(getattr(_state(), "interrupted", False)),
                                    log_line=_console)
                saved.append((out, summary))
                log.info("Embedding Sanitizer: calibrated %s -> %s", adapter.name, out.name)
        finally:
            if state is not None:
                state.end()
    return saved


def status_html(saved: list[tuple[Path, dict]]) -> str:
    from embedding_sanitizer.train import quality_line

    items = []
    for path, summary in saved:
        if not isinstance(summary, dict):
            summary = {}
        detail = quality_line(summary.get("validation", {}))
        if summary.get("kept_earlier"):
            detail = f"{summary['kept_earlier']['reason']}; this run: {detail}"
        if "time_s" in summary:
            detail += (f"; {summary.get('prompts', '?')} prompts, {summary.get('epochs', '?')} epochs "
                       f"({summary.get('stopped_by', '?')}), {summary['time_s'].get('total', 0):.0f} s")
        items.append(f"<li>{html.escape(path.name)}: {html.escape(detail)}</li>")
    return ('<div class="es-ok"><p>Saved the calibrated weights (quality on held-out synthetic prompts):</p><ul>'
            + "".join(items) + '</ul><p>Choose method "es" or "es+safree"; the weights are picked automatically '
            "for this checkpoint (press Refresh weights to list them).</p></div>")


def make_calibrate_fn(gr):
    """The Gradio click handler (with a Gradio progress bar)."""
    def calibrate_ui(concepts_text, time_budget=DEFAULT_TIME_BUDGET_S, device="auto", threads=0,
                     progress=gr.Progress()):
        try:
            saved = calibrate_loaded_model(concepts_text, progress, time_budget, device or "auto", threads)
        except Cancelled:
            return '<p class="es-error">Calibration interrupted; no weights file was written.</p>'
        except Exception as exc:  # noqa: BLE001 - shown in the UI
            log.exception("Embedding Sanitizer calibration failed")
            return f'<p class="es-error">Calibration failed: {html.escape(str(exc))}</p>'
        return status_html(saved)
    return calibrate_ui
