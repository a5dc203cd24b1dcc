"""Weights 'auto-calibrate' in the A1111 stand-in: a generation with no matching file returns at once with the
training-free projection and a note, starts one background calibration of the loaded text model (its encodes
wait for the webui's queue lock, as a generation holds it), and once the file is written the next generation
runs in mode es with it, as with that file named."""
from __future__ import annotations

import json
import time

import pytest
import torch

from tests.a1111.test_a1111_generation import UNSAFE, args_for, generate, reset_caches

BUDGET_S = 30


@pytest.fixture()
def scheduler(webui, monkeypatch):
    from embedding_sanitizer.auto_calibration import SCHEDULER

    monkeypatch.setattr(SCHEDULER, "time_budget_s", BUDGET_S)
    folder = webui.glue.models_dir()
    before = set(folder.glob("*.safetensors")) if folder.is_dir() else set()
    yield SCHEDULER
    SCHEDULER.stop_all(timeout=120)
    SCHEDULER.forget()
    for created in set(folder.glob("*.safetensors")) - before:
        created.unlink()


def _notes(webui):
    return webui.glue.LAST_REPORTS["txt2img"]["policy_notes"]


def test_auto_calibrate_runs_in_the_background_then_es_uses_the_file(webui, scheduler):
    from modules.call_queue import queue_lock

    from a1111.ui import weight_choices

    assert weight_choices()[0] == "auto-calibrate"
    folder = webui.glue.models_dir()
    queue_lock.acquire()  # as if another generation were running: the background run must wait for it
    try:
        started = time.monotonic()
        with torch.inference_mode():
            p, _ = generate(webui, args_for(mode="es", preset="max", weights="auto-calibrate"), prompt=UNSAFE)
        assert time.monotonic() - started < BUDGET_S / 2, "the generation waited for the calibration"
        notes = _notes(webui)
        assert any(n.startswith("auto-calibration") and "safree" in n for n in notes), notes
        jobs = [j for j in scheduler._jobs.values() if j.path.parent == folder]
        assert len(jobs) == 1 and jobs[0].state == "running"
        job = jobs[0]
        # the same conditioning as the training-free mode: nothing learned is used yet
        p_safree, _ = generate(webui, args_for(mode="safree", preset="max"), prompt=UNSAFE)
        assert torch.equal(p.denoiser_conds[0][0], p_safree.denoiser_conds[0][0])
        time.sleep(1.0)
        assert job.state == "running" and job.fraction < 0.05, "it encoded while the queue lock was held"
        # a second generation meanwhile: the same job, no second run
        generate(webui, args_for(mode="es", preset="max", weights="auto-calibrate"), prompt=UNSAFE)
        assert [j for j in scheduler._jobs.values() if j.path.parent == folder] == [job]
    finally:
        queue_lock.release()
    # the fallback is in the infotext and, as plain text, in the API's JSON info
    reset_caches(webui)  # the same prompt again: the webui would reuse its cached conditioning
    _, processed = generate(webui, args_for(mode="es", preset="max", weights="auto-calibrate"), prompt=UNSAFE)
    assert "ES note: " in processed.infotexts[0] and "auto-calibration" in processed.infotexts[0]
    note = json.loads(processed.js())["extra_generation_params"]["ES note"]
    assert isinstance(note, str) and note.startswith("auto-calibration") and "safree" in note
    # while the corpus is encoded in turns, the live heatmap still gets the lock (it waits for a turn, not "busy")
    from a1111.routes import score_prompt

    answered = []
    while job.state == "running" and job.fraction < 0.3 and len(answered) < 3:
        status, body = score_prompt({"prompt": UNSAFE, "settings": {"preset": "max"}})
        answered.append((status, bool(body.get("busy"))))
    assert answered and all(a == (200, False) for a in answered), answered
    assert job.wait(BUDGET_S * 8) and job.state == "done", job.note()
    assert job.path.is_file() and job.path.parent == folder
    assert (folder / "cache").is_dir()
    with torch.inference_mode():
        p_auto, _ = generate(webui, args_for(mode="es", preset="max", weights="auto-calibrate"), prompt=UNSAFE)
        assert not any(n.startswith("auto-calibration") and "running" in n for n in _notes(webui))
        p_named, _ = generate(webui, args_for(mode="es", preset="max", weights=job.path.name), prompt=UNSAFE)
    assert torch.equal(p_auto.denoiser_conds[0][0], p_named.denoiser_conds[0][0])
    assert not torch.equal(p_auto.denoiser_conds[0][0], p_safree.denoiser_conds[0][0])
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()


def test_auto_calibrate_uses_a_matching_file_without_calibrating(webui, scheduler, tmp_path):
    """A file that matches the text model already exists: it is used, and nothing is started."""
    from a1111.calibration import make_calibrate_fn

    webui.shared.sd_model = webui.models.sd1
    html = make_calibrate_fn(webui.gr)("nudity", BUDGET_S, "cpu", 0)
    assert '<div class="es-ok">' in html, html
    _, processed = generate(webui, args_for(mode="es", preset="max", weights="auto-calibrate"), prompt=UNSAFE)
    assert not scheduler._jobs
    assert not any(n.startswith("auto-calibration") for n in _notes(webui))
    assert "ES note" not in processed.infotexts[0]
    assert "ES note" not in json.loads(processed.js())["extra_generation_params"]
