"""Automatic calibration in the background (the weights choice ``auto-calibrate``), host-agnostic.

When a host finds no ES weights for the connected text encoder and the user chose ``auto-calibrate``, it
calls ``SCHEDULER.request(key, make_encoder, save_folder, concepts)``. The first request for a key (the
encoder's ``cache_key``: its fingerprint and output layer) starts ``train.calibrate`` in a daemon thread;
every later request returns the same ``Job`` at once, so a generation never waits. The host keeps using the
training-free mode (safree) and shows ``job.note()`` until ``job.state == "done"``; the weights file then
lies in ``save_folder`` (written atomically), where the host's ``auto`` lookup finds it.

A job runs once per key: a failed job is not retried until the host restarts (its note says why), so a
broken encoder does not start a new run on every generation. ``make_encoder()`` is called once, in the
caller's thread, when the job starts: hosts hand over a private copy of their text encoder so that the
background run never touches the model a generation is using. The run leaves torch's thread count alone
(it is process-wide and would slow the generation down).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .calibration_run import DEFAULT_TIME_BUDGET_S, Cancelled, format_duration, overall_fraction
from .encoders.base import short_fingerprint

AUTO_CALIBRATE = "auto-calibrate"
log = logging.getLogger(__name__)


@dataclass
class Job:
    key: str
    encoder_name: str
    path: Path
    concepts: tuple[str, ...]
    state: str = "running"  # running | done | failed | cancelled
    fraction: float = 0.0
    message: str = "starting"
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    summary: dict | None = None
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    thread: threading.Thread | None = field(default=None, repr=False)

    def note(self) -> str:
        """What the host shows while this encoder has no weights yet (or why it never will)."""
        if self.state == "running":
            return (f"auto-calibration of ES weights for {self.encoder_name} is running in the background "
                    f"({100 * self.fraction:.0f}%, {format_duration(time.monotonic() - self.started)} so far); "
                    "the training-free projection (safree) is used until the weights are ready")
        if self.state == "done":
            return f"auto-calibration finished: {self.path.name}"
        if self.state == "cancelled":
            return f"auto-calibration for {self.encoder_name} was stopped; the training-free projection is used"
        return (f"auto-calibration for {self.encoder_name} failed ({self.error}); the training-free projection "
                "(safree) is used; run the Calibrate node / button to see the error")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (tests, shutdown); True when it has."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.state != "running"


def file_name_for(encoder) -> str:
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(encoder.name)).strip("-") or "encoder"
    return f"es-auto-{label}-{short_fingerprint(encoder.cache_key)}.safetensors"


class AutoCalibrator:
    """One background calibration per encoder key, at most ``max_running`` at a time (others wait their turn)."""

    def __init__(self, time_budget_s: float | None = DEFAULT_TIME_BUDGET_S, max_running: int = 1,
                 calibrate: Callable | None = None) -> None:
        self.time_budget_s = time_budget_s
        self._calibrate = calibrate
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_running)

    def job(self, key: str) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def request(self, key: str, make_encoder: Callable[[], object], save_folder: str | Path,
                concepts, **options) -> Job:
        """The job for ``key``, started now if there is none. Never blocks on a running calibration."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None:
                return job
            encoder = make_encoder()
            path = Path(save_folder) / file_name_for(encoder)
            job = Job(key, str(encoder.name), path, tuple(concepts))
            self._jobs[key] = job
        job.thread = threading.Thread(target=self._run, args=(job, encoder, options), daemon=True,
                                      name=f"es-auto-calibration-{short_fingerprint(key)}")
        job.thread.start()
        log.info("Embedding Sanitizer: auto-calibration started for %s -> %s", job.encoder_name, job.path.name)
        return job

    def _run(self, job: Job, encoder, options: dict) -> None:
        calibrate = self._calibrate
        if calibrate is None:
            from .train import calibrate
        with self._slots:
            if job.stop.is_set():
                job.state, job.finished = "cancelled", time.monotonic()
                return

            def progress(done, total, message=""):
                job.fraction = overall_fraction(done, total, str(message), job.fraction)
                job.message = str(message)

            state, error = "failed", ""
            try:
                job.summary = calibrate(encoder, list(job.concepts), job.path, progress=progress,
                                        time_budget_s=options.pop("time_budget_s", self.time_budget_s),
                                        should_stop=job.stop.is_set, **options)
                job.fraction, state = 1.0, "done"
                log.info("Embedding Sanitizer: auto-calibration finished: %s", job.path.name)
            except Cancelled:
                state = "cancelled"
            except Exception as exc:  # noqa: BLE001 - reported through the job's note
                error = f"{type(exc).__name__}: {exc}"
                log.exception("Embedding Sanitizer: auto-calibration for %s failed", job.encoder_name)
            finally:
                job.finished = time.monotonic()  # before the state: whoever sees it ended also sees when
                job.error, job.state = error, state

    def stop_all(self, timeout: float | None = None) -> None:
        """Ask every running job to stop (host shutdown, tests) and wait for them."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop.set()
        for job in jobs:
            job.wait(timeout)

    def forget(self) -> None:
        """Drop finished jobs (tests; a host restart does the same)."""
        with self._lock:
            self._jobs = {k: j for k, j in self._jobs.items() if j.state == "running"}


SCHEDULER = AutoCalibrator()
