"""The accordion and Settings section built with Gradio, the live-heatmap routes, install.py and preload.py."""
from __future__ import annotations

import importlib.util
import runpy
import sys
import threading

import pytest

from embedding_sanitizer import FIELDS
from embedding_sanitizer.settings import FIELD_BY_NAME

UNSAFE = "a nude person on a beach"


def test_accordion_built_from_the_schema(webui):
    gr = webui.gr
    for runner, tab in ((webui.scripts.scripts_txt2img, "txt2img"), (webui.scripts.scripts_img2img, "img2img")):
        script = runner.alwayson_scripts[0]
        inputs = runner.inputs[script.args_from:script.args_to]
        assert [c.elem_id for c in inputs] == [f"script_{tab}_embedding_sanitizer_{f.name}" for f in FIELDS]
        kinds = {bool: gr.Checkbox, float: gr.Slider}
        for component, spec in zip(inputs, FIELDS):
            assert component.label == spec.label
            expected = kinds.get(spec.kind, gr.Dropdown if spec.choices or spec.name == "weights" else gr.Textbox)
            assert isinstance(component, expected), spec.name
            assert component.value == spec.default or spec.name == "weights"
        slider = inputs[[f.name for f in FIELDS].index("intensity")]
        spec = FIELD_BY_NAME["intensity"]
        assert (slider.minimum, slider.maximum, slider.step) == (spec.minimum, spec.maximum, spec.step)
        assert [key for _, key in script.infotext_fields] == [f.infotext for f in FIELDS]
    assert gr.__version__ == "3.41.2", "the UI test is meant to run with the Gradio of A1111 1.10"


def test_settings_section(webui):
    labels = webui.shared.opts.data_labels
    for spec in FIELDS:
        info = labels[f"embedding_sanitizer_{spec.name}"]
        assert info.section == ("embedding_sanitizer", "Embedding Sanitizer")
        assert info.default == spec.default
        assert not info.restrict_api
    for key in ("admin_lock", "min_intensity", "forced_mode", "required_concepts"):
        assert labels[f"embedding_sanitizer_{key}"].restrict_api, key
    assert webui.shared.opts.set("embedding_sanitizer_admin_lock", True, is_api=True) is False
    # the options render as Gradio components the way the Settings page builds them
    gr = webui.gr
    with gr.Blocks():
        for key, info in labels.items():
            if key.startswith("embedding_sanitizer_"):
                args = info.component_args() if callable(info.component_args) else (info.component_args or {})
                info.component(label=info.label, value=info.default, elem_id=f"setting_{key}", **args)


