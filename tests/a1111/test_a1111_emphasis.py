"""Emphasis syntax and the webui's emphasis rescale, in A1111's text model and Forge's engine.

Both hosts multiply the weighted rows, then rescale the chunk batch by ``original mean / new mean``;
with a random-weight checkpoint (rows of mean near 0) that ratio is far from 1. Generation and the
live heatmap must agree, and the scores, flags and edits must not depend on the rescale.
"""
from __future__ import annotations

import pytest
import torch

from tests.a1111.test_a1111_generation import args_for, clean, generate, host_only, reset_caches  # noqa: F401

EMPHASIS = "a (naked:1.3) woman on a (beach)"
CONCEPTS = "nude person, nudity, naked"


def report_words(webui, prompt):
    item = next(i for i in webui.glue.LAST_REPORTS["txt2img"]["prompts"] if i["prompt"] == prompt)
    return [(w["text"], w["score"], w["flagged"]) for w in item["words"]]


@pytest.mark.parametrize("name", ["sd1", "forge"])
def test_emphasis_syntax_is_sanitized_and_the_live_heatmap_agrees(webui, name):
    from a1111.routes import score_prompt

    model = getattr(webui.models, name)
    args = args_for(concepts=CONCEPTS)
    baseline = host_only(webui, prompt=EMPHASIS, model=model)
    p, _ = generate(webui, args, prompt=EMPHASIS, model=model)
    assert not torch.equal(p.denoiser_conds[0][0], baseline[0][0]), "emphasis syntax was not sanitized"
    generated = report_words(webui, EMPHASIS)
    assert any(flag for _, _, flag in generated)
    webui.shared.sd_model = model
    status, body = score_prompt({"prompt": EMPHASIS, "settings": {"preset": "max", "concepts": CONCEPTS}})
    assert status == 200 and "error" not in body, body
    live = [(w["text"], w["score"], w["flagged"]) for w in body["words"]]
    assert live == generated, "the heatmap and the generation disagree"


@pytest.fixture
def rescaled(webui, monkeypatch):
    """The host's emphasis rescale far from 1, as with a random-weight checkpoint: every chunk batch the text
    model returns is multiplied by ``factor`` (set by the test)."""
    from modules import sd_hijack_clip

    original = sd_hijack_clip.ChunkingMixin.process_tokens
    state = {"factor": 1.0}

    def process_tokens(self, remade_batch_tokens, batch_multipliers):
        z = original(self, remade_batch_tokens, batch_multipliers)
        pooled = getattr(z, "pooled", None)
        z = z * state["factor"]
        if pooled is not None:
            z.pooled = pooled
        return z

    monkeypatch.setattr(sd_hijack_clip.ChunkingMixin, "process_tokens", process_tokens)
    return state


@pytest.mark.parametrize("name", ["sd1", "forge", "sdxl"])
@pytest.mark.parametrize("factor", [0.02, 40.0])
def test_scores_flags_and_edits_follow_the_rescale(webui, rescaled, name, factor):
    model = getattr(webui.models, name)
    args = args_for(concepts=CONCEPTS, sanitize_negative=True)
    negative = "a naked person, blood"
    p_plain, _ = generate(webui, args, prompt=EMPHASIS, negative=negative, model=model)
    plain_words = report_words(webui, EMPHASIS)
    reset_caches(webui)
    rescaled["factor"] = factor
    p_scaled, _ = generate(webui, args, prompt=EMPHASIS, negative=negative, model=model)
    scaled_words = report_words(webui, EMPHASIS)
    assert [(t, f) for t, _, f in scaled_words] == [(t, f) for t, _, f in plain_words]
    assert [s for _, s, _ in scaled_words] == pytest.approx([s for _, s, _ in plain_words], abs=1e-3)
    for plain, scaled in zip(p_plain.denoiser_conds[0], p_scaled.denoiser_conds[0]):  # cond, then uncond
        if isinstance(plain, dict):  # SDXL: the token rows scale, the vector (pooled + sizes) does not
            plain, scaled = plain["crossattn"], scaled["crossattn"]
        assert torch.isfinite(scaled).all()
        assert torch.allclose(scaled, factor * plain, rtol=1e-3, atol=1e-4 * factor * float(plain.abs().max()))


@pytest.mark.parametrize("name", ["sd1", "forge", "sdxl"])
@pytest.mark.parametrize("mode", ["Original", "No norm", "Ignore"])
def test_an_emphasis_weight_does_not_hide_a_word(webui, name, mode):
    """``(naked:1.3)`` is scored as ``naked``: emphasis is undone before scoring and put back on the edit."""
    model = getattr(webui.models, name)
    webui.shared.opts.set("emphasis", mode)
    args = args_for(concepts=CONCEPTS)
    weighted, plain = "a (naked:1.3) woman on a (beach:0.8)", "a naked woman on a beach"
    p_weighted, _ = generate(webui, args, prompt=weighted, model=model)
    words_weighted = report_words(webui, weighted)
    generate(webui, args, prompt=plain, model=model)
    words_plain = report_words(webui, plain)
    assert [(t, f) for t, _, f in words_weighted] == [(t, f) for t, _, f in words_plain]
    assert [s for _, s, _ in words_weighted] == pytest.approx([s for _, s, _ in words_plain], abs=1e-3)
    assert any(f for _, _, f in words_plain)
    baseline = host_only(webui, prompt=weighted, model=model)
    c, c_base = p_weighted.denoiser_conds[0][0], baseline[0][0]
    if isinstance(c, dict):
        c, c_base = c["crossattn"], c_base["crossattn"]
    assert not torch.equal(c, c_base)
    assert torch.equal(c[:, 0], c_base[:, 0])
    unchanged = (c == c_base).all(-1)
    assert torch.isfinite(c).all() and bool(unchanged[0, 0])


def test_the_live_heatmap_leaves_no_trace_in_forges_next_infotext(webui):
    """Forge's engine notes the emphasis mode for the next infotext in a module-level dict; a live-heatmap call
    (which runs the engine) must leave that dict as it was."""
    from a1111.routes import score_prompt
    from backend.text_processing import classic_engine

    webui.shared.sd_model = webui.models.forge
    webui.shared.opts.set("emphasis", "No norm")
    classic_engine.last_extra_generation_params.clear()
    classic_engine.last_extra_generation_params["TI"] = "kept"
    status, body = score_prompt({"prompt": EMPHASIS, "settings": {"preset": "max", "concepts": CONCEPTS}})
    assert status == 200 and body["words"], body
    assert classic_engine.last_extra_generation_params == {"TI": "kept"}
    webui.models.forge.text_processing_engine([EMPHASIS])  # the engine itself does note it
    assert classic_engine.last_extra_generation_params["Emphasis"] == "No norm"
    classic_engine.last_extra_generation_params.clear()
