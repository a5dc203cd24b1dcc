"""What the heatmap widget is sent, in-process in the real ComfyUI: edit weights that follow the intensity, the
notes (admin policy) and what was not covered in the CLIP node's push and in Sanitize Conditioning's ui, and the
live preview's work (``nodes/preview.py``) for a node that has run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.comfyui.test_inprocess import PROMPT, SETTINGS, encode, entry_of, patch


def _words(view):
    return [w for w, _, _ in view["words"]]


def test_edit_weights_follow_the_intensity(comfy, sd1_clip):
    zero = entry_of(comfy, encode(comfy, patch(comfy, sd1_clip, intensity=0.0)))["heatmap"][0]
    full = entry_of(comfy, encode(comfy, patch(comfy, sd1_clip, intensity=1.0)))["heatmap"][0]
    assert _words(zero) == _words(full) == ["naked", "woman", "on", "a", "beach", "with", "blood"]
    assert len(zero["edits"]) == len(zero["words"]) and all(e == 0 for e in zero["edits"])
    assert "naked" in [w for w, _, f in zero["words"] if f], "flagged at intensity 0, but not edited"
    edits = dict(zip(_words(full), full["edits"]))
    assert edits["naked"] > 0 and all(0 <= e <= 1 for e in full["edits"])
    assert [s for _, s, _ in zero["words"]] == [s for _, s, _ in full["words"]]


def test_push_and_ui_carry_policy_notes_and_not_covered(comfy, sd1_clip, monkeypatch):
    import folder_paths

    pushed = []
    monkeypatch.setattr(comfy["pack"].nodes.registry, "push", pushed.append)
    folder = Path(folder_paths.models_dir) / "embedding_sanitizer"
    folder.mkdir(parents=True, exist_ok=True)
    policy = folder / "policy.json"
    try:
        policy.write_text(json.dumps({"locked": True, "min_intensity": 1.0}))
        clip = patch(comfy, sd1_clip, intensity=0.0)
        encode(comfy, clip)
        payload = pushed[-1]
        assert payload["node"] == "7" and payload["intensity"] == 1.0
        assert any("policy floor" in n for n in payload["notes"]), payload["notes"]
        assert any("pooled_output" in n for n in payload["not_covered"]), payload["not_covered"]
        assert "edited" in payload["summary"] and payload["heatmap"][0]["edits"]
        node = comfy["pack"].NODE_CLASS_MAPPINGS["EmbeddingSanitizerConditioning"]()
        plain = encode(comfy, sd1_clip)
        out = node.sanitize(plain, sd1_clip, text=PROMPT, unique_id="9", **{**SETTINGS, "intensity": 0.0})
        ui = out["ui"]["es_heatmap"][0]
        assert ui["node"] == "9" and any("policy floor" in n for n in ui["notes"])
        assert any("pooled_output" in n for n in ui["not_covered"])
    finally:
        policy.unlink(missing_ok=True)


def test_preview_rescores_for_a_node_that_ran(comfy, sd1_clip, monkeypatch):
    preview = comfy["pack"].nodes.preview
    pushed = []
    monkeypatch.setattr(comfy["pack"].nodes.registry, "push", pushed.append)
    status, body = preview.preview({"node": "never-ran", "texts": [PROMPT], "settings": SETTINGS})
    assert status == 200 and body["needs_run"]
    patch(comfy, sd1_clip)  # the node runs: it remembers its CLIP under its id "7"
    settings = {**SETTINGS, "intensity": 0.0, "weights": "auto-calibrate"}
    status, zero = preview.preview({"node": "7", "texts": [PROMPT], "settings": settings})
    assert status == 200 and zero["preview"], zero
    assert _words(zero["heatmap"][0]) == PROMPT.split() and not any(zero["heatmap"][0]["edits"])
    assert not any("calibrat" in n for n in zero["notes"]), "a preview never starts a calibration"
    status, full = preview.preview({"node": "7", "texts": [PROMPT, "a swimmer"], "settings": {**settings,
                                                                                            "intensity": 2.0}})
    assert status == 200 and [_words(h) for h in full["heatmap"]] == [PROMPT.split(), ["a", "swimmer"]]
    assert dict(zip(PROMPT.split(), full["heatmap"][0]["edits"]))["naked"] > 0
    status, off = preview.preview({"node": "7", "texts": [PROMPT], "settings": {**settings, "mode": "off"}})
    assert status == 200 and any(s > 0 for _, s, _ in off["heatmap"][0]["words"]), "scores shown with mode off"
    assert not any(off["heatmap"][0]["edits"])
    status, es = preview.preview({"node": "7", "texts": [PROMPT], "settings": {**settings, "mode": "es",
                                                                               "weights": "none"}})
    assert status == 422 and "es" in es["error"]
    for bad in ({"node": "7", "texts": "x"}, {"node": "7", "texts": ["x"] * 9}, {"texts": ["x"]},
                {"node": "7", "texts": ["x"], "settings": {"intensity": 9}}, ["not", "an", "object"]):
        assert preview.preview(bad)[0] == 422, bad
    assert not pushed, "a preview pushes nothing to the page"


@pytest.fixture(autouse=True)
def _no_policy_left(comfy):
    yield
    import folder_paths

    assert not (Path(folder_paths.models_dir) / "embedding_sanitizer" / "policy.json").exists()
