"""Pooled-space erasure: after the row edits, the chunk as a whole must stop reading as the concept.

Why a separate stage. Editing only the flagged rows leaves the concept in the
sentence: every other row of a contextual encoder has absorbed some of it (on
the bundled encoder, inserting a phrase moves the caption's other rows by about
40% of their norm, through attention and the shifted positions), and detectors,
like the diffusion model's cross-attention, read the prompt as a whole. Editing
every row instead breaks the minimal-edit promise. This stage keeps the
unflagged rows bit for bit and moves only the rows that are edited anyway, so
that the chunk's pooled vector lands where the prompt *without the concept*
would be:

* ``mean`` pooling (BERT-style encoders such as the bundled MiniLM): the edited
  rows (flagged words and the EOS row) are shifted along one common direction, each
  by a share proportional to its edit weight (the EOS row by the chunk's largest),
  so that the mean of the chunk's live rows equals the target;
* ``eos`` pooling (CLIP): the EOS row and the padding rows (which SD reads too,
  and which carry the same sentence summary) are shifted to the target.

The target is the pooled vector the prompt would have without the concept:

* with a fitted **pooled head** (stored in the ES weights, fitted in closed form
  at calibration; see ``fit_pooled_head``): ``base + b + (f - mu) W``, where
  ``f = [mean of the original edited rows, base]``, ``base`` = the mean of the
  unedited live rows (``mean``) or the original EOS row (``eos``), and ``W, b``
  are a ridge regression from calibration prompts to the same prompts with the
  concept deleted. The regression learns how much of the concept the context
  rows carry and removes it from the pooled vector;
* without one (the training-free projection; weights calibrated before this
  stage): ``base`` itself, which removes the flagged rows' own contribution.

Deleting the edited words is not enough on its own: the words left in the chunk
still carry the concept ("a woman lying on the grass, sensual, ..." after "nude"
is deleted), so an independent detector still reads it. The target is therefore
corrected further (``PooledCorrection``), in the pooled space only: in chunks ES
edited, with ES weights that carry a whole-prompt detector, the target is lowered
along the detector's direction until the detector reads it at
``PROMPT_TARGET_PROBABILITY`` (``lower_along_direction``; a target already below
stays as it is); above intensity 1 the probability is ``PROMPT_TARGET_PROBABILITY **
intensity``. Removing the span of the concept list's pooled vectors as well
was tried and left out: it moved the target away from the prompt's benign
remainder and, measured by the independent detectors, removed less.

The stage is applied with the chunk's edit weight (capped at 1: the target is full
removal), so intensity 0 stays the identity and a chunk without an edited word is
never touched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .layout import ROLE_BOS, ROLE_EOS, ROLE_PAD, ROLE_WORD, token_roles
from .prompt_detector import pool_rows

POOLED_BUFFERS = ("pooled_weight", "pooled_bias", "pooled_mean")
RIDGE_LAMBDAS = (10.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0)
#: the whole-prompt detector's probability that the pooled target of a chunk ES edited is lowered to. Lower
#: removes more of the concept and moves further from the prompt's benign remainder; the sweep in the README's
#: limits (``tools/measure_erasure.py --target-probability``) measured 0.2 to 0.002 on the bundled encoder.
PROMPT_TARGET_PROBABILITY = 0.02


def lower_along_direction(target: torch.Tensor, direction: torch.Tensor, level: float) -> torch.Tensor:
    """``target`` ``[N, D]`` moved along ``direction`` until ``unit(target) . direction`` equals ``level``.

    The whole-prompt detector reads unit pooled vectors, so the unit vector ``u`` is moved to
    ``normalise(u - k d)`` and the target's norm kept. ``k = (a - level r) / s`` with ``a = u . d``,
    ``s = d . d`` and ``r = sqrt((s - a^2) / (s - level^2))`` lands exactly on the level (a level beyond
    ``|d|`` is clamped just inside it). Rows already at or below the level are returned as they are.
    """
    direction = direction.to(target.device, torch.float32)
    squared = float(direction @ direction)
    if squared <= 0 or not math.isfinite(squared):
        return target
    bound = math.sqrt(squared) * (1.0 - 1e-4)
    level = min(max(level, -bound), bound)
    norm = target.norm(dim=-1, keepdim=True)
    unit = target / norm.clamp_min(1e-12)
    a = unit @ direction
    r = ((squared - a * a).clamp_min(0.0) / (squared - level * level)).sqrt()
    k = (a - level * r) / squared
    moved = torch.nn.functional.normalize(unit - k.unsqueeze(-1) * direction, dim=-1) * norm
    return torch.where((a > level).unsqueeze(-1), moved, target)


@dataclass(frozen=True)
class PooledCorrection:
    """What the pooled target also loses beyond the deleted words: it is lowered along the whole-prompt
    detector's ``direction`` (unit pooled vectors) to the detector value ``level``."""

    direction: torch.Tensor
    level: float

    @classmethod
    def from_detector(cls, direction: torch.Tensor, slope: float, bias: float,
                      probability: float = PROMPT_TARGET_PROBABILITY) -> "PooledCorrection | None":
        """Lower to the detector value at which ``sigmoid(slope * z + bias)`` equals ``probability`` (None for
        a detector whose slope is not positive: it cannot say which way is benign)."""
        if not math.isfinite(slope) or not math.isfinite(bias) or slope <= 0:
            return None
        level = (math.log(probability / (1.0 - probability)) - bias) / slope
        return cls(direction=direction, level=level)

    def apply(self, target: torch.Tensor, detector_rows: torch.Tensor | None) -> torch.Tensor:
        """``target`` ``[N, D]`` corrected; ``detector_rows`` ``[N]``: chunks the detector speaks for (None: all)."""
        lowered = lower_along_direction(target, self.direction, self.level)
        return lowered if detector_rows is None else torch.where(detector_rows.unsqueeze(-1), lowered, target)


