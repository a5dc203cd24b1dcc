"""ComfyUI prompt weights ('(naked:1.3)') in the real ComfyUI: the sanitizer scores the unweighted rows, so a
weighted word reads as the word itself, and the edit goes back into the host's weighted rows scaled by the
weight; rows it leaves alone are the host's own, bit for bit."""
from __future__ import annotations

import torch

from tests.comfyui.test_inprocess import encode, entry_of, patch

PLAIN = "naked woman on a beach with blood"
WEIGHTED = "(naked:1.3) woman on a beach with (blood:0.8)"


def _tokens(entry):
    return [(t["position"], t["score"], t["flagged"]) for t in entry["streams"]["clip_l"]["prompts"][0]["tokens"]]


def test_weighted_words_score_as_the_words_themselves(comfy, sd1_clip):
    patched = patch(comfy, sd1_clip)
    plain = entry_of(comfy, encode(comfy, patched, PLAIN))
    weighted = entry_of(comfy, encode(comfy, patched, WEIGHTED))
    assert _tokens(weighted) == _tokens(plain)
    assert [w[:1] + w[2:] for w in weighted["heatmap"][0]["words"]] == [w[:1] + w[2:] for w in plain["heatmap"][0]["words"]]
    assert any(flag for _, _, flag in _tokens(weighted))


def test_the_edit_is_weighted_and_the_other_rows_are_the_hosts(comfy, sd1_clip):
    row_weights = comfy["pack"].nodes.prompt_weights.row_weights
    patched = patch(comfy, sd1_clip)
    host_weighted = encode(comfy, sd1_clip, WEIGHTED)[0][0]
    host_plain = encode(comfy, sd1_clip, PLAIN)[0][0]
    sanitized_plain = encode(comfy, patched, PLAIN)[0][0]
    got = encode(comfy, patched, WEIGHTED)[0][0]
    assert got.shape == host_weighted.shape and got.dtype == host_weighted.dtype
    edited = (sanitized_plain != host_plain).any(-1)[0]
    assert edited.any() and not edited.all()
    assert torch.equal(got[0, ~edited], host_weighted[0, ~edited])
    tokens = patched.tokenize(WEIGHTED)["l"]
    w = row_weights(tokens)[0].unsqueeze(-1)
    expected = host_weighted[0] + w * (sanitized_plain[0] - host_plain[0])
    assert torch.allclose(got[0, edited], expected[edited], atol=1e-4)


def test_intensity_zero_is_the_hosts_weighted_encode(comfy, sd1_clip):
    patched = patch(comfy, sd1_clip, intensity=0.0)
    assert torch.equal(encode(comfy, patched, WEIGHTED)[0][0], encode(comfy, sd1_clip, WEIGHTED)[0][0])


def test_weight_helpers(comfy):
    pw = comfy["pack"].nodes.prompt_weights
    has_weights, reweighted, row_weights, unit_weights = pw.has_weights, pw.reweighted, pw.row_weights, pw.unit_weights

    pairs = [[(1, 1.0), (5, 1.3), (7, 0.8, "extra")]]
    assert has_weights(pairs) and not has_weights(unit_weights(pairs))
    assert unit_weights(pairs) == [[(1, 1.0), (5, 1.0), (7, 1.0, "extra")]]
    assert row_weights(pairs).tolist() == [[1.0, 1.2999999523162842, 0.800000011920929]]
    z, u = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    s = u.clone()
    s[0, 1] += 1.0
    out = reweighted(z, u, s, row_weights(pairs))
    assert torch.equal(out[0, [0, 2]], z[0, [0, 2]])
    assert torch.allclose(out[0, 1], z[0, 1] + 1.3)


def test_sdxl_both_streams_and_the_pooled_vector(comfy):
    """SDXL: both CLIP streams score the weighted prompt as the plain one, and the pooled CLIP-G vector is still
    sanitized."""
    from tests.comfyui import host

    clip = host.build_clip("sdxl")
    patched = patch(comfy, clip)
    plain = entry_of(comfy, encode(comfy, patched, PLAIN))
    out = encode(comfy, patched, WEIGHTED)
    weighted = entry_of(comfy, out)
    assert sorted(weighted["streams"]) == ["clip_g", "clip_l"]
    for stream in ("clip_g", "clip_l"):
        got = [(t["position"], t["score"]) for t in weighted["streams"][stream]["prompts"][0]["tokens"]]
        want = [(t["position"], t["score"]) for t in plain["streams"][stream]["prompts"][0]["tokens"]]
        assert got == want, stream
    host_out = encode(comfy, clip, WEIGHTED)
    assert out[0][0].shape == host_out[0][0].shape
    assert not torch.equal(out[0][1]["pooled_output"], host_out[0][1]["pooled_output"])
