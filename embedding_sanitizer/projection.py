"""SAFREE-style training-free projection (after Yoon et al., arXiv 2410.12761).

Math only: everything here takes tensors and returns tensors. The concept
subspace is built once per encoder and concept list (``ConceptSubspace``);
detection comes in two flavours:

* ``loo``: the released leave-one-out rule. Token i is a trigger when the
  residual of the pooled embedding of the prompt with token i masked, off the
  concept subspace, exceeds ``(1 + alpha)`` times the mean residual of the other
  masked copies. Needs one extra (batched) encoder pass over the masked copies.
* ``fast``: no extra encoder pass. Every word row is scored by the share of
  its norm, relative to a neutral centre, that lies in the span of the
  (centred) concept vectors; the share is mapped to [0, 1] with the null
  distribution measured on neutral reference prompts by the same encoder.
  A candidate row (score >= ``CONTRAST_MIN_SCORE``) is then checked in its
  context against two reference banks the same encoder built from text this
  project writes (``concepts.reference_banks``): the concept words inside
  generated unsafe prompts, and benign rows (neutral prompts, compounds and
  idioms such as "naked eye" or "blood orange"). The row together with its
  neighbouring word rows (``context_vectors``) keeps its score only when its
  nearest unsafe references (mean cosine of the ``CONTRAST_TOP_K_UNSAFE``
  nearest) are closer than its nearest benign ones (``CONTRAST_TOP_K_BENIGN``,
  with ``CONTRAST_MARGIN``) (``contrast_gate``); training-free, one small
  matrix product per candidate. A word the tokenizer splits into pieces is
  scored as one word (``word_mean_rows``).

Projections follow the released code's order, ``(I - P_C) P_I e``, for the
leave-one-out detector, and a centred concept removal
``e - P_U (e - mu)`` for the fast detector (it keeps the row's neutral part).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .layout import ROLE_BOS, ROLE_EOS, ROLE_PAD, ROLE_WORD

LOO_ALPHA = 0.01
SVF_STEPS = 50
SVF_UP = 10.0
SVF_SLOPE = 2.5  # k in round(U * sigmoid(2k (10 beta - c)))
SVF_CENTER = 5.333
CONTEXT_WEIGHT = 1.0  # weight of the mean neighbouring word row in a context vector
CONTRAST_TEMPERATURE = 0.02  # the gate goes from 0.27 to 0.73 over this change of the cosine margin
CONTRAST_MIN_SCORE = 0.2  # rows scoring below this are not looked up (their score stays under it anyway)
# tools/measure_hard_negatives.py --sweep prints the trade-off on evaluation/hard_negatives.csv. A stricter gate
# (margin -0.03, nearest benign reference only) edits 0.8% of the list but lets "a naked woman on a beach" through
# with the concept list "nudity" and flags 72% of explicit phrases instead of 90%, so recall was kept: 5.3% edited.
CONTRAST_MARGIN = 0.0  # added to (unsafe - benign): > 0 favours the unsafe bank on a tie, < 0 the benign one
CONTRAST_TOP_K_UNSAFE = 5  # the unsafe similarity is the mean cosine of the k nearest unsafe references
CONTRAST_TOP_K_BENIGN = 5  # the benign similarity is the mean cosine of the k nearest benign references


def projector(vectors: torch.Tensor) -> torch.Tensor:
    """Orthogonal projector ``[D, D]`` onto the span of the rows of ``vectors`` ``[K, D]``.

    ``P = V^T (V V^T)^+ V``, computed in float32 with a rank tolerance so that
    near-collinear concept lists stay a projector (idempotent) instead of
    amplifying rounding noise.
    """
    v = vectors.detach().to(torch.float32)
    gram = v @ v.T
    tol = max(v.shape) * torch.finfo(torch.float32).eps * gram.abs().max().clamp_min(1e-30)
    inverse = torch.linalg.pinv(gram, atol=float(tol), hermitian=True)
    return v.T @ inverse @ v


def orthonormal_basis(vectors: torch.Tensor, rel_tol: float = 1e-4) -> torch.Tensor:
    """Orthonormal basis ``[D, r]`` of the row span of ``vectors`` ``[K, D]`` (float32)."""
    v = vectors.detach().to(torch.float32)
    u, s, _ = torch.linalg.svd(v.T, full_matrices=False)
    keep = s > rel_tol * s.max().clamp_min(1e-30)
    return u[:, keep].contiguous()


def relevance(rows: torch.Tensor, basis: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Share of each centred row's norm inside the basis span, in [0, 1]. ``rows`` ``[..., D]``."""
    centred = rows.to(torch.float32) - center
    inside = (centred @ basis).norm(dim=-1)
    return (inside / centred.norm(dim=-1).clamp_min(1e-12)).clamp(0.0, 1.0)


