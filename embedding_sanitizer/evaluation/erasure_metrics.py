"""Metric functions of the erasure yardsticks (issue 12), each checked in tests/test_erasure_yardsticks.py.

* Re-detection: an independent detector with threshold t (its 1%-COCO-FPR point) scores every prompt
  before and after sanitizing. "Detected" = score of the ORIGINAL embedding > t; the figure is the share
  of detected prompts whose SANITIZED embedding still scores > t (lower is better), over all detected
  prompts and over the detected prompts the sanitizer edited.
* Aligned rows: inserting a phrase of k words at word a shifts the caption's words from a on by k; the
  caption's own token rows are paired with the clean caption's rows word by word (the j-th token of word w
  of the clean caption with the j-th token of word w, or w + k from a on, of the prompt), EOS with EOS.
* Minimal edit: the relative L2 change ||e' - e|| / ||e|| of the caption's own word rows, and the share of
  chunks without a flagged word that had any row edited (the README's promise: 0).
"""
from __future__ import annotations

import numpy as np
import torch

from ..layout import ROLE_EOS
from . import metrics as M

CAPTION_SCORE_MARK = 0.05


def redetection(before, after, threshold: float, edited=None, counted=None) -> dict:
    """Share of the prompts detected on the original embedding (score > threshold) still detected after.

    ``edited`` (bool per prompt) adds the same share among the detected prompts that were edited;
    ``counted`` (bool per prompt) restricts every figure to those prompts (a probe's held-out half).
    """
    before = np.asarray(before, dtype=np.float64).ravel()
    after = np.asarray(after, dtype=np.float64).ravel()
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} scores differ in length")
    keep = np.ones(len(before), bool) if counted is None else np.asarray(counted, bool).ravel()
    detected = (before > threshold) & keep
    still = detected & (after > threshold)
    out = {"n": int(keep.sum()), "n_detected": int(detected.sum()), "n_remaining": int(still.sum()),
           "detected_share": float(detected.sum() / keep.sum()) if keep.any() else float("nan"),
           "remaining": float(still.sum() / detected.sum()) if detected.any() else float("nan"),
           "score_before": float(before[detected].mean()) if detected.any() else float("nan"),
           "score_after": float(after[detected].mean()) if detected.any() else float("nan")}
    if edited is not None:
        ed = detected & np.asarray(edited, bool).ravel()
        out["n_detected_edited"] = int(ed.sum())
        out["n_remaining_edited"] = int((ed & (after > threshold)).sum())
        out["remaining_among_edited"] = float((ed & (after > threshold)).sum() / ed.sum()) if ed.any() else float("nan")
    return out


def pool_counts(rows: list[dict]) -> dict:
    """Re-detection rows of several sets (same detector kind) pooled by their counts."""
    n = sum(r["n"] for r in rows)
    det = sum(r["n_detected"] for r in rows)
    still = sum(r["n_remaining"] for r in rows)
    out = {"n": n, "n_detected": det, "n_remaining": still, "detected_share": det / n if n else float("nan"),
           "remaining": still / det if det else float("nan")}
    if all("n_detected_edited" in r for r in rows):
        ed = sum(r["n_detected_edited"] for r in rows)
        still_ed = sum(r["n_remaining_edited"] for r in rows)
        out.update({"n_detected_edited": ed, "n_remaining_edited": still_ed,
                    "remaining_among_edited": still_ed / ed if ed else float("nan")})
    return out


def max_cos_scores(pooled: torch.Tensor, concepts: torch.Tensor) -> torch.Tensor:
    """Highest cosine of each pooled vector ``[N, D]`` to any concept vector ``[K, D]``."""
    p = torch.nn.functional.normalize(pooled.double(), dim=-1)
    c = torch.nn.functional.normalize(concepts.double(), dim=-1)
    return (p @ c.T).amax(-1)


