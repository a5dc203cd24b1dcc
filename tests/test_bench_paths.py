"""The cost benchmark times the paths a user's prompt can take, each only when it really takes that path."""
import pytest
import torch

from embedding_sanitizer.evaluation.bench import LABELS, bench_encoder, es_for, targets, with_pooled_head


@pytest.fixture(scope="module")
def clip():
    from embedding_sanitizer.encoders.clip_text import CLIPTextEncoder

    return CLIPTextEncoder.tiny_random(width=32, layers=2, heads=2, seed=5)


def test_bench_times_the_pooled_stage_of_a_clip_es_without_a_head(clip):
    """A random CLIP ES has no pooled head, so its "es" cell skips the pooled stage (EOS pooling); calibration
    fits a head when it helps, and then an edited chunk is encoded again: "es_pooled" times that, on a copy."""
    model, _ = es_for(clip, None)
    assert model.pooled_head() is None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = bench_encoder(clip, model, batches=(1,), repeats=1, warmup=0, methods=("es",))
    ratios = out["batches"]["1"]["ratio"]
    assert "es" in ratios
    assert "es_pooled" in ratios  # the random ES edits the sample prompt, so the copy takes the pooled stage
    assert model.pooled_head() is None and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    rows = targets({"runs": [{**out, "encoder": "clip-vit-l14-text-random", "label": "tiny"}]})
    assert any(t["target"].startswith(LABELS["es_pooled"]) and t["status"] == "measured" for t in rows)


def test_with_pooled_head_leaves_the_original_without_one(clip):
    model, _ = es_for(clip, None)
    headed = with_pooled_head(model)
    assert headed.pooled_head() is not None and model.pooled_head() is None
