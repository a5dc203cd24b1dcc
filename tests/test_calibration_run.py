"""Calibration as the hosts call it: grad/inference modes, cancel, atomic files, the cache bound, the time budget."""
from __future__ import annotations

import os
import time

import pytest
import torch

from embedding_sanitizer.calibration_run import (Budget, Cancelled, prune_cache, trainable, training_mode,
                                                 write_atomically)
from embedding_sanitizer.encoders.base import EncoderOutput
from embedding_sanitizer.train import calibrate, quality_line
from embedding_sanitizer.weights_io import list_weight_files, read_metadata

TINY = dict(seed=0, n_unsafe=60, n_benign=40, epochs=1, hidden=16, layers=1, heads=2, batch_size=32)


class InferenceEncoder:
    """Wraps an encoder so that every output is made under ``torch.inference_mode()``, as host models do."""

    def __init__(self, inner, delay_s: float = 0.0):
        self.inner = inner
        self.delay_s = delay_s
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_chunks(self, ids):
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s * ids.shape[0])
        with torch.inference_mode():
            out = self.inner.encode_chunks(ids)
        assert out.tokens.is_inference()
        return EncoderOutput(out.tokens, out.pooled)


def modes():
    return torch.is_grad_enabled(), torch.is_inference_mode_enabled()


CALLER_MODES = {
    "inference_mode": lambda: torch.inference_mode(),
    "no_grad": lambda: torch.no_grad(),
    "normal": lambda: torch.enable_grad(),
    "inference_mode(False) inside no_grad": lambda: _nested(),
}


class _nested:
    def __enter__(self):
        self.a, self.b = torch.no_grad(), torch.inference_mode(False)
        self.a.__enter__()
        self.b.__enter__()

    def __exit__(self, *exc):
        self.b.__exit__(*exc)
        self.a.__exit__(*exc)


@pytest.mark.parametrize("caller", sorted(CALLER_MODES))
def test_calibration_never_changes_the_callers_modes(hash_encoder, tmp_path, caller):
    """From inside inference mode, no_grad or normal mode: it completes, and the caller's modes are unchanged,
    also when it is cancelled half-way."""
    encoder = InferenceEncoder(hash_encoder)
    with CALLER_MODES[caller]():
        before = modes()
        out = tmp_path / "es.safetensors"
        summary = calibrate(encoder, ["nudity"], out, cache_dir=tmp_path / "cache", **TINY)
        assert modes() == before
        assert out.is_file() and summary["epochs"] == 1
        calls = []
        with pytest.raises(Cancelled):
            calibrate(encoder, ["nudity"], tmp_path / "cancelled.safetensors", cache_dir=None,
                      should_stop=lambda: calls.append(1) or len(calls) > 3, **TINY)
        assert modes() == before
    assert not (tmp_path / "cancelled.safetensors").exists()


def test_training_mode_restores_exactly():
    for outer in CALLER_MODES.values():
        with outer():
            before = modes()
            with training_mode():
                assert modes() == (True, False)
            assert modes() == before
            with pytest.raises(ValueError), training_mode():
                raise ValueError("boom")
            assert modes() == before


def test_trainable_clones_inference_tensors_only():
    with torch.inference_mode():
        made = torch.ones(3)
    normal = torch.ones(3)
    assert trainable(normal) is normal
    copy = trainable(made)
    assert not copy.is_inference() and torch.equal(copy, made)
    weight = torch.ones(3, requires_grad=True)
    (weight * copy).sum().backward()
    assert torch.equal(weight.grad, made)


