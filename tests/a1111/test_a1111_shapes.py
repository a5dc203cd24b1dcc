"""SD2 and SDXL checkpoint shapes in the stand-in: the hook sanitizes them and keeps shape and dtype.

SD2: one OpenCLIP ViT-H text tower (width 1024, penultimate layer with ``ln_final``, pad id 0), the
conditioning a ``[B, 77n, 1024]`` tensor. SDXL: CLIP-L (768, penultimate hidden state) and CLIP-G (1280,
with a pooled output), the conditioning a dict ``crossattn`` ``[B, 77n, 2048]`` / ``vector`` ``[B, 2816]``
(G pooled + three 512-wide size embeddings).
"""
from __future__ import annotations

import pytest
import torch

from tests.a1111.test_a1111_generation import UNSAFE, args_for, clean, generate, host_only  # noqa: F401

LONG = ", ".join(["a nude person on a beach"] * 16)


@pytest.mark.parametrize("name", ["sd2", "sd2_half"])
def test_sd2_openclip_h_is_sanitized_with_shape_and_dtype_kept(webui, name):
    model = getattr(webui.models, name)
    dtype = torch.float16 if name == "sd2_half" else torch.float32
    for prompt, length in ((UNSAFE, 77), (LONG, 154)):
        baseline = host_only(webui, prompt=prompt, model=model)
        p, _ = generate(webui, args_for(), prompt=prompt, model=model)
        (c, uc), (c_base, uc_base) = p.denoiser_conds[0], baseline[0]
        assert c.shape == c_base.shape == (1, length, 1024)
        assert c.dtype == c_base.dtype == dtype
        assert torch.isfinite(c.float()).all()
        assert not torch.equal(c, c_base), "SD2 conditioning was not sanitized"
        assert torch.equal(c[0, ::77], c_base[0, ::77]), "no chunk's BOS row changes"
        assert torch.equal(uc, uc_base)
        report = webui.glue.LAST_REPORTS["txt2img"]
        assert any(w["flagged"] for item in report["prompts"] for w in item["words"])
    from a1111.encoder import adapter_for  # the adapter reads the OpenCLIP layout: pad id 0

    adapter = adapter_for(model.cond_stage_model)
    assert adapter.family == "sd2" and adapter.layout.pad_id == 0 and adapter.width == 1024
    # off and intensity 0: bit for bit the host's conditioning
    baseline = host_only(webui, model=model)
    for args in (args_for(enabled=False), args_for(preset="custom", intensity=0.0)):
        p, _ = generate(webui, args, model=model)
        assert torch.equal(p.denoiser_conds[0][0], baseline[0][0])


def test_sd2_tail_rows_after_the_end_id_are_padding(webui):
    """OpenCLIP pads with id 0 after the first end id; the adapter reports the ids the transformer saw."""
    from a1111.encoder import adapter_for

    model = webui.models.sd2
    adapter = adapter_for(model.cond_stage_model)
    batch = adapter.tokenize([UNSAFE])
    row = batch.ids[0].tolist()
    end = row.index(adapter.layout.eos_id, 1)
    assert row[0] == adapter.layout.bos_id and set(row[end + 1:]) == {0}
    assert batch.pieces[0][end + 1] == "<pad>"


def test_sdxl_both_encoders_sanitized_shapes_and_pooled(webui):
    model = webui.models.sdxl
    for prompt, length in ((UNSAFE, 77), (LONG, 154)):
        baseline = host_only(webui, prompt=prompt, model=model)
        p, _ = generate(webui, args_for(), prompt=prompt, model=model)
        (c, uc), (c_base, uc_base) = p.denoiser_conds[0], baseline[0]
        assert set(c) == {"crossattn", "vector"}
        assert c["crossattn"].shape == c_base["crossattn"].shape == (1, length, 768 + 1280)
        assert c["vector"].shape == c_base["vector"].shape == (1, 1280 + 3 * 512)
        for key in c:
            assert c[key].dtype == c_base[key].dtype
            assert torch.isfinite(c[key]).all()
        assert not torch.equal(c["crossattn"][..., :768], c_base["crossattn"][..., :768]), "CLIP-L part"
        assert not torch.equal(c["crossattn"][..., 768:], c_base["crossattn"][..., 768:]), "CLIP-G part"
        assert torch.equal(c["crossattn"][0, ::77], c_base["crossattn"][0, ::77]), "BOS rows of both encoders"
        assert not torch.equal(c["vector"][:, :1280], c_base["vector"][:, :1280]), "CLIP-G pooled part"
        assert torch.equal(c["vector"][:, 1280:], c_base["vector"][:, 1280:]), "size and crop embeddings"
        assert all(torch.equal(uc[k], uc_base[k]) for k in uc)
    # the report merges both encoders' views of one prompt
    item = webui.glue.LAST_REPORTS["txt2img"]["prompts"][0]
    assert item["prompt"] == LONG and any(w["flagged"] for w in item["words"])
    from a1111.encoder import adapter_for

    families = sorted(adapter_for(e).family for e in model.conditioner.embedders if hasattr(e, "process_texts"))
    assert families == ["sdxl-g", "sdxl-l"]
    assert sorted(adapter_for(e).width for e in model.conditioner.embedders if hasattr(e, "process_texts")) == \
        [768, 1280]