def edited_words(roles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``[N, L]``: word rows with a positive edit weight (the rows a pooled correction may move)."""
    return (roles == ROLE_WORD) & (weights > 0)


def absorbing_rows(roles: torch.Tensor, words: torch.Tensor, pooling: str) -> torch.Tensor:
    """Rows that take the pooled correction in a chunk whose ``words`` are edited.

    ``mean``: the edited words and the EOS row; ``eos``: the EOS and padding rows.
    Only chunks with at least one edited word get any.
    """
    has = words.any(-1, keepdim=True)
    if pooling == "mean":
        rows = words | (roles == ROLE_EOS)
    else:
        rows = (roles == ROLE_EOS) | (roles == ROLE_PAD)
    return rows & has


def _masked_mean(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(rows.dtype)
    return (rows * m).sum(1) / m.sum(1).clamp_min(1.0)


def _first_eos(rows: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
    return pool_rows(rows, roles, "eos")  # the whole-prompt detector's own EOS pooling


def pooled_features(rows: torch.Tensor, roles: torch.Tensor, words: torch.Tensor, pooling: str):
    """(features ``[N, 2D]``, base ``[N, D]``) of single chunks, from the ORIGINAL rows.

    ``base`` is the pooled vector without the edited rows' own contribution: the mean of the live rows that
    do not absorb the correction (``mean``), or the EOS row (``eos``).
    """
    rows = rows.float()
    concept = _masked_mean(rows, words)
    if pooling == "mean":
        absorb = absorbing_rows(roles, words, pooling)
        base = _masked_mean(rows, (roles != ROLE_PAD) & ~absorb)
    elif pooling == "eos":
        base = _first_eos(rows, roles)
    else:
        raise ValueError(f"unknown pooling {pooling!r}")
    return torch.cat([concept, base], -1), base


def pooled_target(features: torch.Tensor, base: torch.Tensor, head: dict | None) -> torch.Tensor:
    """The pooled vector of the chunk without the concept (``base`` when there is no head)."""
    if head is None:
        return base
    w = head["weight"].to(features.device, torch.float32)
    mu = head["mean"].to(features.device, torch.float32)
    b = head["bias"].to(features.device, torch.float32)
    return base + b + (features - mu) @ w


def deletion_ids(ids: torch.Tensor, roles: torch.Tensor, words: torch.Tensor, pad_id: int) -> torch.Tensor:
    """``[N, L]`` chunk ids with the ``words`` positions deleted: the kept tokens (BOS, unedited words, EOS)
    move left in order and the chunk is filled up with ``pad_id`` (what the chunk would be without them)."""
    keep = (roles != ROLE_PAD) & ~words
    order = torch.sort((~keep).to(torch.int8), dim=-1, stable=True).indices  # kept positions first, in order
    position = torch.arange(ids.shape[1], device=ids.device)
    return torch.where(position < keep.sum(-1, keepdim=True), ids.gather(1, order), torch.full_like(ids, pad_id))


def reencoded_targets(encode_rows, ids: torch.Tensor, roles: torch.Tensor, words: torch.Tensor, layout,
                      pooling: str) -> torch.Tensor:
    """Pooled vector ``[N, D]`` of every chunk re-encoded without its edited words.

    ``encode_rows(ids)`` returns the encoder's rows ``[N, L, D]`` for chunk ids ``[N, L]`` (the same layer
    as the embeddings being sanitized). The pooled vector is read from those rows as the whole-prompt
    detector pools them (``pool_rows``: ``mean``, the mean of the live rows; ``eos``, the EOS row).
    """
    cut = deletion_ids(ids, roles, words, layout.pad_id)
    cut_roles = token_roles(cut, layout, rows_are_chunks=True)
    active = int((cut_roles != ROLE_PAD).sum(-1).max())
    rows = encode_rows(cut[:, :active])
    return pool_rows(rows, cut_roles[:, :active].to(rows.device), pooling)


def apply_pooled_erasure(current: torch.Tensor, original: torch.Tensor, roles: torch.Tensor,
                         weights: torch.Tensor, pooling: str, head: dict | None = None,
                         use_head: torch.Tensor | None = None,
                         targets: torch.Tensor | None = None,
                         correction: PooledCorrection | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the absorbing rows of ``current`` ``[N, L, D]`` (single chunks) so the pooled vector hits the target.

    ``original``: the encoder's rows; ``weights``: the row edit weights so far; ``use_head`` ``[N]``: chunks
    whose target comes from ``head`` (the chunks ES edited: the head knows ES's concepts, not a custom concept
    that only the projection flagged); the others get the training-free target (``mean`` pooling) or are left
    to the projection (``eos`` pooling). ``targets`` ``[N, D]`` (``reencoded_targets``: the chunk re-encoded
    without its edited words), when given, is the target of every chunk, for any concept. ``correction``, when
    given, lowers the targets of the ``use_head`` chunks (of every chunk when ``use_head`` is None). Returns (rows,
    weights of the rows this stage moved: the chunk's largest word weight, capped at 1; 0 elsewhere).
    """
    words = edited_words(roles, weights)
    absorb = absorbing_rows(roles, words, pooling)
    zero = torch.zeros_like(weights)
    if not bool(absorb.any()):
        return current, zero
    strength = (weights * words).amax(-1).clamp(max=1.0)  # [N]
    cur = current.float()
    if targets is not None:
        target = targets.to(cur.device, torch.float32)
    else:
        features, base = pooled_features(original, roles, words, pooling)
        target = pooled_target(features, base, head)
        if head is not None and use_head is not None:
            fallback = base if pooling == "mean" else _first_eos(cur, roles)  # eos: no move without the head
            target = torch.where(use_head.unsqueeze(-1), target, fallback)
            if pooling == "eos":
                absorb = absorb & use_head.unsqueeze(-1)
    if correction is not None:
        target = correction.apply(target, use_head)
    if pooling == "mean":
        live = roles != ROLE_PAD
        n_live = live.sum(-1, keepdim=True).float()
        # each absorbing row takes a share of the move in proportion to its edit weight (the EOS row: the chunk's
        # largest), so a word flagged weakly moves little and the chunk's mean still lands on the target
        share = torch.where(roles == ROLE_EOS, (weights * words).amax(-1, keepdim=True), weights) * absorb
        share = share / share.sum(-1, keepdim=True).clamp_min(1e-12)
        shift = (target - _masked_mean(cur, live)) * n_live  # [N, D]: the sum of the rows must move by this
        moved = cur + share.unsqueeze(-1) * (strength.unsqueeze(-1) * shift).unsqueeze(1)
    else:
        shift = target - _first_eos(cur, roles)
        moved = cur + (strength.unsqueeze(-1) * shift).unsqueeze(1)
    out = torch.where(absorb.unsqueeze(-1), moved, cur)
    stage_w = torch.where(absorb, strength.unsqueeze(-1).expand_as(weights), zero)
    stage_w = torch.where(roles == ROLE_BOS, zero, stage_w)
    return out, stage_w