@pytest.mark.parametrize("phase", ["encoding", "training"])
def test_cancel_leaves_no_file(hash_encoder, tmp_path, phase):
    seen = []
    with pytest.raises(Cancelled, match="no weights file"):
        calibrate(hash_encoder, ["nudity"], tmp_path / "es.safetensors", cache_dir=tmp_path / "cache",
                  progress=lambda done, total, message: seen.append(message),
                  should_stop=lambda: any(m.startswith(phase) for m in seen), **TINY)
    assert any(m.startswith(phase) for m in seen)
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == []
    cached = list((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else []
    assert [p.name for p in cached if not p.name.startswith("corpus-")] == []  # never a partial cache file


def test_write_atomically(tmp_path):
    target = tmp_path / "es-x.safetensors"

    def broken(temp):
        temp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(target, broken)
    assert list(tmp_path.iterdir()) == []
    seen = []
    write_atomically(target, lambda temp: (seen.append(temp.name), temp.write_bytes(b"whole")))
    assert target.read_bytes() == b"whole" and not seen[0].endswith(".safetensors")
    assert list_weight_files(tmp_path) == []  # not an ES file; and the temporary name was never listed


def test_prune_cache_evicts_oldest_beyond_the_bound(tmp_path):
    now = time.time()
    for i in range(5):
        path = tmp_path / f"corpus-{i}.safetensors"
        path.write_bytes(b"x" * 100)
        os.utime(path, (now - 100 + i, now - 100 + i))
    (tmp_path / "other.txt").write_bytes(b"y" * 1000)
    keep = tmp_path / "corpus-0.safetensors"
    removed = prune_cache(tmp_path, max_bytes=250, keep=keep)
    assert sorted(p.name for p in removed) == ["corpus-1.safetensors", "corpus-2.safetensors",
                                               "corpus-3.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus-0.safetensors", "corpus-4.safetensors",
                                                          "other.txt"]
    assert prune_cache(tmp_path / "missing") == []


def test_budget_arithmetic():
    clock = iter([0.0, 10.0, 10.0, 10.0, 10.0, 10.0]).__next__
    budget = Budget(100.0, clock=clock)
    assert budget.elapsed() == 10.0
    # 30 s of the 40 s encoding share is left: a corpus needing 60 s is halved
    assert budget.corpus_scale(seconds_per_prompt=0.06, prompts=1000) == pytest.approx(0.5)
    assert budget.training_deadline_left() == pytest.approx(100 - 10 - 15)
    unbounded = Budget(None)
    assert unbounded.corpus_scale(1.0, 10 ** 6) == 1.0 and not unbounded.spent()


def test_time_budget_shrinks_the_corpus_and_is_kept(hash_encoder, tmp_path):
    """A slow encoder (2 ms per chunk) and a 25 s budget: the default corpus (about 7 s per 1,000 prompts here)
    is cut to fit, and the whole run ends within the budget (plus a margin for a loaded machine)."""
    encoder = InferenceEncoder(hash_encoder, delay_s=0.002)
    lines = []
    started = time.perf_counter()
    summary = calibrate(encoder, ["nudity"], tmp_path / "es.safetensors", time_budget_s=25, cache_dir=None,
                        hidden=16, layers=1, heads=2, log_line=lines.append)
    wall = time.perf_counter() - started
    meta = read_metadata(tmp_path / "es.safetensors")
    training = meta["training"]
    assert training["time_budget_s"] == 25 and 0 < training["budget_corpus_scale"] < 1
    assert summary["prompts"] < 4320  # the default corpus of one pack is 2,400 + 1,920 prompts
    too_small = any("budget is too small" in line for line in lines)  # a heavily loaded machine
    times = summary["time_s"]
    assert wall <= 25 * 1.3 or (too_small and wall - times["encode"] - times["corpus"] <= 25 * 1.3), (wall, times)
    assert any("fits" in line for line in lines)
    assert any("epoch 1/" in line and "left" in line for line in lines)
    val = meta["metrics"]["validation"]
    assert 0.0 <= val["preservation_share"] <= 1.0 and 0.0 <= val["token_auroc"] <= 1.0
    assert "preservation share" in quality_line(val) and "token AUROC" in quality_line(val)
