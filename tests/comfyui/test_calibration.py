"""The Calibrate node in the real ComfyUI (in-process): it runs inside torch.inference_mode() as ComfyUI runs every
node, writes a weights file for the tiny checkpoint's CLIP within its time budget, and the CLIP node's 'auto'
then uses that file in mode 'es'. Cancel (ComfyUI's interrupt) leaves no file."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

BUDGET_S = 60


def budget_kept(result: dict, log_text: str) -> bool:
    """The run stayed within its budget (30% margin), or it said that even its smallest corpus could not be
    encoded in time on this machine (a heavily loaded CI machine), and only timing the encoder and encoding that
    smallest corpus ran over."""
    times = result["time_s"]
    if times["total"] <= BUDGET_S * 1.3:
        return True
    return ("budget is too small for this machine" in log_text
            and times["total"] - times["encode"] - times["corpus"] <= BUDGET_S * 1.3)


def calibrate_node(comfy):
    return comfy["pack"].NODE_CLASS_MAPPINGS["EmbeddingSanitizerCalibrate"]()


def weights_folder() -> Path:
    import folder_paths

    return Path(folder_paths.get_folder_paths("embedding_sanitizer")[0])


@pytest.fixture()
def progress_calls():
    import comfy.utils

    calls = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    yield calls
    comfy.utils.set_progress_bar_global_hook(previous)


def test_calibrate_node_writes_weights_that_auto_uses_in_es_mode(comfy, sd1_clip, progress_calls, caplog):
    folder = weights_folder()
    before = set(folder.glob("*.safetensors")) if folder.is_dir() else set()
    clip_node = comfy["pack"].NODE_CLASS_MAPPINGS["EmbeddingSanitizerCLIP"]
    changed_before = clip_node.IS_CHANGED()
    caplog.set_level("INFO")
    started = time.perf_counter()
    with torch.inference_mode():  # as ComfyUI's execution.py runs every node
        out = calibrate_node(comfy).calibrate(sd1_clip, "nudity", retrain=True, time_budget=BUDGET_S)
        assert torch.is_inference_mode_enabled()
    wall = time.perf_counter() - started
    names, report, quality = out["result"]
    created = sorted(set(folder.glob("*.safetensors")) - before)
    try:
        assert [p.name for p in created] == [names]
        assert not list(folder.glob(".*partial")), "a temporary file was left behind"
        parsed = json.loads(report)["clip_l"]
        # the report rounds its times to 0.1 s
        assert parsed["file"] == names and parsed["result"]["time_s"]["total"] <= wall + 0.05
        assert budget_kept(parsed["result"], caplog.text), (wall, parsed["result"]["time_s"])
        assert "token AUROC" in quality and "preservation share" in quality and out["ui"]["text"][1] == quality
        # progress in the UI: ComfyUI's ProgressBar moved forward to the end; a console line per epoch
        assert progress_calls and progress_calls[-1][0] == progress_calls[-1][1]
        assert [v for v, _ in progress_calls] == sorted(v for v, _ in progress_calls)
        assert any("epoch 1/" in r.getMessage() and "left" in r.getMessage() for r in caplog.records)
        # the corpus cache lives under models/embedding_sanitizer/cache
        assert list((folder / "cache").glob("corpus-*.safetensors"))
        # refresh: the file is listed, the CLIP node re-runs, and 'auto' uses it in mode es
        assert f"sd1-clip-l 768: {names}" in comfy["pack"].nodes.weights.weight_choices()  # labelled
        assert clip_node.IS_CHANGED() != changed_before
        from tests.comfyui.test_inprocess import encode, entry_of, patch

        with torch.inference_mode():
            cond = encode(comfy, patch(comfy, sd1_clip, mode="es", weights="auto", preset="max"))
        entry = entry_of(comfy, cond)
        assert entry["streams"]["clip_l"]["es_weights"] == names and f"clip_l: ES weights {names}" in entry["notes"]
        plain = encode(comfy, sd1_clip)
        assert cond[0][0].shape == plain[0][0].shape
        # a second press reuses the file instead of training again
        again = calibrate_node(comfy).calibrate(sd1_clip, "nudity", time_budget=BUDGET_S)
        assert again["result"][0] == names and "reused" in again["result"][2]
    finally:
        for path in created:
            path.unlink(missing_ok=True)


def test_cancel_through_comfyui_interrupt_writes_nothing(comfy, sd1_clip):
    import comfy.model_management as mm

    folder = weights_folder()
    before = set(folder.glob("*")) if folder.is_dir() else set()
    mm.interrupt_current_processing(True)
    try:
        with torch.inference_mode(), pytest.raises(mm.InterruptProcessingException):
            calibrate_node(comfy).calibrate(sd1_clip, "nudity", retrain=True, time_budget=BUDGET_S,
                                            file_prefix="es-cancelled")
    finally:
        mm.interrupt_current_processing(False)
    assert not mm.processing_interrupted()
    assert not [p for p in set(folder.glob("*")) - before if p.name != "cache"]


def test_bad_device_is_a_clear_error(comfy, sd1_clip, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        calibrate_node(comfy).calibrate(sd1_clip, "nudity", retrain=True, device="cuda")


def test_auto_calibrate_runs_in_the_background_and_switches_to_es(comfy, sd1_clip, monkeypatch):
    """weights 'auto-calibrate', no file for this CLIP: the encode returns at once with the training-free
    projection and a note; the background job writes the file; the next encode uses it in mode es."""
    from embedding_sanitizer.auto_calibration import SCHEDULER
    from tests.comfyui.test_inprocess import encode, entry_of, patch

    monkeypatch.setattr(SCHEDULER, "time_budget_s", BUDGET_S)
    folder = weights_folder()
    before = set(folder.glob("*.safetensors")) if folder.is_dir() else set()
    patched = patch(comfy, sd1_clip, mode="es", weights="auto-calibrate", concepts="nudity", preset="max")
    try:
        with torch.inference_mode():
            first = encode(comfy, patched)
        returned = time.monotonic()
        entry = entry_of(comfy, first)
        assert any("auto-calibration" in n and "safree" in n for n in entry["notes"]), entry["notes"]
        assert entry["streams"]["clip_l"]["es_weights"] == ""
        plain = encode(comfy, sd1_clip)
        assert first[0][0].shape == plain[0][0].shape
        jobs = [j for j in SCHEDULER._jobs.values() if j.path.parent == folder]
        assert len(jobs) == 1
        job = jobs[0]
        # the encode did not wait for the calibration: it returned while the job was still running
        assert job.state == "running" or job.finished > returned, job
        with torch.inference_mode():
            encode(comfy, patched)  # a second encode while it runs: the same job, no second run
        assert [j for j in SCHEDULER._jobs.values() if j.path.parent == folder] == [job]
        assert job.wait(BUDGET_S * 8) and job.state == "done", job.note()
        with torch.inference_mode():
            after = encode(comfy, patched)
        entry = entry_of(comfy, after)
        assert entry["streams"]["clip_l"]["es_weights"] == job.path.name, entry["notes"]
    finally:
        SCHEDULER.stop_all(timeout=60)
        SCHEDULER.forget()
        for path in set(folder.glob("*.safetensors")) - before:
            path.unlink(missing_ok=True)
