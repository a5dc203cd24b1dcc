"""The pooled-erasure stage: it hits its target, moves only the rows it may move, and fits its head."""
from __future__ import annotations

import torch

from embedding_sanitizer.layout import ROLE_BOS, ROLE_EOS, ROLE_PAD, ROLE_WORD
import math

from embedding_sanitizer.pooled_erasure import (
    PooledCorrection, absorbing_rows, apply_pooled_erasure, edited_words, fit_pooled_head, lower_along_direction,
    pooled_features, pooled_target,
)

N, L, D = 5, 12, 16


def chunk_roles(words: int) -> torch.Tensor:
    roles = torch.full((L,), ROLE_PAD)
    roles[0] = ROLE_BOS
    roles[1:1 + words] = ROLE_WORD
    roles[1 + words] = ROLE_EOS
    return roles


def batch():
    torch.manual_seed(0)
    rows = torch.randn(N, L, D)
    roles = torch.stack([chunk_roles(w) for w in (3, 5, 7, 9, 4)])
    weights = torch.zeros(N, L)
    weights[0, 2] = 1.0  # one edited word
    weights[1, 2:4] = torch.tensor([0.7, 0.2])  # a strong and a weak word
    weights[3, 4] = 2.5  # intensity above 1: the stage is capped at full removal
    return rows, roles, weights  # chunks 2 and 4 have no edited word


def live_mean(rows, roles):
    live = (roles != ROLE_PAD).unsqueeze(-1).float()
    return (rows * live).sum(1) / live.sum(1)


def test_mean_pooling_hits_the_training_free_target_and_moves_nothing_else():
    rows, roles, weights = batch()
    out, stage_w = apply_pooled_erasure(rows.clone(), rows, roles, weights, "mean")
    words = edited_words(roles, weights)
    absorb = absorbing_rows(roles, words, "mean")
    # rows outside the absorbing set (BOS, unedited words, padding, whole unedited chunks) are bit for bit
    assert torch.equal(out[~absorb], rows[~absorb])
    assert torch.equal(out[:, 0], rows[:, 0]) and torch.equal(out[2], rows[2]) and torch.equal(out[4], rows[4])
    # full-strength chunks: the pooled vector equals the mean of the rows that were not edited
    for b in (0, 3):
        base = rows[b][(roles[b] != ROLE_PAD) & ~absorb[b]].mean(0)
        assert torch.allclose(live_mean(out, roles)[b], base, atol=1e-5)
    # chunk 1 at weight 0.7: 70% of the way
    base = rows[1][(roles[1] != ROLE_PAD) & ~absorb[1]].mean(0)
    before, after = live_mean(rows, roles)[1], live_mean(out, roles)[1]
    assert torch.allclose(after, before + 0.7 * (base - before), atol=1e-5)
    assert float(stage_w.max()) == 1.0 and torch.equal(stage_w > 0, absorb)


def test_eos_pooling_moves_the_eos_and_padding_rows_to_the_head_target():
    rows, roles, weights = batch()
    head = {"weight": torch.randn(2 * D, D) * 0.1, "bias": torch.randn(D), "mean": torch.randn(2 * D)}
    out, _ = apply_pooled_erasure(rows.clone(), rows, roles, weights, "eos", head)
    words = edited_words(roles, weights)
    features, base = pooled_features(rows, roles, words, "eos")
    target = pooled_target(features, base, head)
    eos = roles == ROLE_EOS
    assert torch.allclose(out[0][eos[0]][0], target[0], atol=1e-5)
    tail = (roles == ROLE_EOS) | (roles == ROLE_PAD)
    assert torch.equal(out[roles == ROLE_WORD], rows[roles == ROLE_WORD])  # words untouched by this stage
    assert torch.equal(out[2], rows[2])
    assert not torch.equal(out[0][tail[0]], rows[0][tail[0]])


def test_zero_weights_are_the_identity():
    rows, roles, _ = batch()
    out, stage_w = apply_pooled_erasure(rows.clone(), rows, roles, torch.zeros(N, L), "mean")
    assert torch.equal(out, rows) and not bool((stage_w > 0).any())