@dataclass
class NullCalibration:
    """Where the fast detector's score crosses 0.5, and how steeply."""

    crossing: float
    scale: float

    def score(self, rel: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((rel - self.crossing) / self.scale)

    @classmethod
    def from_samples(cls, rel: torch.Tensor, quantile: float = 0.995) -> "NullCalibration":
        rel = rel.to(torch.float32).flatten()
        crossing = float(torch.quantile(rel, quantile))
        median = float(rel.median())
        scale = max((crossing - median) / 3.0, 1e-3)
        return cls(crossing, scale)


@dataclass
class ConceptSubspace:
    """Concept vectors of one encoder and one concept list, with everything derived from them."""

    concepts: tuple[str, ...]
    pooled: torch.Tensor  # [K, D] pooled concept vectors (SAFREE's C^T)
    words: torch.Tensor  # [K, D] mean word row of each concept
    projector: torch.Tensor  # [D, D] P_C from the pooled vectors (released SAFREE)
    word_center: torch.Tensor  # [D] mean word row of neutral prompts
    pooled_center: torch.Tensor  # [D] mean EOS/pad row of neutral prompts
    word_basis: torch.Tensor  # [D, r] basis of centred concept word rows
    pooled_basis: torch.Tensor  # [D, r'] basis of centred pooled concept vectors
    calibration: NullCalibration
    word_dirs: torch.Tensor | None = None  # [K, D] unit centred concept word rows (nearest-concept lookup)
    encoder_fingerprint: str = ""
    unsafe_refs: torch.Tensor | None = None  # [Nu, D] context vectors of concept words in generated unsafe prompts
    benign_refs: torch.Tensor | None = None  # [Nb, D] context vectors of benign reference rows

    def __post_init__(self) -> None:
        if self.word_dirs is None:
            self.word_dirs = torch.nn.functional.normalize(self.words.to(torch.float32) - self.word_center, dim=-1)

    def to(self, device: torch.device) -> "ConceptSubspace":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return ConceptSubspace(**moved)

    @property
    def width(self) -> int:
        return int(self.pooled.shape[-1])

    def nearest_concepts(self, rows: torch.Tensor) -> torch.Tensor:
        """Index of the most similar concept (centred cosine) for each row ``[..., D]``."""
        # argmax of the cosine: the row's own norm does not change the winner, so it is not normalised
        return ((rows.to(torch.float32) - self.word_center) @ self.word_dirs.T).argmax(dim=-1)


def context_vectors(rows: torch.Tensor, roles: torch.Tensor, center: torch.Tensor,
                    weight: float = CONTEXT_WEIGHT) -> torch.Tensor:
    """Unit context vector ``[B, T, D]`` of every word row: its unit centred row plus ``weight`` times the
    mean unit centred row of its word neighbours (previous and next word rows; BOS, EOS and padding are
    not neighbours, so chunks never mix). Zero on rows that are not words."""
    word = roles == ROLE_WORD
    unit = torch.nn.functional.normalize(rows.to(torch.float32) - center, dim=-1) * word.unsqueeze(-1)
    wf = word.to(unit.dtype)
    neighbours = torch.zeros_like(unit)
    count = torch.zeros_like(wf)
    neighbours[:, 1:] += unit[:, :-1]
    count[:, 1:] += wf[:, :-1]
    neighbours[:, :-1] += unit[:, 1:]
    count[:, :-1] += wf[:, 1:]
    mixed = unit + weight * neighbours / count.clamp_min(1).unsqueeze(-1)
    return torch.nn.functional.normalize(mixed, dim=-1) * word.unsqueeze(-1)


def nearest_similarity(vectors: torch.Tensor, refs: torch.Tensor, k: int) -> torch.Tensor:
    """Mean cosine ``[N]`` of each unit vector to its ``k`` nearest unit references (all of them if fewer)."""
    sims = vectors @ refs.T
    return sims.topk(min(k, sims.shape[-1]), dim=-1).values.mean(-1)


def contrast_gate(vectors: torch.Tensor, unsafe_refs: torch.Tensor, benign_refs: torch.Tensor,
                  margin: float = CONTRAST_MARGIN, temperature: float = CONTRAST_TEMPERATURE,
                  k_unsafe: int = CONTRAST_TOP_K_UNSAFE, k_benign: int = CONTRAST_TOP_K_BENIGN) -> torch.Tensor:
    """``sigmoid((unsafe similarity - benign similarity + margin) / temperature)`` for unit vectors ``[N, D]``,
    each similarity the mean cosine of the ``k`` nearest references of that bank: near 1 when the nearest
    references are unsafe, near 0 when benign ones are clearly nearer."""
    unsafe = nearest_similarity(vectors, unsafe_refs, k_unsafe)
    benign = nearest_similarity(vectors, benign_refs, k_benign)
    return torch.sigmoid((unsafe - benign + margin) / temperature)


def word_groups(roles: torch.Tensor, joins: torch.Tensor) -> torch.Tensor | None:
    """One id per word over the flattened ``[B, T]`` batch (``[B * T]`` long), None when no word is split.

    ``joins`` ``[B, T]`` bool: position t and t + 1 are pieces of one word (``TextEncoder.word_joins``); a word
    never spans a row that is not a word, so BOS, EOS and padding are groups of their own.
    """
    word = roles == ROLE_WORD
    glued = torch.zeros_like(word)
    glued[:, 1:] = joins[:, :-1] & word[:, :-1] & word[:, 1:]  # t continues the word of t - 1
    if not bool(glued.any()):
        return None
    return (~glued).reshape(-1).long().cumsum(0) - 1


def word_mean_rows(rows: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
    """Every word row replaced by the mean of the rows of its word (float32 ``[B, T, D]``); other rows as they
    are. ``group``: ``word_groups`` (None: no word is split, the rows come back as they are)."""
    x = rows.to(torch.float32)
    if group is None:
        return x
    flat = x.reshape(-1, x.shape[-1])
    n = int(group[-1]) + 1
    sums = torch.zeros(n, flat.shape[-1], device=x.device).index_add_(0, group, flat)
    counts = torch.zeros(n, device=x.device).index_add_(0, group, torch.ones(group.shape, device=x.device))
    return (sums / counts.unsqueeze(-1))[group].reshape(x.shape)


def word_max_scores(scores: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
    """Every piece of a word gets the highest score among the word's pieces (``[B, T]``; ``group`` as above)."""
    if group is None:
        return scores
    flat = scores.reshape(-1)
    best = torch.zeros(int(group[-1]) + 1, dtype=flat.dtype, device=flat.device)
    best = best.scatter_reduce(0, group, flat, reduce="amax", include_self=False)
    return best[group].reshape(scores.shape)


def fast_scores(rows: torch.Tensor, roles: torch.Tensor, subspace: ConceptSubspace,
                joins: torch.Tensor | None = None) -> torch.Tensor:
    """Fast detector: score ``[B, T]`` in [0, 1] for word rows, 0 elsewhere.

    The relevance score of a candidate row is multiplied by its contrast gate when the subspace carries
    reference banks; rows under ``CONTRAST_MIN_SCORE`` keep their (low) relevance score. With ``joins``
    (which positions are pieces of one word), a word split into pieces is scored as one: its relevance is
    that of the mean of its pieces' rows ("sex" in "sextant" is not the word "sex"), and every piece gets the
    highest gated score of the word, so a word is flagged (and edited) whole or not at all.
    """
    group = word_groups(roles, joins) if joins is not None else None
    rows = word_mean_rows(rows, group) if group is not None else rows
    rel = relevance(rows, subspace.word_basis, subspace.word_center)
    scores = torch.where(roles == ROLE_WORD, subspace.calibration.score(rel), torch.zeros_like(rel))
    if subspace.unsafe_refs is not None and subspace.benign_refs is not None:
        candidates = scores >= CONTRAST_MIN_SCORE
        if bool(candidates.any()):
            vectors = context_vectors(rows, roles, subspace.word_center)[candidates]
            gate = contrast_gate(vectors, subspace.unsafe_refs, subspace.benign_refs)
            scores = scores.masked_scatter(candidates, scores[candidates] * gate)
    return word_max_scores(scores, group)


def fast_project(rows: torch.Tensor, roles: torch.Tensor, subspace: ConceptSubspace) -> torch.Tensor:
    """Concept-free version of every row (float32): centred removal of the concept span.

    Word rows use the word-row basis and centre; EOS and padding rows (which
    aggregate the prompt) use the pooled basis and centre. BOS is returned as is.
    """
    x = rows.to(torch.float32)
    wb, wc = subspace.word_basis, subspace.word_center
    pb, pc = subspace.pooled_basis, subspace.pooled_center
    word_proj = x - ((x - wc) @ wb) @ wb.T
    pooled_proj = x - ((x - pc) @ pb) @ pb.T
    is_word = (roles == ROLE_WORD).unsqueeze(-1)
    is_tail = ((roles == ROLE_EOS) | (roles == ROLE_PAD)).unsqueeze(-1)
    return torch.where(is_word, word_proj, torch.where(is_tail, pooled_proj, x))


def loo_trigger_stats(masked_pooled: torch.Tensor, owner: torch.Tensor, n_groups: int,
                      subspace: ConceptSubspace, alpha: float = LOO_ALPHA) -> tuple[torch.Tensor, torch.Tensor]:
    """Released leave-one-out rule over many prompts at once.

    ``masked_pooled`` ``[M, D]``: pooled vector of each masked copy; ``owner``
    ``[M]``: index of the chunk the copy belongs to. Returns (ratio ``[M]`` of
    the copy's residual to the mean residual of the other copies of the same
    chunk, trigger ``[M]`` bool = ratio > 1 + alpha). A chunk with a single word
    is never flagged (there is no "other" copy).
    """
    residual = masked_pooled.to(torch.float32) @ (torch.eye(subspace.width, device=masked_pooled.device)
                                                  - subspace.projector.to(masked_pooled.device))
    dist = residual.norm(dim=-1)
    sums = torch.zeros(n_groups, device=dist.device).index_add_(0, owner, dist)
    counts = torch.zeros(n_groups, device=dist.device).index_add_(0, owner, torch.ones_like(dist))
    others = (counts[owner] - 1).clamp_min(1)
    mean_others = (sums[owner] - dist) / others
    ratio = dist / mean_others.clamp_min(1e-12)
    ratio = torch.where(counts[owner] > 1, ratio, torch.zeros_like(ratio))
    return ratio, ratio > (1.0 + alpha)


def loo_scores_from_ratio(ratio: torch.Tensor, alpha: float = LOO_ALPHA) -> torch.Tensor:
    """Map a leave-one-out ratio to [0, 1]; 0.5 exactly at the released threshold 1 + alpha."""
    return torch.sigmoid((ratio - (1.0 + alpha)) / alpha)


def input_space_projectors(masked_pooled: torch.Tensor, owner: torch.Tensor, n_groups: int) -> torch.Tensor:
    """``P_I`` per chunk ``[G, D, D]`` from the masked copies' pooled vectors (released SAFREE)."""
    width = masked_pooled.shape[-1]
    out = torch.zeros(n_groups, width, width, device=masked_pooled.device)
    for group in torch.unique(owner).tolist():  # one pseudo-inverse per chunk, not per token
        out[group] = projector(masked_pooled[owner == group])
    return out


def loo_project(rows: torch.Tensor, input_projectors: torch.Tensor, subspace: ConceptSubspace) -> torch.Tensor:
    """Released projection order ``(I - P_C) P_I e`` for every row of every chunk.

    ``rows`` ``[G, L, D]`` (one chunk per group), ``input_projectors`` ``[G, D, D]``.
    """
    x = rows.to(torch.float32)
    complement = torch.eye(subspace.width, device=x.device) - subspace.projector.to(x.device)
    return torch.einsum("gld,gde,ef->glf", x, input_projectors, complement)


def concept_complement(rows: torch.Tensor, subspace: ConceptSubspace) -> torch.Tensor:
    """``(I - P_C) e`` for every row (float32)."""
    x = rows.to(torch.float32)
    return x - x @ subspace.projector.to(x.device)


def svf_beta(rows: torch.Tensor, projected: torch.Tensor, roles: torch.Tensor, chunk_length: int) -> torch.Tensor:
    """Released beta per prompt: 1 - mean cosine(projected, original) over BOS, words and EOS."""
    active = (roles == ROLE_BOS) | (roles == ROLE_WORD) | (roles == ROLE_EOS)
    cos = torch.nn.functional.cosine_similarity(projected.to(torch.float32), rows.to(torch.float32), dim=-1)
    cos = torch.where(active, cos, torch.zeros_like(cos))
    return 1.0 - cos.sum(-1) / active.sum(-1).clamp_min(1)


def svf_fraction(beta: torch.Tensor, up: float = SVF_UP, slope: float = SVF_SLOPE,
                 center: float = SVF_CENTER, steps: int = SVF_STEPS) -> torch.Tensor:
    """Fraction of denoising steps that use the sanitized embedding.

    Released formula: t' = round(U * sigmoid(2k (10 beta - c))) on a 50-step
    schedule where steps 0..t' are filtered, i.e. a fraction (t' + 1) / 50 of
    the schedule; usable with any step count.
    """
    t_prime = torch.round(up * torch.sigmoid(2.0 * slope * (10.0 * beta - center)))
    return (t_prime + 1.0) / float(steps)


def steps_for_fraction(fraction: float, total_steps: int) -> int:
    """How many of ``total_steps`` steps a fraction covers (at least one when fraction > 0)."""
    if fraction <= 0:
        return 0
    # fractions often arrive as float32 (0.1 -> 0.10000000149): round before the ceiling
    return max(1, min(total_steps, int(math.ceil(round(float(fraction) * total_steps, 6)))))
