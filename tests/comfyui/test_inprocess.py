"""The node pack inside the real ComfyUI (in-process): real CLIP objects, real encode nodes."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

PROMPT = "naked woman on a beach with blood"
SETTINGS = dict(enabled=True, mode="safree", preset="custom", intensity=1.0, concepts="naked, blood",
                weights="auto", detector="fast", eos_policy="project", schedule="off")


def patch(comfy, clip, **changes):
    node = comfy["pack"].NODE_CLASS_MAPPINGS["EmbeddingSanitizerCLIP"]()
    return node.patch(clip, unique_id="7", **{**SETTINGS, **changes})[0]


def encode(comfy, clip, text=PROMPT):
    return comfy["nodes"].CLIPTextEncode().encode(clip, text)[0]


def entry_of(comfy, conditioning):
    found = comfy["pack"].nodes.registry.lookup(conditioning[0][0])
    assert found is not None, "the encode did not go through the sanitizer"
    return found["entry"]


def test_pack_registered_by_comfyui_loader(comfy):
    import folder_paths

    mappings = comfy["nodes"].NODE_CLASS_MAPPINGS
    for node_id in ("EmbeddingSanitizerCLIP", "EmbeddingSanitizerConditioning", "EmbeddingSanitizerCalibrate"):
        assert node_id in mappings
        cls = mappings[node_id]
        assert cls.CATEGORY.startswith("safety/embedding_sanitizer") and cls.DESCRIPTION
        spec = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            for name, value in spec.get(group, {}).items():
                assert len(value) == 2 and value[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert "embedding_sanitizer" in folder_paths.folder_names_and_paths
    intensity = mappings["EmbeddingSanitizerCLIP"].INPUT_TYPES()["required"]["intensity"]
    assert intensity[0] == "FLOAT" and intensity[1]["display"] == "slider"


def test_sd1_patch_sanitizes_and_leaves_original_untouched(comfy, sd1_clip):
    plain_before = encode(comfy, sd1_clip)
    patched = patch(comfy, sd1_clip)
    assert patched is not sd1_clip and sd1_clip.cond_stage_model is not patched.cond_stage_model
    sanitized = encode(comfy, patched)
    plain_after = encode(comfy, sd1_clip)
    assert torch.equal(plain_before[0][0], plain_after[0][0])
    assert comfy["pack"].nodes.registry.lookup(plain_after[0][0]) is None
    cond = sanitized[0][0]
    assert cond.shape == plain_before[0][0].shape == (1, 77, 768) and cond.dtype == torch.float32
    assert torch.equal(cond[0, 0], plain_before[0][0][0, 0]), "BOS row changed"
    assert not torch.equal(cond, plain_before[0][0])
    assert torch.equal(sanitized[0][1]["pooled_output"], plain_before[0][1]["pooled_output"])
    entry = entry_of(comfy, sanitized)
    assert entry["family"] == "sd1" and list(entry["streams"]) == ["clip_l"]
    words = [w for w, _, _ in entry["heatmap"][0]["words"]]
    assert words == ["naked", "woman", "on", "a", "beach", "with", "blood"]
    flagged = [w for w, _, f in entry["heatmap"][0]["words"] if f]
    assert "naked" in flagged
    assert any("pooled_output" in n for n in entry["not_covered"])
    json.dumps(entry["streams"])


def test_leave_one_out_detector(comfy, sd1_clip):
    out = encode(comfy, patch(comfy, sd1_clip, detector="loo"))
    plain = encode(comfy, sd1_clip)
    assert out[0][0].shape == plain[0][0].shape
    assert "projection detector: loo" in entry_of(comfy, out)["streams"]["clip_l"]["notes"]


def test_intensity_zero_is_identity(comfy, sd1_clip):
    plain = encode(comfy, sd1_clip)
    for changes in ({"intensity": 0.0}, {"enabled": False}, {"mode": "off"}):
        out = encode(comfy, patch(comfy, sd1_clip, **changes))
        assert torch.equal(out[0][0], plain[0][0]), changes


def test_patch_survives_clone_and_clip_set_last_layer(comfy, sd1_clip):
    nodes = comfy["nodes"]
    patched = patch(comfy, sd1_clip)
    skipped = nodes.CLIPSetLastLayer().set_last_layer(patched, -2)[0]
    out = encode(comfy, skipped)
    plain_skipped = encode(comfy, nodes.CLIPSetLastLayer().set_last_layer(sd1_clip, -2)[0])
    assert not torch.equal(out[0][0], plain_skipped[0][0])
    assert entry_of(comfy, out)["streams"]["clip_l"]
    cloned = patched.clone()
    assert entry_of(comfy, encode(comfy, cloned))


def test_multi_chunk_prompt(comfy, sd1_clip):
    text = ", ".join(["a quiet harbour at dawn with fishing boats"] * 12) + ", naked swimmer"
    out = encode(comfy, patch(comfy, sd1_clip), text)
    plain = encode(comfy, sd1_clip, text)
    assert out[0][0].shape == plain[0][0].shape and out[0][0].shape[1] % 77 == 0 and out[0][0].shape[1] >= 154
    for chunk_start in range(0, out[0][0].shape[1], 77):
        assert torch.equal(out[0][0][0, chunk_start], plain[0][0][0, chunk_start])
    entry = entry_of(comfy, out)
    assert entry["heatmap"][0]["words"][-1][0] == "swimmer"


def test_textual_inversion_tokens(comfy, sd1_clip):
    patched = patch(comfy, sd1_clip)
    tokens = patched.tokenize("a photo of naked cat")
    vector = torch.randn(768) * 0.02
    tokens["l"][0][3] = (vector, 1.0)  # what ComfyUI puts for an `embedding:` token
    out = patched.encode_from_tokens_scheduled(tokens)
    plain = sd1_clip.encode_from_tokens_scheduled(copy.deepcopy(tokens))
    assert out[0][0].shape == plain[0][0].shape
    entry = entry_of(comfy, out)
    assert "<embedding>" in [w for w, _, _ in entry["heatmap"][0]["words"]]


def test_weighted_prompt(comfy, sd1_clip):
    out = encode(comfy, patch(comfy, sd1_clip), "a (naked:1.3) woman")
    assert out[0][0].shape == (1, 77, 768)
    assert [w for w, _, _ in entry_of(comfy, out)["heatmap"][0]["words"]] == ["a", "naked", "woman"]


@pytest.mark.parametrize("kind, width, streams", [
    ("sdxl", 2048, ["clip_l", "clip_g"]),
    ("sd3", 4096, ["clip_l", "clip_g", "t5xxl"]),
    ("flux", 256, ["clip_l", "t5xxl"]),
])
def test_other_families(comfy, kind, width, streams):
    from tests.comfyui import host

    clip = host.build_clip(kind)
    patched = patch(comfy, clip, mode="es+safree")
    out = encode(comfy, patched)
    plain = encode(comfy, clip)
    assert out[0][0].shape == plain[0][0].shape and out[0][0].shape[-1] == width
    entry = entry_of(comfy, out)
    assert sorted(entry["streams"]) == sorted(streams)
    assert not any("pooled" in n for n in entry["not_covered"]), "the pooled vector is covered"
    assert sorted(entry["pooled"]) == sorted({"sdxl": ["clip_g"], "sd3": ["clip_l", "clip_g"],
                                              "flux": ["clip_l"]}[kind])
    assert all("t5xxl" in n for n in entry["not_covered"])
    assert not torch.equal(out[0][0], plain[0][0])
    zero = encode(comfy, patch(comfy, clip, intensity=0.0))
    assert torch.equal(zero[0][0], plain[0][0])
    if kind == "sdxl":  # each half sanitized with its own layout; BOS rows kept in both halves
        assert torch.equal(out[0][0][0, 0], plain[0][0][0, 0])


SAFE_PROMPT = "mountain lake at dawn"


@pytest.mark.parametrize("kind, stream", [("sdxl", "clip_g"), ("flux", "clip_l")])
def test_pooled_vector_sanitized(comfy, kind, stream):
    from tests.comfyui import host

    clip = host.build_clip(kind, seed=1)
    plain = encode(comfy, clip)
    out = encode(comfy, patch(comfy, clip))
    pooled, plain_pooled = out[0][1]["pooled_output"], plain[0][1]["pooled_output"]
    assert pooled.shape == plain_pooled.shape and pooled.dtype == plain_pooled.dtype
    assert not torch.equal(pooled, plain_pooled)
    assert torch.equal(plain_pooled, encode(comfy, clip)[0][1]["pooled_output"]), "the host's pooled is untouched"
    found = comfy["pack"].nodes.registry.lookup(out[0][0])
    entry, record = found["entry"], found["record"]
    assert entry["pooled"][stream]["changed"] and entry["pooled"][stream]["weight"] > 0
    assert any(n.startswith(f"{stream} pooled: sanitized with weight") for n in entry["notes"])
    assert not any("pooled" in n for n in entry["not_covered"])
    assert "pooled" in entry["summary"]
    # host_pooled is the host's own pooled output: the prompt's one is what ComfyUI returned
    encoder = next(r.encoder for r in record.streams if r.stream == stream)
    assert torch.allclose(encoder.host_pooled([PROMPT]), plain_pooled.float().cpu(), atol=1e-5)
    # the concept span's part of the pooled vector shrinks
    from embedding_sanitizer.pooled import DEFAULT_POOLED_CACHE

    sub = DEFAULT_POOLED_CACHE.get(encoder.pooled_key, encoder.host_pooled, ("naked", "blood"))
    inside = lambda v: float(((v.detach().float() - sub.center) @ sub.basis).norm())  # noqa: E731
    assert inside(pooled) < inside(plain_pooled)
    # intensity 0: bit-identical, and a new tensor
    zero = encode(comfy, patch(comfy, clip, intensity=0.0))
    assert torch.equal(zero[0][1]["pooled_output"], plain_pooled)
    assert zero[0][1]["pooled_output"] is not plain_pooled
    assert entry_of(comfy, zero)["pooled"][stream] == {"weight": 0.0, "changed": False}
    # a prompt with nothing flagged keeps its pooled vector bit for bit
    safe = encode(comfy, patch(comfy, clip), SAFE_PROMPT)
    safe_entry = entry_of(comfy, safe)
    assert not any(f for h in safe_entry["heatmap"] for _, _, f in h["words"])
    assert safe_entry["pooled"][stream] == {"weight": 0.0, "changed": False}
    assert torch.equal(safe[0][1]["pooled_output"], encode(comfy, clip, SAFE_PROMPT)[0][1]["pooled_output"])
    # Sanitize Conditioning hands on the cleaned pooled vector too (and the original for svf's late steps)
    cond = sanitize_node(comfy, plain, clip, text=PROMPT)["result"][0]
    assert torch.allclose(cond[0][1]["pooled_output"], pooled, atol=1e-5)
    early, late = sanitize_node(comfy, plain, clip, text=PROMPT, schedule="svf")["result"][0]
    assert torch.allclose(early[1]["pooled_output"], pooled, atol=1e-5)
    assert torch.equal(late[1]["pooled_output"], plain_pooled)


def test_unknown_family_passes_through_with_note(comfy, caplog):
    proxy = comfy["pack"].nodes.proxy
    from embedding_sanitizer import Settings

    class OtherTextModel:
        def encode_token_weights(self, tokens):
            return torch.ones(1, 77, 8), None

    wrapped = proxy.SanitizedTextModel(OtherTextModel(), None, proxy.Patch(Settings()))
    out = wrapped.encode_token_weights({"x": []})
    assert torch.equal(out[0], torch.ones(1, 77, 8))
    entry = comfy["pack"].nodes.registry.lookup(out[0])["entry"]
    assert entry["family"] is None and "not covered" in " ".join(entry["notes"])


def test_nan_embeddings_give_a_clear_error(comfy):
    from tests.comfyui import host

    clip = host.build_clip("sd1")
    with torch.no_grad():
        clip.cond_stage_model.clip_l.transformer.text_model.final_layer_norm.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        encode(comfy, patch(comfy, clip))


def test_es_mode_without_weights_is_a_clear_error(comfy, sd1_clip):
    with pytest.raises(ValueError, match="calibrated weights"):
        encode(comfy, patch(comfy, sd1_clip, mode="es", weights="none"))


def test_es_weights_with_a_whole_prompt_detector(comfy, sd1_clip):
    """Weights made for this CLIP (as the Calibrate node saves them) give the heatmap a whole-prompt score."""
    import folder_paths

    from embedding_sanitizer.es_model import ESConfig, EmbeddingSanitizerNet
    from embedding_sanitizer.weights_io import save_es

    out = encode(comfy, patch(comfy, sd1_clip))
    encoder = comfy["pack"].nodes.registry.lookup(out[0][0])["record"].streams[0].encoder
    torch.manual_seed(0)
    net = EmbeddingSanitizerNet(ESConfig(width=encoder.width, hidden=16, layers=1, heads=2, prompt_pooling="eos"))
    with torch.no_grad():
        net.prompt_direction.normal_()
        net.prompt_platt.copy_(torch.tensor([1.0, 0.0]))
    folder = Path(folder_paths.get_folder_paths("embedding_sanitizer")[0])
    path = save_es(folder / "es-test-detector.safetensors", net, encoder_name=encoder.name,
                   encoder_fingerprint=encoder.fingerprint, layout=encoder.layout.to_dict(), concepts=["nudity"])
    try:
        out = encode(comfy, patch(comfy, sd1_clip, mode="es", weights=path.name))
        entry = entry_of(comfy, out)
        view = entry["heatmap"][0]
        assert 0.0 <= view["prompt_score"] <= 1.0
        assert f"whole prompt {view['prompt_score']:.2f}" in entry["summary"]
        assert entry["streams"]["clip_l"]["prompts"][0]["prompt_score"] == view["prompt_score"]
    finally:
        path.unlink()


def test_replay_view_never_writes_onto_the_host_model(comfy):
    view_class = comfy["pack"].nodes.proxy._View

    class Family:
        clip_l = "host stream"
        layer = "last"

    inner = Family()
    view = view_class(inner, {"clip_l": "sanitized stream"})
    assert view.clip_l == "sanitized stream" and view.layer == "last"
    view.layer = "hidden"  # what a family's encode could do while it runs
    assert view.layer == "hidden" and inner.layer == "last" and Family.layer == "last"


def test_bad_settings_are_refused(comfy, sd1_clip):
    with pytest.raises(ValueError, match="intensity"):
        patch(comfy, sd1_clip, intensity=7.0)


def sanitize_node(comfy, conditioning, clip, text="", **changes):
    node = comfy["pack"].NODE_CLASS_MAPPINGS["EmbeddingSanitizerConditioning"]()
    return node.sanitize(conditioning, clip, text=text, unique_id="9", **{**SETTINGS, **changes})


def test_sanitize_conditioning_with_text(comfy, sd1_clip):
    plain = encode(comfy, sd1_clip)
    snapshot = [[c.clone(), {k: (v.clone() if torch.is_tensor(v) else v) for k, v in d.items()}] for c, d in plain]
    out = sanitize_node(comfy, plain, sd1_clip, text=PROMPT)
    conditioning, image, report = out["result"]
    assert conditioning is not plain and conditioning[0][1] is not plain[0][1]
    assert torch.equal(plain[0][0], snapshot[0][0]) and plain[0][1].keys() == snapshot[0][1].keys()
    assert not torch.equal(conditioning[0][0], plain[0][0])
    assert image.dim() == 4 and image.shape[0] == 1 and image.shape[-1] == 3 and image.shape[2] == 768
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    parsed = json.loads(report)
    assert parsed["entries"][0]["streams"]["clip_l"]["prompts"][0]["flagged"] >= 1
    heat = out["ui"]["es_heatmap"][0]["heatmap"][0]["words"]
    assert heat[0][0] == "naked" and heat[0][2] is True
    same_as_patch = encode(comfy, patch(comfy, sd1_clip))
    assert torch.allclose(conditioning[0][0], same_as_patch[0][0], atol=1e-5)


def test_sanitize_conditioning_schedule_and_patched_input(comfy, sd1_clip):
    patched_cond = encode(comfy, patch(comfy, sd1_clip))
    out = sanitize_node(comfy, patched_cond, sd1_clip, schedule="svf")
    conditioning = out["result"][0]
    assert len(conditioning) == 2
    early, late = conditioning
    assert early[1]["start_percent"] == 0.0 and 0.0 < early[1]["end_percent"] <= 1.0
    assert late[1]["start_percent"] == early[1]["end_percent"] and late[1]["end_percent"] == 1.0
    assert "start_percent" not in patched_cond[0][1]
    plain = encode(comfy, sd1_clip)
    assert torch.allclose(late[0], plain[0][0], atol=1e-5)


def test_sanitize_conditioning_refuses_unknown_conditioning(comfy, sd1_clip):
    plain = encode(comfy, sd1_clip)
    with pytest.raises(ValueError, match="prompt text"):
        sanitize_node(comfy, plain, sd1_clip)
    with pytest.raises(ValueError, match="does not match"):
        sanitize_node(comfy, plain, sd1_clip, text="a completely different prompt")


def test_calibrate_node_reports_missing_training_module(comfy, sd1_clip, monkeypatch):
    import sys

    node = comfy["pack"].NODE_CLASS_MAPPINGS["EmbeddingSanitizerCalibrate"]()
    monkeypatch.setitem(sys.modules, "embedding_sanitizer.train", None)
    with pytest.raises(RuntimeError, match="calibration module"):
        node.calibrate(sd1_clip, "nudity")


def test_admin_policy_file_locks_the_nodes(comfy, sd1_clip):
    import folder_paths

    plain = encode(comfy, sd1_clip)
    folder = Path(folder_paths.models_dir) / "embedding_sanitizer"
    folder.mkdir(parents=True, exist_ok=True)
    policy = folder / "policy.json"
    clip_node = comfy["pack"].NODE_CLASS_MAPPINGS["EmbeddingSanitizerCLIP"]
    before = clip_node.IS_CHANGED(**SETTINGS)
    try:
        policy.write_text(json.dumps({"locked": True, "min_intensity": 1.0, "required_concepts": ["naked"]}))
        assert clip_node.IS_CHANGED(**SETTINGS) != before, "a new policy re-runs the nodes"
        for changes in ({"intensity": 0.0}, {"mode": "off"}, {"enabled": False, "concepts": "blood"}):
            out = encode(comfy, patch(comfy, sd1_clip, **changes))
            assert not torch.equal(out[0][0], plain[0][0]), changes
            entry = entry_of(comfy, out)
            assert any(n.startswith("admin policy (models/embedding_sanitizer/policy.json)") for n in entry["notes"])
            assert entry["settings"]["enabled"] and entry["settings"]["mode"] != "off"
            assert entry["settings"]["intensity"] >= 1.0 and "naked" in entry["settings"]["required_concepts"]
        result = sanitize_node(comfy, plain, sd1_clip, text=PROMPT, intensity=0.0, mode="off")["result"]
        assert not torch.equal(result[0][0][0], plain[0][0])
        notes = json.loads(result[2])["entries"][0]["notes"]
        assert any("mode forced to 'safree' by policy" in n for n in notes)
        assert any("intensity raised to the policy floor 1.0" in n for n in notes)
        policy.write_text("{not json")  # a broken policy fails closed
        with pytest.raises(ValueError, match="policy.json"):
            patch(comfy, sd1_clip, intensity=0.0)
        policy.write_text(json.dumps({"locked": False}))  # present but unlocked: the graph decides
        assert torch.equal(encode(comfy, patch(comfy, sd1_clip, intensity=0.0))[0][0], plain[0][0])
    finally:
        policy.unlink(missing_ok=True)
    assert torch.equal(encode(comfy, patch(comfy, sd1_clip, mode="off"))[0][0], plain[0][0])
