"""The SAFREE math against direct reference computations on random matrices."""
import torch
from hypothesis import given, settings as hsettings, strategies as st

from embedding_sanitizer.projection import (
    NullCalibration, loo_project, loo_trigger_stats, orthonormal_basis, projector, relevance, steps_for_fraction,
    svf_fraction,
)

prop = hsettings(max_examples=30, deadline=None)


@prop
@given(k=st.integers(1, 12), d=st.integers(16, 64), seed=st.integers(0, 10_000))
def test_projector_is_idempotent_symmetric_and_annihilated_by_complement(k, d, seed):
    gen = torch.Generator().manual_seed(seed)
    concepts = torch.randn(k, d, generator=gen)
    p = projector(concepts)
    assert torch.allclose(p @ p, p, atol=1e-4)
    assert torch.allclose(p, p.T, atol=1e-5)
    complement = torch.eye(d) - p
    assert (concepts @ complement).abs().max() < 1e-3 * concepts.abs().max()
    assert abs(float(torch.trace(p)) - k) < 1e-3


def test_projector_matches_direct_formula_in_float64():
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(5, 24, generator=gen, dtype=torch.float64)
    reference = c.T @ torch.linalg.inv(c @ c.T) @ c  # C (C^T C)^-1 C^T with C = c^T, full rank
    assert torch.allclose(projector(c).double(), reference, atol=1e-5)


def test_projector_of_collinear_concepts_stays_a_projector():
    v = torch.randn(1, 32)
    concepts = torch.cat([v, 2 * v, -v + 1e-7])
    p = projector(concepts)
    assert torch.allclose(p @ p, p, atol=1e-4)
    assert abs(float(torch.trace(p)) - 1) < 1e-2


def test_leave_one_out_rule_matches_reference_loop():
    gen = torch.Generator().manual_seed(1)
    d = 16
    concepts = torch.randn(3, d, generator=gen)

    class Sub:
        width = d
        projector = projector(concepts)

    pooled = torch.randn(9, d, generator=gen)
    owner = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 3])
    ratio, trigger = loo_trigger_stats(pooled, owner, 4, Sub)
    complement = torch.eye(d) - Sub.projector
    for i in range(9):
        same = [j for j in range(9) if owner[j] == owner[i]]
        dist = lambda j: float((complement @ pooled[j]).norm())  # noqa: E731
        if len(same) == 1:
            assert not trigger[i]
            continue
        mean_others = sum(dist(j) for j in same if j != i) / (len(same) - 1)
        assert abs(float(ratio[i]) - dist(i) / mean_others) < 1e-4
        assert bool(trigger[i]) == (dist(i) > 1.01 * mean_others)


def test_released_projection_order():
    gen = torch.Generator().manual_seed(2)
    d = 12
    concepts = torch.randn(2, d, generator=gen)
    inputs = torch.randn(4, d, generator=gen)

    class Sub:
        width = d
        projector = projector(concepts)

    rows = torch.randn(1, 6, d, generator=gen)
    p_i = projector(inputs).unsqueeze(0)
    got = loo_project(rows, p_i, Sub)
    # row vectors: e -> e P_I (I - P_C); both symmetric, so this is (I - P_C) P_I e in column form
    expected = torch.stack([(torch.eye(d) - Sub.projector) @ p_i[0] @ rows[0, j] for j in range(6)])
    assert torch.allclose(got[0], expected, atol=1e-5)


def test_svf_fraction_matches_released_table():
    beta = torch.tensor([0.30, 0.50, 0.533, 0.60])
    t_prime = torch.tensor([0, 2, 5, 10], dtype=torch.float32)
    assert torch.allclose(svf_fraction(beta), (t_prime + 1) / 50)
    assert steps_for_fraction(0.22, 20) == 5
    assert steps_for_fraction(0.02, 50) == 1
    assert steps_for_fraction(0.0, 30) == 0
    for fraction, steps in ((0.10, 5), (0.14, 7), (0.18, 9), (0.20, 10)):  # float32 inputs must not overshoot
        assert steps_for_fraction(float(torch.tensor(fraction, dtype=torch.float32)), 50) == steps


