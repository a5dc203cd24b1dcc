"""The pack in a real ComfyUI server: /object_info, /extensions and a full sampling graph."""
from __future__ import annotations

import json

from tests.comfyui.host import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "sd15_embedding_sanitizer_api.json"


def tiny_graph(checkpoint_name: str) -> dict:
    """The shipped example workflow, pointed at the tiny checkpoint and made fast for CPU."""
    graph = json.loads(EXAMPLE.read_text())
    graph["1"]["inputs"]["ckpt_name"] = checkpoint_name
    graph["6"]["inputs"].update(width=64, height=64)
    graph["7"]["inputs"]["steps"] = 2
    return graph


def test_object_info_has_nodes_slider_and_tooltips(server):
    info = server.get("/object_info/EmbeddingSanitizerCLIP")["EmbeddingSanitizerCLIP"]
    intensity = info["input"]["required"]["intensity"]
    assert intensity[0] == "FLOAT" and intensity[1]["display"] == "slider"
    assert intensity[1]["min"] == 0.0 and intensity[1]["max"] == 3.0
    assert info["category"] == "safety/embedding_sanitizer" and info["description"]
    assert info["display_name"] == "Embedding Sanitizer (CLIP)"
    assert "auto" in info["input"]["required"]["weights"][0]
    for node_id in ("EmbeddingSanitizerConditioning", "EmbeddingSanitizerCalibrate"):
        assert node_id in server.get(f"/object_info/{node_id}")


def test_extensions_list_the_heatmap_script(server):
    scripts = server.get("/extensions")
    assert any(s.endswith("/embedding_sanitizer.js") for s in scripts), scripts


def test_full_graph_runs_and_reports(server, tiny_checkpoint):
    graph = tiny_graph(tiny_checkpoint.name)
    graph["5"]["inputs"]["preset"] = "high"  # differs from the browser test's run: no cached outputs
    result = server.run(graph)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[:3000]
    outputs = result["outputs"]
    assert outputs["9"]["images"], "no image saved"
    heat = outputs["5"]["es_heatmap"][0]
    words = [w for w, _, _ in heat["heatmap"][0]["words"]]
    assert words == ["a", "naked", "woman", "on", "a", "beach", ",", "photo"]
    assert outputs["10"]["images"][0]["type"] == "temp"
    assert (server.base / "output").glob("embedding_sanitizer*.png")


def test_calibrate_node_through_the_server_then_es_mode(server, tiny_checkpoint):
    """The Calibrate node queued on the real server (which runs it inside torch.inference_mode()) writes a file
    into the server's models/embedding_sanitizer; the example graph in mode 'es' with weights 'auto' then runs
    (mode es fails without weights for the CLIP)."""
    calibrate = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_checkpoint.name}},
        "2": {"class_type": "EmbeddingSanitizerCalibrate",
              "inputs": {"clip": ["1", 1], "concepts": "nudity", "stream": "all", "retrain": True,
                         "file_prefix": "es-server", "time_budget": 60, "device": "auto", "threads": 0}},
    }
    result = server.run(calibrate, timeout=1200)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[:3000]
    name, quality = result["outputs"]["2"]["text"]
    assert name.startswith("es-server-sd1-clip_l-") and "preservation share" in quality
    folder = server.base / "models" / "embedding_sanitizer"
    assert (folder / name).is_file() and not list(folder.glob(".*partial"))
    assert f"sd1-clip-l 768: {name}" in server.get("/object_info/EmbeddingSanitizerCLIP")[
        "EmbeddingSanitizerCLIP"]["input"]["required"]["weights"][0], "listed (labelled) after a refresh"
    graph = tiny_graph(tiny_checkpoint.name)
    for node in ("2", "5"):
        graph[node]["inputs"].update(mode="es", weights="auto", preset="max")
    result = server.run(graph)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[:3000]
    assert "whole prompt" in result["outputs"]["5"]["es_heatmap"][0]["summary"]


PREVIEW = "/embedding_sanitizer/preview"
PROMPT = "a naked woman on a beach, photo"


def _post(server, path: str, body: dict) -> tuple[int, dict]:
    """(status, JSON body) also for 4xx answers."""
    import urllib.error

    try:
        return 200, server.post(path, body)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _settings(inputs: dict, **changes) -> dict:
    return dict({k: v for k, v in inputs.items() if not isinstance(v, list)}, **changes)


def test_preview_route_rescores_without_queueing(server, tiny_checkpoint):
    """POST /embedding_sanitizer/preview on the real server: before a run the node has no CLIP (the answer says to
    queue once); after one run it re-scores any text for any settings, edits follow the intensity (0: nothing edited,
    same scores), and no prompt is queued for it."""
    graph = tiny_graph(tiny_checkpoint.name)
    graph["2"]["inputs"].update(preset="custom", intensity=0.85)  # not cached by another test's run
    node = "2"
    status, body = _post(server, PREVIEW, {"node": "not-run-yet", "texts": [PROMPT], "settings": {}})
    assert status == 200 and body.get("needs_run") and "Queue the graph once" in body["message"]
    result = server.run(graph)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[:3000]
    history_before = len(server.get("/history"))

    def preview(text, **changes):
        return _post(server, PREVIEW, {"node": node, "texts": [text],
                                       "settings": _settings(graph["2"]["inputs"], **changes)})

    status, zero = preview(PROMPT, intensity=0.0)
    assert status == 200, zero
    stream = zero["heatmap"][0]
    assert [w for w, _, _ in stream["words"]] == ["a", "naked", "woman", "on", "a", "beach", ",", "photo"]
    assert len(stream["edits"]) == len(stream["words"]) and all(e == 0 for e in stream["edits"])
    assert zero["preview"] is True and zero["intensity"] == 0.0
    assert "0 edited" in zero["summary"]
    # the random-weight CLIP flags 'naked' in this prompt (as in test_inprocess)
    flagged_text = "naked woman on a beach with blood"
    status, none = preview(flagged_text, intensity=0.0)
    status, full = preview(flagged_text, intensity=3.0)
    assert status == 200, full
    words = [w for w, _, _ in full["heatmap"][0]["words"]]
    edits = dict(zip(words, full["heatmap"][0]["edits"]))
    assert "naked" in [w for w, _, f in none["heatmap"][0]["words"] if f], none
    assert all(e == 0 for e in none["heatmap"][0]["edits"]), "flagged but not edited at intensity 0"
    assert edits["naked"] > 0, full
    assert [s for _, s, _ in full["heatmap"][0]["words"]] == [s for _, s, _ in none["heatmap"][0]["words"]], \
        "the scores do not depend on the intensity"
    status, other = preview("a swimmer at sea", intensity=1.0)
    assert status == 200 and [w for w, _, _ in other["heatmap"][0]["words"]] == ["a", "swimmer", "at", "sea"]
    status, medium = preview(PROMPT, preset="medium", intensity=0.1)
    assert status == 200 and any("preset 'medium' sets the intensity" in n for n in medium["notes"])
    status, bad = preview(PROMPT, intensity=7.0)
    assert status == 422 and "intensity" in bad["error"]
    status, bad = _post(server, PREVIEW, {"node": node, "texts": "not a list"})
    assert status == 422
    assert len(server.get("/history")) == history_before, "the preview queued a prompt"
    assert server.get("/queue")["queue_running"] == []