# -- calibration ----------------------------------------------------------------------------------
def fit_pooled_head(features: torch.Tensor, base: torch.Tensor, clean: torch.Tensor, val: torch.Tensor,
                    lambdas=RIDGE_LAMBDAS) -> tuple[dict, dict]:
    """Ridge regression from (features, base) to the concept-free pooled vector ``clean``.

    ``val`` marks validation examples (the lambda is chosen on them by the share of the cosine distance
    to ``clean`` that the target closes, compared with ``base``). Returns (head tensors, figures).
    """
    x, y = features.double(), (clean - base).double()
    tr = ~val
    mu = x[tr].mean(0)
    y_mean = y[tr].mean(0)
    xc = x[tr] - mu
    gram = xc.T @ xc
    cross = xc.T @ (y[tr] - y_mean)
    scale = float(gram.diagonal().mean().clamp_min(1e-12))  # lambdas relative to the features' variance
    clean_u = torch.nn.functional.normalize(clean[val].double(), dim=-1)

    def distance(pred):
        return (1 - (torch.nn.functional.normalize(pred, dim=-1) * clean_u).sum(-1)).sum()

    d_base = distance(base[val].double())
    best = None
    sweep = {}
    for lam in lambdas:
        weight = torch.linalg.solve(gram + lam * scale * 1e-3 * torch.eye(gram.shape[0], dtype=gram.dtype), cross)
        pred = base[val].double() + y_mean + (x[val] - mu) @ weight
        closed = float(1 - distance(pred) / d_base) if float(d_base) > 0 else 0.0
        sweep[str(lam)] = round(closed, 4)
        if best is None or closed > best[0]:
            best = (closed, lam, weight)
    closed, lam, weight = best
    head = {"weight": weight.float(), "bias": y_mean.float(), "mean": mu.float()}
    return head, {"pooled_head_lambda": lam, "pooled_head_val_closed": round(closed, 4),
                  "pooled_head_sweep": sweep, "pooled_head_examples": int(tr.sum())}