def test_score_route_and_last_heatmap(webui):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    webui.script_callbacks.app_started_callback(None, app)
    client = TestClient(app)
    webui.shared.sd_model = webui.models.sd1
    body = {"prompt": UNSAFE, "settings": {"preset": "max", "concepts": "nude person, nudity"}}
    response = client.post("/embedding-sanitizer/v1/score", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert [w["text"] for w in data["words"]] == UNSAFE.split()
    assert all(0.0 <= w["score"] <= 1.0 for w in data["words"]) and any(w["weight"] > 0 for w in data["words"])
    assert "es-heatmap" in data["html"] and data["active"] is True
    # the slider: intensity 0 keeps the scores and edits nothing
    zero = client.post("/embedding-sanitizer/v1/score", json={**body, "settings": {
        **body["settings"], "preset": "custom", "intensity": 0.0}}).json()
    assert [w["score"] for w in zero["words"]] == [w["score"] for w in data["words"]]
    assert all(w["weight"] == 0 for w in zero["words"])
    # SDXL: both text encoders, one word list
    webui.shared.sd_model = webui.models.sdxl
    sdxl = client.post("/embedding-sanitizer/v1/score", json=body).json()
    assert sdxl["encoders"] == ["webui-sdxl-l", "webui-sdxl-g"] and len(sdxl["words"]) == 6
    webui.shared.sd_model = webui.models.sd1
    # the admin lock applies to the preview too
    from modules import ui_settings

    ui_settings.apply({"embedding_sanitizer_admin_lock": True})  # on the Settings page
    try:
        locked = client.post("/embedding-sanitizer/v1/score", json={"prompt": UNSAFE, "settings": {"enabled": False}})
        assert locked.json()["active"] is True and locked.json()["policy_notes"]
    finally:
        ui_settings.apply({"embedding_sanitizer_admin_lock": False})
    bad = client.post("/embedding-sanitizer/v1/score", json={"prompt": UNSAFE, "settings": {"intensity": 7}})
    assert bad.status_code == 422 and "intensity" in bad.json()["error"]
    from modules.call_queue import queue_lock

    with queue_lock:
        assert client.post("/embedding-sanitizer/v1/score", json=body).json().get("busy") is True
    # after a generation, the heatmap of the prompts actually used
    before = client.get("/embedding-sanitizer/v1/last", params={"tab": "txt2img"}).json()["id"]
    webui.api.text2imgapi({"prompt": UNSAFE, "negative_prompt": "blurry", "alwayson_scripts": {
        "embedding sanitizer": {"args": [{"preset": "max", "concepts": "nude person"}]}}})
    last = client.get("/embedding-sanitizer/v1/last", params={"tab": "txt2img"}).json()
    assert last["id"] > before
    assert [item["prompt"] for item in last["prompts"]] == [UNSAFE]
    assert [w["text"] for w in last["prompts"][0]["words"]] == UNSAFE.split()


def test_route_does_not_touch_generation_state(webui):
    import torch

    from a1111.routes import score_prompt

    webui.shared.sd_model = webui.models.sd1
    assert webui.glue.HOOK.state is None
    status, body = score_prompt({"prompt": UNSAFE, "settings": {"preset": "max"}})
    assert status == 200 and webui.glue.HOOK.state is None
    cond = webui.models.sd1.cond_stage_model(["x"])
    assert isinstance(cond, torch.Tensor)


def _load_install(root):
    spec = importlib.util.spec_from_file_location("es_install_under_test", root / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_only_installs_what_is_missing(webui):
    import launch

    install = _load_install(webui.root)
    names = [name for name, _ in install.requirements()]
    assert "torch" not in [n.lower() for n in names] and "transformers" in names
    launch.pip_calls.clear()
    assert install.install(launch) == [] and launch.pip_calls == []
    launch.pretend_missing.add("safetensors")
    try:
        assert install.install(launch) == ["safetensors>=0.4"]
        assert launch.pip_calls == ['install "safetensors>=0.4"']
        launch.pip_calls.clear()
        launch.args.skip_install = True
        assert install.install(launch) == [] and launch.pip_calls == []
    finally:
        launch.pretend_missing.clear()
        launch.args.skip_install = False
    # run as the webui runs it: a subprocess-style __main__ with launch importable
    runpy.run_path(str(webui.root / "install.py"), run_name="__main__")


def test_install_warns_about_an_old_version_on_stdout(webui, tmp_path, capsys):
    """The webui prints an installer's stdout only, so the "too old" warning must go there."""
    import launch

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("safetensors>=999\n", encoding="utf-8")
    install = _load_install(webui.root)
    launch.pip_calls.clear()
    assert install.install(launch, requirements) == [] and launch.pip_calls == [], "never upgrades"
    captured = capsys.readouterr()
    assert "safetensors" in captured.out and "safetensors>=999 is expected" in captured.out
    assert captured.err == ""


def test_preload_flag(webui):
    from modules import cmd_args

    parsed = cmd_args.parser.parse_args(["--embedding-sanitizer-policy", "policy.json"])
    assert parsed.embedding_sanitizer_policy == "policy.json"


def test_es_weights_found_by_fingerprint_and_calibrate_button(webui, monkeypatch):
    import torch

    from a1111.calibration import make_calibrate_fn
    from a1111.encoder import adapter_for
    from embedding_sanitizer.es_model import ESConfig, EmbeddingSanitizerNet
    from embedding_sanitizer.weights_io import save_es

    webui.shared.sd_model = webui.models.sd1
    adapter = adapter_for(webui.models.sd1.cond_stage_model, webui.glue.layer_tag)
    folder = webui.glue.models_dir()
    calls = []

    def fake_calibrate(encoder, concepts, out_path, progress=None, **kwargs):
        calls.append((encoder.name, list(concepts)))
        progress(0, 2, "encoding")
        torch.manual_seed(0)
        net = EmbeddingSanitizerNet(ESConfig(width=encoder.width, hidden=16, layers=1, heads=2,
                                             prompt_pooling="eos"))
        with torch.no_grad():  # a whole-prompt detector, as calibrate() fits one
            net.prompt_direction.normal_()
            net.prompt_platt.copy_(torch.tensor([1.0, 0.0]))
        save_es(out_path, net, encoder_name=encoder.name, encoder_fingerprint=encoder.fingerprint,
                layout=encoder.layout.to_dict(), concepts=list(concepts))
        progress(2, 2, "saved")
        return {}

    import embedding_sanitizer.train as train

    monkeypatch.setattr(train, "calibrate", fake_calibrate)
    seen = []
    handler = make_calibrate_fn(webui.gr)
    html = handler("nudity, gore", progress=lambda fraction, desc=None: seen.append(fraction))
    assert "Saved" in html and "es-sd1-" in html and calls == [("webui-sd1", ["nudity", "gore"])]
    assert seen and seen[-1] == 1.0
    assert [p.parent for p in folder.glob("*.safetensors")] == [folder]
    # mode "es" with no file named picks the weights made for this encoder
    runner = webui.scripts.scripts_txt2img
    script = runner.alwayson_scripts[0]
    p = webui.processing.StableDiffusionProcessingTxt2Img(sd_model=webui.models.sd1, prompt=UNSAFE)
    args = [None] * script.args_to
    args[script.args_from:script.args_to] = [{"mode": "es", "preset": "max"}] + [None] * 9
    p.scripts, p.script_args = runner, tuple(args)
    processed = webui.processing.process_images(p)
    assert "ES mode: es" in processed.infotexts[0]
    # the live score route shows the whole-prompt score of weights that have a detector
    from a1111.routes import score_prompt

    status, body = score_prompt({"prompt": UNSAFE, "settings": {"mode": "es"}})
    assert status == 200 and "error" not in body, body
    assert isinstance(body["prompt_score"], float) and 0.0 <= body["prompt_score"] <= 1.0
    assert adapter.fingerprint  # computed from the host's token embedding (through EmbeddingsWithFixes)
    assert handler("  ", progress=None).startswith('<p class="es-error">')


def test_score_route_says_when_no_checkpoint_is_loaded_yet(webui):
    """Forge loads the checkpoint at the first generation: until then the live heatmap says so."""
    from a1111.routes import score_prompt

    saved = webui.shared.sd_model
    webui.shared.sd_model = None
    try:
        status, body = score_prompt({"prompt": UNSAFE})
    finally:
        webui.shared.sd_model = saved
    assert status == 200 and "loaded yet" in body["error"] and body["words"] == []