def test_relevance_and_null_calibration():
    gen = torch.Generator().manual_seed(3)
    basis = orthonormal_basis(torch.randn(2, 20, generator=gen))
    center = torch.zeros(20)
    inside = basis[:, 0] * 3
    outside = torch.randn(20, generator=gen)
    outside = outside - basis @ (basis.T @ outside)
    rel = relevance(torch.stack([inside, outside]), basis, center)
    assert abs(float(rel[0]) - 1) < 1e-5 and float(rel[1]) < 1e-5
    cal = NullCalibration.from_samples(torch.rand(1000, generator=gen) * 0.3)
    assert float(cal.score(torch.tensor(cal.crossing))) == 0.5
    assert float(cal.score(torch.tensor(0.9))) > 0.99


def test_context_vectors_mix_only_word_neighbours_of_the_same_chunk():
    from embedding_sanitizer.layout import ROLE_BOS, ROLE_EOS, ROLE_PAD, ROLE_WORD
    from embedding_sanitizer.projection import context_vectors

    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(1, 8, 6, generator=gen)
    # two chunks of four: BOS w w EOS | BOS w EOS PAD
    roles = torch.tensor([[ROLE_BOS, ROLE_WORD, ROLE_WORD, ROLE_EOS, ROLE_BOS, ROLE_WORD, ROLE_EOS, ROLE_PAD]])
    center = torch.zeros(6)
    got = context_vectors(rows, roles, center, weight=1.0)
    unit = torch.nn.functional.normalize(rows[0], dim=-1)
    expect1 = torch.nn.functional.normalize(unit[1] + unit[2], dim=-1)  # its only word neighbour is row 2
    assert torch.allclose(got[0, 1], expect1, atol=1e-6)
    assert torch.allclose(got[0, 2], torch.nn.functional.normalize(unit[2] + unit[1], dim=-1), atol=1e-6)
    assert torch.allclose(got[0, 5], unit[5], atol=1e-6)  # no word neighbour: the row alone
    assert (got[0, [0, 3, 4, 6, 7]] == 0).all()


def test_contrast_gate_formula():
    from embedding_sanitizer.projection import contrast_gate

    v = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    unsafe = torch.tensor([[1.0, 0.0]])
    benign = torch.nn.functional.normalize(torch.tensor([[0.6, 0.8]]), dim=-1)
    got = contrast_gate(v, unsafe, benign, margin=0.05, temperature=0.1, k_unsafe=1, k_benign=1)
    expected = torch.sigmoid((torch.tensor([1.0 - 0.6, 0.0 - 0.8]) + 0.05) / 0.1)
    assert torch.allclose(got, expected, atol=1e-6)
    # k nearest: the mean of the k largest cosines per bank; a bank smaller than k uses all of it
    benign2 = torch.cat([benign, torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])])
    got = contrast_gate(v, unsafe, benign2, margin=0.0, temperature=0.1, k_unsafe=2, k_benign=2)
    expected = torch.sigmoid((torch.tensor([1.0 - (1.0 + 0.6) / 2, 0.0 - (0.8 + 0.0) / 2])) / 0.1)
    assert torch.allclose(got, expected, atol=1e-6)
    # each bank its own k: the unsafe side averages its 2 nearest, the benign side takes its nearest
    unsafe2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    got = contrast_gate(v, unsafe2, benign2, margin=-0.1, temperature=0.1, k_unsafe=2, k_benign=1)
    expected = torch.sigmoid((torch.tensor([(1.0 + 0.0) / 2 - 1.0, (1.0 + 0.0) / 2 - 0.8]) - 0.1) / 0.1)
    assert torch.allclose(got, expected, atol=1e-6)


def _subspace(d=16, k=3, seed=4, banks=True):
    from embedding_sanitizer.projection import ConceptSubspace

    gen = torch.Generator().manual_seed(seed)
    words = torch.randn(k, d, generator=gen)
    center = torch.zeros(d)
    basis = orthonormal_basis(words)
    refs = {}
    if banks:
        refs = dict(unsafe_refs=torch.nn.functional.normalize(words, dim=-1),
                    benign_refs=torch.nn.functional.normalize(torch.randn(5, d, generator=gen), dim=-1))
    return ConceptSubspace(concepts=tuple("abc"[:k]), pooled=words, words=words, projector=projector(words),
                           word_center=center, pooled_center=center, word_basis=basis, pooled_basis=basis,
                           calibration=NullCalibration(0.5, 0.1), **refs), words, gen


