"""The background calibration scheduler: once per encoder key, never blocking the caller, honest notes."""
from __future__ import annotations

import threading
import time

import torch

from embedding_sanitizer.auto_calibration import AutoCalibrator, file_name_for
from embedding_sanitizer.weights_io import read_metadata


class Gate:
    """A fake ``calibrate`` that waits for the test to open it, then writes a marker file (or raises)."""

    def __init__(self, fail: bool = False):
        self.opened = threading.Event()
        self.calls = []
        self.fail = fail

    def __call__(self, encoder, concepts, out_path, progress=None, time_budget_s=None, should_stop=None, **kwargs):
        self.calls.append((encoder.name, list(concepts), out_path, time_budget_s, kwargs))
        progress(1, 2, "encoding corpus chunks (2 chunks)")
        while not self.opened.wait(0.01):
            if should_stop():
                from embedding_sanitizer.calibration_run import Cancelled

                raise Cancelled("stopped")
        if self.fail:
            raise RuntimeError("encoder exploded")
        out_path.write_bytes(b"weights")
        return {"validation": {}}


def test_request_starts_once_per_key_and_never_blocks(hash_encoder, tmp_path):
    gate = Gate()
    scheduler = AutoCalibrator(time_budget_s=30, calibrate=gate)
    made = []

    def make():
        made.append(1)
        return hash_encoder

    started = time.perf_counter()
    job = scheduler.request(hash_encoder.cache_key, make, tmp_path, ["nudity"], device="cpu")
    again = scheduler.request(hash_encoder.cache_key, make, tmp_path, ["nudity"])
    assert time.perf_counter() - started < 1.0, "a request must return at once"
    assert again is job and len(made) == 1
    deadline = time.time() + 10
    while not gate.calls and time.time() < deadline:
        time.sleep(0.01)
    assert job.state == "running" and "background" in job.note() and "safree" in job.note()
    assert 0 < job.fraction < 1
    gate.opened.set()
    assert job.wait(10) and job.state == "done"
    assert job.path == tmp_path / file_name_for(hash_encoder) and job.path.read_bytes() == b"weights"
    assert len(gate.calls) == 1 and gate.calls[0][3] == 30 and gate.calls[0][4] == {"device": "cpu"}
    assert job.path.name in job.note()


def test_failed_job_is_not_retried_and_says_why(hash_encoder, tmp_path):
    gate = Gate(fail=True)
    gate.opened.set()
    scheduler = AutoCalibrator(calibrate=gate)
    job = scheduler.request("k", lambda: hash_encoder, tmp_path, ["nudity"])
    assert job.wait(10) and job.state == "failed"
    assert "encoder exploded" in job.note() and "safree" in job.note()
    assert scheduler.request("k", lambda: hash_encoder, tmp_path, ["nudity"]) is job and len(gate.calls) == 1


def test_stop_all_cancels_running_jobs(hash_encoder, tmp_path):
    gate = Gate()
    scheduler = AutoCalibrator(calibrate=gate)
    job = scheduler.request("k", lambda: hash_encoder, tmp_path, ["nudity"])
    scheduler.stop_all(timeout=10)
    assert job.state == "cancelled" and not job.path.exists()


def test_real_background_calibration_from_inference_mode(hash_encoder, tmp_path):
    """The caller is inside inference mode (a host's generation); the job still trains and saves a file."""
    scheduler = AutoCalibrator(time_budget_s=None)
    with torch.inference_mode():
        job = scheduler.request(hash_encoder.cache_key, lambda: hash_encoder, tmp_path, ["nudity"], cache_dir=None,
                                seed=0, n_unsafe=60, n_benign=40, epochs=1, hidden=16, layers=1, heads=2)
        assert torch.is_inference_mode_enabled()
    assert job.wait(300) and job.state == "done", job.note()
    assert read_metadata(job.path)["encoder_name"] == hash_encoder.name
