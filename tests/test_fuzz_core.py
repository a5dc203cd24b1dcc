"""Hypothesis drives the core fuzzer (``embedding_sanitizer.fuzz``) in CI: about 2,300 inputs in all.

Every example is one fuzz case drawn from a seed; a documented clear error is fine, any other
exception is a crash, and ``Violation``/``SilentNoop`` are the invariant and no-op findings.
``python -m embedding_sanitizer fuzz --n 10000`` runs the same cases at scale outside CI.
"""
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from embedding_sanitizer import fuzz

seeds = st.integers(min_value=0, max_value=2 ** 32 - 1)


def budget(n):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fuzzer():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only contend
    try:
        yield fuzz.Fuzzer(use_minilm=True, demo=False)  # the demo command: its own test below
    finally:
        torch.set_num_threads(threads)


def check(fuzzer, kind, seed):
    try:
        fuzzer.run_case(kind, random.Random(seed))
    except fuzz.CLEAR_ERRORS:
        pass  # a documented clear error is a correct answer to a bad input


@budget(1500)
@given(seed=seeds)
def test_sanitize_on_random_tensors_ids_and_settings(fuzzer, seed):
    check(fuzzer, "tensor", seed)


@budget(600)
@given(seed=seeds)
def test_heatmap_text_paths(fuzzer, seed):
    check(fuzzer, "heatmap", seed)


@budget(80)
@given(seed=seeds)
def test_mutated_weights_files(fuzzer, seed):
    check(fuzzer, "weights", seed)


@budget(30)
@given(seed=seeds)
def test_random_prompts_through_the_bundled_encoder(fuzzer, seed):
    check(fuzzer, "prompt", seed)


@budget(30)
@given(seed=seeds)
def test_obfuscated_unsafe_prompts_are_never_silently_passed(fuzzer, seed):
    check(fuzzer, "obfuscated", seed)


@pytest.mark.parametrize("prompt", ["a n\u0430ked \ud800 woman\x00on a beach", "\u202e\ufeff(((", ""])
def test_demo_command_on_odd_prompts_exits_cleanly(prompt):
    fuzz.check_demo(prompt)


def test_a_crash_and_a_violation_are_reported_not_swallowed(fuzzer, monkeypatch):
    """The fuzzer itself can fail: a crash and a broken invariant both end up in the tally."""
    calls = iter([RuntimeError("boom"), fuzz.Violation("BOS changed"), fuzz.SilentNoop("passed")])

    def broken(kind, rng):
        raise next(calls)

    monkeypatch.setattr(fuzzer, "run_case", broken)
    tally = fuzz.run(3, seed=0, mix={"tensor": 1.0}, fuzzer=fuzzer)
    assert [f.category for f in tally.findings] == ["crash", "invariant", "silent_noop"]
    assert tally.summary()["crashes"] == 1 and tally.summary()["silent_noops"] == 1
