"""An independent linear probe for re-detection (issue 12): logistic regression on unit pooled vectors.

The probe takes no part in calibrating ES and is fitted on a split disjoint from every prompt it is
evaluated on. The split is by text: ``in_train_half(text)`` (a stable hash of the whitespace-normalised,
lower-cased text) puts a prompt in the training half or the held-out half, so the same prompt falls in
the same half whichever file it comes from (the I2P prompts of ``concept_erasure/`` are I2P rows too).
Re-detection with a probe counts only the prompts it was not fitted on.

Negatives are COCO captions that no evaluation set uses PLUS I2P prompts of the other categories
(nudity probe: not sexual, nudity_percentage == 0; violence probe: neither violence nor shocking), so the
probe learns the concept rather than "a long lexica-style prompt" (I2P prompts are long tag lists, COCO
captions short sentences: a probe fitted on I2P-vs-COCO alone separates the styles).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from . import metrics as M


def normalise_text(text: str) -> str:
    return " ".join(text.lower().split())


def in_train_half(text: str) -> bool:
    """Stable half split by text (md5 of the normalised text; independent of PYTHONHASHSEED)."""
    return hashlib.md5(normalise_text(text).encode("utf-8")).digest()[0] % 2 == 0


def fit_logistic(positive: torch.Tensor, negative: torch.Tensor, l2: float = 1e-3, steps: int = 300
                 ) -> tuple[torch.Tensor, float]:
    """(weight [D], bias) of a class-balanced, L2-regularised logistic regression (L-BFGS, float64)."""
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError("the probe needs positive and negative examples")
    x = torch.cat([positive, negative]).double()
    y = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).double()
    weight = torch.where(y > 0, 0.5 / len(positive), 0.5 / len(negative)).double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = x @ w + b
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), float(b.detach())


class LinearProbe:
    """Logistic-regression detector on unit pooled vectors; ``score`` returns logits (higher = concept)."""

    def __init__(self, name: str, weight: torch.Tensor, bias: float, sizes: dict) -> None:
        self.name, self.weight, self.bias, self.sizes = name, weight, bias, sizes
        self.threshold = float("nan")
        self.held_out: dict = {}

    @classmethod
    def fit(cls, name: str, positive: torch.Tensor, negative: torch.Tensor, **kw) -> "LinearProbe":
        p = torch.nn.functional.normalize(positive.double(), dim=-1)
        n = torch.nn.functional.normalize(negative.double(), dim=-1)
        w, b = fit_logistic(p, n, **kw)
        return cls(name, w, b, {"train_positive": int(len(p)), "train_negative": int(len(n))})

    def score(self, pooled: torch.Tensor) -> np.ndarray:
        x = torch.nn.functional.normalize(pooled.double(), dim=-1)
        return (x @ self.weight + self.bias).numpy()

    def calibrate(self, coco_pooled: torch.Tensor, fpr: float = 0.01) -> float:
        """Threshold at the ``fpr`` point of COCO captions that the probe was not fitted on."""
        self.threshold = M.threshold_at_fpr(self.score(coco_pooled), fpr)
        return self.threshold

    def describe(self) -> dict:
        return {"threshold": self.threshold, **self.sizes, **self.held_out}