def test_the_head_learns_a_known_linear_contamination():
    torch.manual_seed(1)
    n = 800
    concept = torch.randn(n, D)
    clean = torch.randn(n, D) + 3.0
    mixing = torch.randn(D, D) * 0.3
    base = clean + concept @ mixing  # the context rows carry part of the concept
    features = torch.cat([concept, base], -1)
    val = torch.arange(n) % 5 == 0
    head, figures = fit_pooled_head(features, base, clean, val)
    assert figures["pooled_head_val_closed"] > 0.9
    pred = pooled_target(features[val], base[val], head)
    assert float((pred - clean[val]).abs().mean()) < 0.1
    # with nothing to learn (the base already is the clean vector), the head does not make it worse
    head2, figures2 = fit_pooled_head(torch.cat([concept, clean], -1), clean, clean, val)
    assert figures2["pooled_head_val_closed"] >= -0.05


def test_weights_from_before_the_pooled_head_load_without_it():
    from embedding_sanitizer.paths import WEIGHTS_DIR
    from embedding_sanitizer.weights_io import load_es

    previous = sorted((WEIGHTS_DIR / "previous").glob("*.safetensors"))
    assert previous, "the previous weights (the evaluate baseline) are missing"
    model, meta = load_es(previous[0])
    assert not model.config.pooled_head and model.pooled_head() is None
    assert model.config.edit_scope == "chunk"  # its own rule, recorded in the file


def test_lowering_lands_on_the_level_keeps_the_norm_and_leaves_benign_targets_alone():
    torch.manual_seed(3)
    direction = torch.randn(D) * 0.3
    target = torch.randn(8, D) * 2
    target[:4] += 4 * direction  # these read high along the direction
    unit = torch.nn.functional.normalize(target, dim=-1)
    level = float((unit @ direction).median())
    out = lower_along_direction(target, direction, level)
    z_after = torch.nn.functional.normalize(out, dim=-1) @ direction
    above = unit @ direction > level
    assert bool(above.any()) and bool((~above).any())
    assert torch.allclose(z_after[above], torch.full_like(z_after[above], level), atol=1e-4)
    assert torch.equal(out[~above], target[~above])  # already at or below the level: bit for bit
    assert torch.allclose(out.norm(dim=-1), target.norm(dim=-1), atol=1e-4)
    # the move is along the direction only: what is orthogonal to it keeps its direction
    ortho = lambda v: v - (v @ direction)[:, None] * direction / (direction @ direction)
    cos = torch.nn.functional.cosine_similarity(ortho(torch.nn.functional.normalize(out, dim=-1)), ortho(unit))
    assert bool((cos[above] > 0.9999).all())


def test_the_correction_level_is_the_detectors_target_probability():
    direction = torch.zeros(D)
    direction[0] = 1.0
    slope, bias = 12.0, -3.0
    correction = PooledCorrection.from_detector(direction, slope, bias, probability=0.02)
    z = correction.level
    assert math.isclose(1 / (1 + math.exp(-(slope * z + bias))), 0.02, rel_tol=1e-9)
    # a detector that cannot say which way is benign gives no correction
    assert PooledCorrection.from_detector(direction, 0.0, bias) is None
    assert PooledCorrection.from_detector(direction, float("nan"), bias) is None


def test_the_correction_moves_only_the_chunks_the_detector_speaks_for():
    rows, roles, weights = batch()
    direction = torch.randn(D)
    correction = PooledCorrection(direction=direction, level=-10.0)  # below every chunk: all would move
    use = torch.tensor([True, False, True, True, True])
    plain, _ = apply_pooled_erasure(rows.clone(), rows, roles, weights, "mean")
    out, _ = apply_pooled_erasure(rows.clone(), rows, roles, weights, "mean", use_head=use, correction=correction)
    assert torch.equal(out[1], plain[1])  # not the detector's chunk: the deletion target alone
    assert not torch.allclose(out[0], plain[0])
    assert torch.equal(out[2], rows[2]) and torch.equal(out[4], rows[4])  # no edited word: untouched
    assert torch.equal(out[:, 0], rows[:, 0])  # BOS never changes
    zero, _ = apply_pooled_erasure(rows.clone(), rows, roles, torch.zeros_like(weights), "mean",
                                   use_head=use, correction=correction)
    assert torch.equal(zero, rows)  # intensity 0 stays the identity
