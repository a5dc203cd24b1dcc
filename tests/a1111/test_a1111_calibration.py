"""The Calibrate button in the A1111 stand-in, for real: the click handler trains on the loaded checkpoint's
text model from inside inference mode or no_grad (the caller's mode is left as it was), writes the file into
models/embedding_sanitizer within its time budget, and a generation (run under torch.inference_mode() by the
stand-in, as a host runs it without autograd) then uses it in mode es with the weights left on auto.
The webui's Interrupt button (shared.state.interrupt()) stops it with no file written."""
from __future__ import annotations

import pytest
import torch

from tests.a1111.test_a1111_generation import UNSAFE, args_for, generate

BUDGET_S = 60
CALLERS = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad}


@pytest.fixture()
def folder(webui):
    path = webui.glue.models_dir()
    assert path.name == "embedding_sanitizer"
    before = set(path.glob("*.safetensors")) if path.is_dir() else set()
    yield path
    for created in set(path.glob("*.safetensors")) - before:
        created.unlink()


def test_calibrate_button_writes_weights_that_es_mode_uses(webui, folder, capsys):
    from a1111.calibration import make_calibrate_fn

    webui.shared.sd_model = webui.models.sd1
    handler = make_calibrate_fn(webui.gr)
    seen = []
    state = webui.shared.state
    with CALLERS["inference_mode"]():
        html = handler("nudity", BUDGET_S, "cpu", 0, progress=lambda fraction, desc=None: seen.append(fraction))
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
    assert '<div class="es-ok">' in html, html
    files = sorted(folder.glob("es-sd1-*.safetensors"))
    assert len(files) == 1 and files[0].name in html
    assert "token AUROC" in html and "preservation share" in html
    assert not list(folder.glob(".*partial"))
    assert list((folder / "cache").glob("corpus-*.safetensors")), "the corpus cache lives under the models folder"
    # progress: the Gradio bar rose to 1; the webui's state carried the job and its messages; a line per epoch
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert any(job == "Embedding Sanitizer calibration" and text for job, text in state.history)
    assert state.job == "" and not state.interrupted
    out = capsys.readouterr().out
    assert "epoch 1/" in out and "left" in out
    from embedding_sanitizer.weights_io import read_metadata

    meta = read_metadata(files[0])
    assert meta["training"]["time_budget_s"] == BUDGET_S
    assert "preservation_share" in meta["metrics"]["validation"]
    # listed after a refresh, and used by a generation in mode es with no file named
    assert files[0].name in webui.glue.RUNTIME.weights.names()
    p, processed = generate(webui, args_for(mode="es", preset="max"), prompt=UNSAFE)
    assert "ES mode: es" in processed.infotexts[0]
    assert p.denoiser_conds[0][0].shape == (1, 77, 768)


def test_calibration_from_no_grad_and_interrupt_writes_nothing(webui, folder):
    from a1111.calibration import make_calibrate_fn

    webui.shared.sd_model = webui.models.sd1
    state = webui.shared.state
    handler = make_calibrate_fn(webui.gr)
    before = set(folder.glob("*.safetensors"))

    def press_interrupt(fraction, desc=None):
        if desc and desc.startswith("encoding"):
            state.interrupt()

    with CALLERS["no_grad"]():
        html = handler("violence", BUDGET_S, "auto", 1, progress=press_interrupt)
        assert not torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert "interrupted" in html and "no weights file" in html
    assert not [p for p in folder.glob("*.safetensors") if p not in before]
    assert not list(folder.glob(".*partial"))


def test_bad_inputs_are_clear_errors(webui, folder, monkeypatch):
    from a1111.calibration import make_calibrate_fn

    handler = make_calibrate_fn(webui.gr)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA GPU" in handler("nudity", BUDGET_S, "cuda", 0, progress=None)
    assert "time budget" in handler("nudity", -5, "cpu", 0, progress=None)
    assert "concept list is empty" in handler(" ", BUDGET_S, "cpu", 0, progress=None)


def test_status_says_when_an_earlier_better_file_was_kept():
    from pathlib import Path

    from a1111.calibration import status_html

    kept = {"reason": "kept the earlier es.safetensors: its validation token AUROC 0.990 is higher than this "
                      "run's 0.700", "validation": {"token_auroc": 0.99}}
    html = status_html([(Path("es.safetensors"), {"validation": {"token_auroc": 0.7}, "kept_earlier": kept,
                                                  "time_s": {"total": 12}})])
    assert "kept the earlier es.safetensors" in html and "this run: validation token AUROC 0.700" in html
    plain = status_html([(Path("es.safetensors"), {"validation": {"token_auroc": 0.7}, "kept_earlier": None})])
    assert "kept the earlier" not in plain and "validation token AUROC 0.700" in plain