def test_fast_scores_gate_only_lowers_candidate_scores_in_place():
    from embedding_sanitizer.layout import ROLE_BOS, ROLE_EOS, ROLE_WORD
    from embedding_sanitizer.projection import CONTRAST_MIN_SCORE, context_vectors, contrast_gate, fast_scores

    gated, words, gen = _subspace()
    plain, _, _ = _subspace(banks=False)
    rows = torch.randn(2, 6, 16, generator=gen)
    rows[0, 2] = words[1] * 3  # a concept row: a candidate
    roles = torch.tensor([[ROLE_BOS] + [ROLE_WORD] * 4 + [ROLE_EOS]] * 2)
    base = fast_scores(rows, roles, plain)
    got = fast_scores(rows, roles, gated)
    assert (got <= base + 1e-7).all()
    candidates = base >= CONTRAST_MIN_SCORE
    assert bool(candidates[0, 2])
    gate = contrast_gate(context_vectors(rows, roles, gated.word_center)[candidates], gated.unsafe_refs,
                         gated.benign_refs)
    assert torch.allclose(got[candidates], base[candidates] * gate, atol=1e-6)
    assert torch.equal(got[~candidates], base[~candidates])


def test_word_mean_rows_averages_the_pieces_of_each_word_only():
    from embedding_sanitizer.layout import ROLE_BOS, ROLE_EOS, ROLE_PAD, ROLE_WORD
    from embedding_sanitizer.projection import word_groups, word_mean_rows

    gen = torch.Generator().manual_seed(7)
    rows = torch.randn(2, 7, 5, generator=gen, dtype=torch.float64)
    roles = torch.tensor([[ROLE_BOS, ROLE_WORD, ROLE_WORD, ROLE_WORD, ROLE_WORD, ROLE_EOS, ROLE_PAD]] * 2)
    joins = torch.zeros(2, 7, dtype=torch.bool)
    joins[0, 1] = joins[0, 2] = True  # words 1-3 are one word in prompt 0
    joins[1, 4] = True  # a join into EOS is ignored: a word never spans a non-word row
    joins[1, 0] = True  # nor does it start at BOS
    got = word_mean_rows(rows, word_groups(roles, joins))
    assert got.dtype == torch.float32 and got.shape == rows.shape
    x = rows.float()
    mean = x[0, 1:4].mean(0)
    for t in (1, 2, 3):
        assert torch.allclose(got[0, t], mean, atol=1e-6)
    assert torch.equal(got[0, [0, 4, 5, 6]], x[0, [0, 4, 5, 6]])
    assert torch.equal(got[1], x[1])
    # no join anywhere: the rows come back as they are
    assert word_groups(roles, torch.zeros_like(joins)) is None
    assert torch.equal(word_mean_rows(rows, None), x)


def test_fast_scores_with_joins_give_every_piece_its_word_score():
    from embedding_sanitizer.layout import ROLE_BOS, ROLE_EOS, ROLE_WORD
    from embedding_sanitizer.projection import fast_scores, word_groups, word_max_scores, word_mean_rows

    gated, words, gen = _subspace()
    rows = torch.randn(1, 6, 16, generator=gen)
    rows[0, 2] = words[0] * 3  # a concept piece followed by a neutral piece of the same word
    roles = torch.tensor([[ROLE_BOS] + [ROLE_WORD] * 4 + [ROLE_EOS]])
    joins = torch.zeros(1, 6, dtype=torch.bool)
    joins[0, 2] = True
    got = fast_scores(rows, roles, gated, joins=joins)
    assert torch.equal(got[0, 2], got[0, 3])
    group = word_groups(roles, joins)
    piecewise = fast_scores(word_mean_rows(rows, group), roles, gated)
    assert torch.allclose(got, word_max_scores(piecewise, group), atol=1e-6)
    assert torch.equal(got[0, 2], piecewise[0, 2:4].max())
    assert torch.equal(got[0, [0, 1, 4, 5]], piecewise[0, [0, 1, 4, 5]])
    assert torch.equal(fast_scores(rows, roles, gated, joins=torch.zeros_like(joins)), fast_scores(rows, roles, gated))
