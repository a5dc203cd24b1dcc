"""The "Calibrate for this checkpoint" button: train ES weights for the loaded text encoder(s)."""
from __future__ import annotations

import html
import logging
from contextlib import nullcontext
from pathlib import Path

from embedding_sanitizer.encoders.base import short_fingerprint
from embedding_sanitizer.paths import WEIGHTS_DIR
from embedding_sanitizer.settings import parse_concepts

from . import webui
from .encoder import adapter_for

log = logging.getLogger("embedding_sanitizer.a1111")


def weights_path(adapter, folder: Path) -> Path:
    """Where the calibrated weights of one text model go (named by family and fingerprint)."""
    return folder / f"es-{adapter.family}-{short_fingerprint(adapter.fingerprint)}.safetensors"


def _progress_callback(progress, index: int, count: int):
    """Adapt the trainer's progress calls (fraction, (step, total) or with a message) to Gradio."""
    def report(*args, **kwargs):
        if progress is None:
            return
        numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        message = next((a for a in args if isinstance(a, str)), kwargs.get("message") or kwargs.get("desc"))
        if len(numbers) >= 2 and numbers[1]:
            fraction = numbers[0] / numbers[1]
        elif numbers:
            fraction = float(numbers[0])
        else:
            fraction = float(kwargs.get("fraction", 0.0))
        overall = (index + max(0.0, min(1.0, fraction))) / count
        progress(overall, desc=message or f"Calibrating text encoder {index + 1} of {count}")
    return report


def calibrate_loaded_model(concepts_text: str, progress=None) -> list[Path]:
    """Calibrate every text model of the loaded checkpoint; returns the saved files."""
    try:
        from embedding_sanitizer.train import calibrate
    except ImportError as exc:
        raise RuntimeError("calibration is not available in this installation: embedding_sanitizer.train "
                           f"cannot be imported ({exc}); update the extension") from exc
    shared = webui._shared()
    hosts = webui.text_models(getattr(shared, "sd_model", None))
    if not hosts:
        raise RuntimeError("no checkpoint with a supported text encoder is loaded")
    concepts = list(parse_concepts(concepts_text or ""))
    if not concepts:
        raise RuntimeError("the concept list is empty: enter at least one concept (e.g. nudity)")
    folder = webui.models_dir() or WEIGHTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    try:
        from modules.call_queue import queue_lock
    except ImportError:
        queue_lock = nullcontext()
    saved = []
    with queue_lock:  # never next to a generation on the same model
        for index, host in enumerate(hosts):
            adapter = adapter_for(host, webui.layer_tag)
            out = weights_path(adapter, folder)
            calibrate(adapter, concepts, out, progress=_progress_callback(progress, index, len(hosts)))
            saved.append(out)
            log.info("Embedding Sanitizer: calibrated %s -> %s", adapter.name, out.name)
    return saved


def make_calibrate_fn(gr):
    """The Gradio click handler (with a Gradio progress bar)."""
    def calibrate_ui(concepts_text, progress=gr.Progress()):
        try:
            saved = calibrate_loaded_model(concepts_text, progress)
        except Exception as exc:  # noqa: BLE001 - shown in the UI
            log.exception("Embedding Sanitizer calibration failed")
            return f'<p class="es-error">Calibration failed: {html.escape(str(exc))}</p>'
        names = ", ".join(html.escape(p.name) for p in saved)
        return (f'<p class="es-ok">Saved {names}. Choose method "es" or "es+safree"; the weights are '
                "picked automatically for this checkpoint.</p>")
    return calibrate_ui