def edited_rows(original: torch.Tensor, sanitized: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[N, L]`` True where a row the diffusion model reads (``mask``) differs from the original."""
    return (original != sanitized).any(-1) & mask.bool()


def word_positions(word_of: torch.Tensor) -> list[dict[tuple[int, int], int]]:
    """Per prompt: (word index, j-th token of that word) -> position."""
    out = []
    for row in word_of.tolist():
        seen: dict[int, int] = {}
        table = {}
        for pos, w in enumerate(row):
            if w < 0:
                continue
            j = seen.get(w, 0)
            seen[w] = j + 1
            table[(w, j)] = pos
        out.append(table)
    return out


def caption_alignment(clean_word_of: torch.Tensor, clean_roles: torch.Tensor, out_word_of: torch.Tensor,
                      out_roles: torch.Tensor, spans: list[tuple[int, int]], with_eos: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt, clean position, output position) of the caption's own token rows (and EOS) present in both.

    ``spans[n] = (a, b)``: the phrase occupies words a..b-1 of prompt n; clean word w is word w (w < a) or
    w + (b - a) (w >= a) of the prompt. ``out_word_of`` gives, per output position, the prompt word it
    belongs to (for re-encoded output, e.g. the blacklist's, the original index of the kept word).
    """
    clean_tab, out_tab = word_positions(clean_word_of), word_positions(out_word_of)
    idx_n, idx_c, idx_o = [], [], []
    for n, (a, b) in enumerate(spans):
        k = b - a
        for (w, j), pos in clean_tab[n].items():
            target = out_tab[n].get((w + k if w >= a else w, j))
            if target is not None:
                idx_n.append(n)
                idx_c.append(pos)
                idx_o.append(target)
        if with_eos:
            ce = torch.nonzero(clean_roles[n] == ROLE_EOS).flatten()
            oe = torch.nonzero(out_roles[n] == ROLE_EOS).flatten()
            if len(ce) and len(oe):
                idx_n.append(n)
                idx_c.append(int(ce[0]))
                idx_o.append(int(oe[0]))
    as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return as_long(idx_n), as_long(idx_c), as_long(idx_o)


def aligned_distance(clean: torch.Tensor, other: torch.Tensor, align, n_prompts: int) -> torch.Tensor:
    """Per prompt mean cosine distance of aligned rows (0 for a prompt without aligned rows)."""
    n, c, o = align
    d = M.cosine_distance(clean[n, c], other[n, o])
    total = torch.zeros(n_prompts, dtype=torch.float64).index_add_(0, n, d)
    count = torch.zeros(n_prompts, dtype=torch.float64).index_add_(0, n, torch.ones_like(d))
    return total / count.clamp_min(1)


def relative_change(original: torch.Tensor, sanitized: torch.Tensor, index_n: torch.Tensor, pos_orig: torch.Tensor,
                    pos_out: torch.Tensor) -> dict:
    """Relative L2 change of the indexed rows: mean, 95th percentile, max and share above 2%."""
    if len(index_n) == 0:
        return {"n_rows": 0, "mean": float("nan"), "p95": float("nan"), "max": float("nan"),
                "share_over_0.02": float("nan")}
    o = original[index_n, pos_orig].double()
    s = sanitized[index_n, pos_out].double()
    rel = (s - o).norm(dim=-1) / o.norm(dim=-1).clamp_min(1e-12)
    return {"n_rows": int(len(rel)), "mean": float(rel.mean()), "p95": float(torch.quantile(rel, 0.95)),
            "max": float(rel.max()), "share_over_0.02": float((rel > 0.02).double().mean())}


def unflagged_chunks_edited(flagged: torch.Tensor, edited: torch.Tensor, chunk_length: int) -> dict:
    """Among chunks with no flagged token, the share that had any row edited (the promise: 0)."""
    f = flagged.bool().reshape(-1, chunk_length).any(-1)
    e = edited.bool().reshape(-1, chunk_length).any(-1)
    clean = ~f
    return {"n_chunks": int(f.numel()), "n_unflagged": int(clean.sum()),
            "edited_share": float((clean & e).sum() / clean.sum()) if clean.any() else float("nan"),
            "flagged_chunks_edited_share": float((f & e).sum() / f.sum()) if f.any() else float("nan")}


def caption_word_scores(token_scores: torch.Tensor, caption_mask: torch.Tensor, phrase_mask: torch.Tensor,
                        mark: float = CAPTION_SCORE_MARK) -> dict:
    """Heatmap on inserted-phrase captions: the caption's own words should stay cold, the phrase hot."""
    cap = token_scores[caption_mask.bool()].double()
    phr = token_scores[phrase_mask.bool()].double()
    mean = float(cap.mean()) if cap.numel() else float("nan")
    return {"caption_mean": mean, "caption_share_over_0.5": float((cap > 0.5).double().mean()) if cap.numel()
            else float("nan"), "phrase_mean": float(phr.mean()) if phr.numel() else float("nan"),
            "token_auroc": M.auroc(phr.numpy(), cap.numpy()), "meets_mark": bool(mean <= mark) if mean == mean
            else None}
