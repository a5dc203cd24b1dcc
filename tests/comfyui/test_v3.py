"""The V3 nodes (``comfy_api.latest``) on the real ComfyUI 0.3.75: the same schema as the V1 classes, and
the example graph run by a server that loaded the pack with ``EMBEDDING_SANITIZER_V3=1``."""
from __future__ import annotations

import importlib
import json

import pytest

from tests.comfyui import server as server_support
from tests.comfyui.test_server import tiny_graph

KEYS = ("default", "min", "max", "step", "display", "multiline", "tooltip")


def summary(spec: dict) -> dict:
    out = {}
    for group in ("required", "optional"):
        for name, value in spec.get(group, {}).items():
            options = value[1] if len(value) > 1 else {}
            kind = value[0] if isinstance(value[0], str) else ("COMBO", tuple(value[0]))
            if kind == "COMBO":  # the V3 combo carries its options in the dict
                kind = ("COMBO", tuple(options.get("options", ())))
            out[name] = (group, kind, tuple((k, options.get(k)) for k in KEYS if options.get(k) is not None and options.get(k) is not False))
    return out


def test_v3_schema_matches_the_v1_classes(comfy):
    v3 = importlib.import_module(comfy["pack"].__name__ + ".nodes.v3")
    assert v3.available()
    classes = {cls.GET_SCHEMA().node_id: cls for cls in v3.node_list()}
    assert sorted(classes) == sorted(comfy["pack"].NODE_CLASS_MAPPINGS)
    for node_id, v1 in comfy["pack"].NODE_CLASS_MAPPINGS.items():
        cls = classes[node_id]
        assert summary(cls.INPUT_TYPES()) == summary(v1.INPUT_TYPES()), node_id
        info = cls.GET_NODE_INFO_V1()
        assert tuple(info["output"]) == v1.RETURN_TYPES and tuple(info["output_name"]) == v1.RETURN_NAMES
        assert info["description"] == v1.DESCRIPTION and info["category"] == v1.CATEGORY
        assert info["output_node"] == bool(getattr(v1, "OUTPUT_NODE", False))


@pytest.fixture(scope="module")
def v3_server(comfy_root, torchvision_placeholder, tiny_checkpoint, tmp_path_factory):
    base = tmp_path_factory.mktemp("v3_server_base")
    mp = pytest.MonkeyPatch()
    mp.setenv("EMBEDDING_SANITIZER_V3", "1")
    try:
        running = server_support.start(comfy_root, torchvision_placeholder, base, tiny_checkpoint)
    finally:
        mp.undo()
    yield running
    running.stop()


def test_v3_server_runs_the_example_and_marks_the_sanitizer_node(v3_server, tiny_checkpoint):
    info = v3_server.get("/object_info/EmbeddingSanitizerCLIP")["EmbeddingSanitizerCLIP"]
    assert info["display_name"] == "Embedding Sanitizer (CLIP)"
    assert info["input"]["required"]["intensity"][1]["display"] == "slider"
    assert "nodes offered in the V3 schema" in v3_server.log(), v3_server.log()
    graph = tiny_graph(tiny_checkpoint.name)
    graph["5"]["inputs"]["preset"] = "max"
    result = v3_server.run(graph)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[:3000]
    words = [w for w, _, _ in result["outputs"]["5"]["es_heatmap"][0]["heatmap"][0]["words"]]
    assert words == ["a", "naked", "woman", "on", "a", "beach", ",", "photo"]
    graph["2"]["inputs"]["concepts"] = " , "
    result = v3_server.run(graph)
    errors = [m[1] for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_id"] == "2" and "concept list is empty" in errors[0]["exception_message"]
