"""The server-wide lock and fail-closed errors in the real ComfyUI (in-process).

``"scope": "server"`` in a locked ``models/embedding_sanitizer/policy.json``: every encode through
``comfy.sd.CLIP`` is sanitized, with or without the pack's nodes in the graph; without such a policy
the class-level hooks change nothing, bit for bit.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

PROMPT = "naked woman on a beach with blood"
NEGATIVE = "bloody gore, nude"
NODE_SETTINGS = dict(enabled=True, mode="safree", preset="custom", intensity=1.0, concepts="naked, blood",
                     weights="auto", detector="fast", eos_policy="project", schedule="off")
SERVER = {"locked": True, "scope": "server", "defaults": {"concepts": "naked, blood"}}


@pytest.fixture
def policy_file(comfy):
    import folder_paths

    folder = Path(folder_paths.models_dir) / "embedding_sanitizer"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "policy.json"

    def write(content):
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    yield write
    path.unlink(missing_ok=True)
    for audit in folder.glob("audit*.jsonl*"):
        audit.unlink()


def encode(comfy, clip, text=PROMPT):
    return comfy["nodes"].CLIPTextEncode().encode(clip, text)[0]


def host_encode(clip, text=PROMPT):
    """ComfyUI's own encode_from_tokens_scheduled, called past the pack's class-level wrapper."""
    import comfy.sd

    original = comfy.sd.CLIP.encode_from_tokens_scheduled.es_server_lock_original
    return original(clip, clip.tokenize(text))


def held(comfy, conditioning):
    return comfy["pack"].nodes.registry.lookup(conditioning[0][0])


def node_patch(comfy, clip, **changes):
    node = comfy["pack"].NODE_CLASS_MAPPINGS["EmbeddingSanitizerCLIP"]()
    return node.patch(clip, unique_id="7", **{**NODE_SETTINGS, **changes})[0]


def same(a, b) -> bool:
    return torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1]["pooled_output"], b[0][1]["pooled_output"])


def test_hooks_are_installed_when_the_pack_loads(comfy):
    from comfy.samplers import CFGGuider
    from comfy.sd import CLIP
    from comfy_execution.caching import CacheKeySetInputSignature

    mark = "es_server_lock_original"
    for method in (CLIP.encode_from_tokens, CLIP.encode_from_tokens_scheduled,
                   CFGGuider.sample, CacheKeySetInputSignature.get_immediate_node_signature):
        assert hasattr(method, mark), method


def test_without_a_server_policy_the_hooks_are_bit_exact(comfy, sd1_clip, policy_file):
    plain = host_encode(sd1_clip)
    out = encode(comfy, sd1_clip)
    assert same(out, plain) and held(comfy, out) is None
    skipped = comfy["nodes"].CLIPSetLastLayer().set_last_layer(sd1_clip, -2)[0]
    assert same(encode(comfy, skipped), host_encode(skipped))
    policy_file({"locked": True, "min_intensity": 1.0})  # a lock of scope graph covers the nodes only
    out = encode(comfy, sd1_clip)
    assert same(out, plain) and held(comfy, out) is None


def test_server_scope_sanitizes_a_graph_without_the_node(comfy, sd1_clip, policy_file):
    plain = host_encode(sd1_clip)
    attributes = dict(vars(sd1_clip))
    policy_file(SERVER)
    out = encode(comfy, sd1_clip)
    assert not torch.equal(out[0][0], plain[0][0]) and out[0][0].shape == plain[0][0].shape
    assert torch.equal(out[0][0][0, 0], plain[0][0][0, 0]), "BOS row changed"
    found = held(comfy, out)
    assert found["server"] and found["entry"]["family"] == "sd1"
    assert any(n.startswith("server-wide lock") for n in found["entry"]["notes"])
    assert "naked" in [w for w, _, f in found["entry"]["heatmap"][0]["words"] if f]
    assert vars(sd1_clip) == attributes, "the host's CLIP was modified"
    assert type(sd1_clip.cond_stage_model).__name__ == "SD1ClipModel"
    # the same sanitization as the node under the same lock (scope graph)
    policy_file({"locked": True, "defaults": {"concepts": "naked, blood"}})
    by_node = encode(comfy, node_patch(comfy, sd1_clip))
    assert torch.equal(by_node[0][0], out[0][0])
    # clones, CLIPSetLastLayer and encode_from_tokens (used by e.g. unCLIP and PhotoMaker nodes) are covered
    path = policy_file(SERVER)
    skipped = comfy["nodes"].CLIPSetLastLayer().set_last_layer(sd1_clip.clone(), -2)[0]
    assert held(comfy, encode(comfy, skipped))["server"]
    cond, pooled = sd1_clip.encode_from_tokens(sd1_clip.tokenize(PROMPT), return_pooled=True)
    assert torch.equal(cond, out[0][0])
    path.unlink()
    assert same(encode(comfy, sd1_clip), plain), "removing the policy restores the host's encode"


def test_server_scope_covers_sdxl(comfy, policy_file):
    from tests.comfyui import host

    clip = host.build_clip("sdxl")
    plain = host_encode(clip)
    policy_file(SERVER)
    out = encode(comfy, clip)
    assert out[0][0].shape == plain[0][0].shape and not torch.equal(out[0][0], plain[0][0])
    assert not torch.equal(out[0][1]["pooled_output"], plain[0][1]["pooled_output"])
    assert sorted(held(comfy, out)["entry"]["streams"]) == ["clip_g", "clip_l"]


def test_node_under_the_server_lock_is_not_sanitized_twice(comfy, sd1_clip, policy_file):
    policy_file({"locked": True, "defaults": {"concepts": "naked, blood"}})
    patched_graph_scope = encode(comfy, node_patch(comfy, sd1_clip))
    policy_file(SERVER)
    out = encode(comfy, node_patch(comfy, sd1_clip))
    found = held(comfy, out)
    assert "server" not in found and found["patch"].node_id == "7"
    assert torch.equal(out[0][0], patched_graph_scope[0][0])


def test_broken_policy_fails_every_encode(comfy, sd1_clip, policy_file):
    from embedding_sanitizer import SettingsError

    policy_file("{not json")
    with pytest.raises(SettingsError, match="policy.json"):
        encode(comfy, sd1_clip)
    policy_file({"locked": True, "scope": "everywhere"})
    with pytest.raises(SettingsError, match="scope"):
        encode(comfy, sd1_clip)


def test_sanitizer_errors_fail_closed_or_pass_open(comfy, sd1_clip, policy_file, caplog):
    plain = host_encode(sd1_clip)
    policy_file({**SERVER, "forced_mode": "es", "defaults": {"weights": "none"}})
    with pytest.raises(ValueError, match="calibrated weights"):
        encode(comfy, sd1_clip)
    policy_file({**SERVER, "forced_mode": "es", "defaults": {"weights": "none"}, "on_error": "open"})
    with caplog.at_level(logging.WARNING, logger="embedding_sanitizer.comfyui"):
        out = encode(comfy, sd1_clip)
    assert same(out, plain)
    assert "on_error: open" in caplog.text


def test_uncovered_text_encoder_fails_closed_under_a_lock(comfy, policy_file):
    proxy = comfy["pack"].nodes.proxy
    admin_policy = comfy["pack"].nodes.policy
    from embedding_sanitizer import Settings

    class OtherTextModel:
        def encode_token_weights(self, tokens):
            return torch.ones(1, 77, 8), None

    policy_file({"locked": True})
    locked = admin_policy.current_policy()
    wrapped = proxy.SanitizedTextModel(OtherTextModel(), None, proxy.Patch(Settings(), policy=locked))
    with pytest.raises(admin_policy.PolicyRefusal, match="OtherTextModel is not covered"):
        wrapped.encode_token_weights({"x": []})
    policy_file({"locked": True, "on_error": "open"})
    opened = admin_policy.current_policy()
    wrapped = proxy.SanitizedTextModel(OtherTextModel(), None, proxy.Patch(Settings(), policy=opened))
    assert torch.equal(wrapped.encode_token_weights({"x": []})[0], torch.ones(1, 77, 8))


def test_node_settings_under_a_lock(comfy, sd1_clip, policy_file):
    from embedding_sanitizer import SettingsError

    policy_file({"locked": True})
    with pytest.raises(SettingsError, match="admin policy .* is in force"):
        node_patch(comfy, sd1_clip, intensity=9.0)
    policy_file({"locked": True, "on_error": "open"})
    assert node_patch(comfy, sd1_clip, intensity=9.0) is sd1_clip  # passed through, with a warning
    conditioning = encode(comfy, sd1_clip)
    node = comfy["pack"].NODE_CLASS_MAPPINGS["EmbeddingSanitizerConditioning"]()
    out = node.sanitize(conditioning, sd1_clip, text=PROMPT, unique_id="9", **{**NODE_SETTINGS, "mode": "bogus"})
    assert out["result"][0] is conditioning
    assert "passed through" in json.loads(out["result"][2])["notes"][0]


class _Patcher:
    model_options: dict = {}


def test_negative_follows_sanitize_negative(comfy, sd1_clip, policy_file):
    from comfy.samplers import CFGGuider

    negative = comfy["pack"].nodes.negative
    server_patch = comfy["pack"].nodes.server_lock.server_patch
    plain_negative = host_encode(sd1_clip, NEGATIVE)
    policy_file(SERVER)
    positive, negative_cond = encode(comfy, sd1_clip), encode(comfy, sd1_clip, NEGATIVE)
    assert not torch.equal(negative_cond[0][0], plain_negative[0][0]), "the encode itself is sanitized"
    guider = CFGGuider(_Patcher())
    guider.set_conds(positive, negative_cond)
    guider.set_cfg(7.0)
    before = {k: [(id(d), id(d["cross_attn"])) for d in v] for k, v in guider.original_conds.items()}
    view = negative.with_original_negative(guider, CFGGuider, server_patch)
    assert view is not guider
    after = {k: [(id(d), id(d["cross_attn"])) for d in v] for k, v in guider.original_conds.items()}
    assert after == before, "the host's guider and its conds are left as they were"
    restored = view.original_conds["negative"][0]
    assert torch.equal(restored["cross_attn"], plain_negative[0][0])
    assert torch.equal(restored["pooled_output"], plain_negative[0][1]["pooled_output"])
    assert view.original_conds["positive"][0]["cross_attn"] is positive[0][0], "the positive stays sanitized"
    guider.set_cfg(0.5)  # below 1 the negative pulls the image towards itself: stays sanitized
    assert negative.with_original_negative(guider, CFGGuider, server_patch) is None
    guider.set_cfg(7.0)
    policy_file({**SERVER, "defaults": {"concepts": "naked, blood", "sanitize_negative": True}})
    assert negative.with_original_negative(guider, CFGGuider, server_patch) is None


def test_audit_line_per_encode(comfy, sd1_clip, policy_file):
    from comfy_execution.utils import CurrentNodeContext

    from embedding_sanitizer.audit import close_all

    path = policy_file({**SERVER, "audit": {"path": "audit.jsonl", "store_prompt": "text"}})
    with CurrentNodeContext("prompt-123", "6"):
        encode(comfy, sd1_clip)
    encode(comfy, node_patch(comfy, sd1_clip))
    close_all()
    lines = [json.loads(line) for line in (path.parent / "audit.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["host"] == "comfyui" and first["request_id"] == "prompt-123" and second["request_id"] is None
    assert first["prompts"][0]["text"] == PROMPT
    assert "naked" in [t["token"].replace("</w>", "") for t in first["prompts"][0]["flagged"]]
    assert first["prompts"][0]["rows_edited"] > 0 and first["prompts"][0]["max_weight"] > 0
    assert first["settings"]["concepts"] == "naked, blood" and first["settings"]["required_concepts"]
    assert any(n.startswith("server-wide lock") for n in first["notes"])
