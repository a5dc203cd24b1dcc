"""Weights ``auto-calibrate`` in A1111/Forge: calibrate the loaded text model in the background, once.

When a generation finds no ES weights for a text model and the weights choice is ``auto-calibrate``,
``request`` hands the core scheduler (``embedding_sanitizer.auto_calibration.SCHEDULER``) a
``QueueLockedEncoder`` around the host's text model and returns at once: this generation, and every one
until the file is ready, uses the training-free projection (mode safree) with a note in the infotext. The
file goes to ``models/embedding_sanitizer`` (written atomically), where the next generation's ``auto``
lookup finds it; the corpus cache to ``models/embedding_sanitizer/cache``.

The background run shares the webui's text model, not a copy (A1111 moves models between devices for
--medvram/--lowvram, and a deep copy of its CLIP wrapper would copy the webui's hijack with it). It
never runs beside a generation: the corpus is encoded in turns of ``TURN_CHUNKS`` chunks, each taken only
when the webui's queue lock (``modules.call_queue.queue_lock``, held by every UI and API generation) is
free, and after each turn the run pauses ``YIELD_S`` so that a generation or the live heatmap waiting for
the lock gets it next. A generation that starts meanwhile waits for at most one turn; the live-heatmap
route, which otherwise answers "busy" at once, waits for the turn to end (``turn_in_progress``). Training
the small ES network needs no lock.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from embedding_sanitizer.auto_calibration import AUTO_CALIBRATE, SCHEDULER
from embedding_sanitizer.calibration_run import Cancelled
from embedding_sanitizer.encoders.base import EncoderOutput, TextEncoder
from embedding_sanitizer.settings import Settings, parse_concepts

log = logging.getLogger("embedding_sanitizer.a1111")
CACHE_SUBDIR = "cache"
LOCK_POLL_S = 0.05
TURN_CHUNKS = 8  # chunks encoded per turn with the queue lock (about a second for CLIP-L on a CPU core)
YIELD_S = 0.1  # pause after each turn: a thread waiting for the lock takes it first
_turns = threading.Event()  # set while a background run holds the queue lock for a turn


def turn_in_progress() -> bool:
    """Whether a background calibration holds the webui's queue lock right now (for at most one turn)."""
    return _turns.is_set()

__all__ = ["AUTO_CALIBRATE", "QueueLockedEncoder", "request"]


def _queue_lock():
    try:
        from modules.call_queue import queue_lock
    except ImportError:  # outside a webui (tests of the glue alone): nothing to share the model with
        return None
    return queue_lock


@contextmanager
def _turn(lock, stop=None):
    """Hold ``lock`` for one batch, taking it only when it is free (polling, so the run stays stoppable)."""
    if lock is None:
        yield
        return
    while not lock.acquire(blocking=False):
        if stop is not None and stop():
            raise Cancelled("auto-calibration stopped while waiting for the webui's queue")
        time.sleep(LOCK_POLL_S)
    _turns.set()
    try:
        yield
    finally:
        _turns.clear()
        lock.release()
        time.sleep(YIELD_S)


class QueueLockedEncoder(TextEncoder):
    """The host text model's adapter, every tokenize/encode taken in turn with the webui's generations."""

    def __init__(self, adapter, lock=None, stop=None) -> None:
        self._adapter = adapter
        self._lock = lock
        self._stop = stop
        self.name = adapter.name
        self.layout = adapter.layout
        self.width = adapter.width
        self._fingerprint = adapter.fingerprint  # read now, under the generation that asked for the run
        self._cache_key = adapter.cache_key

    @property
    def family(self):
        return getattr(self._adapter, "family", None)

    @property
    def device(self):
        return self._adapter.device

    @property
    def vocab_size(self):
        return self._adapter.vocab_size

    @property
    def cache_key(self) -> str:
        return self._cache_key

    def compute_fingerprint(self) -> str:
        return self._fingerprint

    def tokenize(self, texts):
        with _turn(self._lock, self._stop):
            return self._adapter.tokenize(texts)

    def encode_chunks(self, ids):
        parts = []
        for start in range(0, max(int(ids.shape[0]), 1), TURN_CHUNKS):
            with _turn(self._lock, self._stop):
                parts.append(self._adapter.encode_chunks(ids[start:start + TURN_CHUNKS]))
        if len(parts) == 1:
            return parts[0]
        return EncoderOutput(torch.cat([p.tokens for p in parts]), torch.cat([p.pooled for p in parts]))


def request(adapter, settings: Settings, folder: Path, log_line=None):
    """The background job for this text model (started now if there is none); never waits for it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = adapter.cache_key

    def stopped() -> bool:  # the job's own stop event (host shutdown, tests), read while waiting for the queue
        job = SCHEDULER.job(key)
        return job is not None and job.stop.is_set()

    return SCHEDULER.request(key, lambda: QueueLockedEncoder(adapter, _queue_lock(), stopped), folder,
                             parse_concepts(settings.concepts), cache_dir=folder / CACHE_SUBDIR,
                             log_line=log_line or _console)


def _console(text: str) -> None:
    print(f"Embedding Sanitizer auto-calibration: {text}", flush=True)  # the webui console shows stdout


def is_auto_calibrate(settings: Settings) -> bool:
    return str(settings.weights or "").strip() == AUTO_CALIBRATE

