"""Sanitizing the separate pooled vector some model families condition on.

SDXL feeds the diffusion model CLIP-G's projected pooled vector (``pooled_output``,
the ADM ``vector``) beside the token rows; Flux conditions on CLIP-L's pooled
vector. It is computed from the whole prompt, so the concept leaks through it
unless it is cleaned too. It lives in its own space (after the text projection),
so it gets its own concept span: the host's pooled vectors of the concept list,
centred on the mean pooled vector of the neutral reference prompts. A prompt's
pooled vector is edited with the largest edit weight of its token rows, so a
prompt with no edited row keeps its pooled vector bit for bit.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from .layout import ROLE_WORD
from .projection import orthonormal_basis
from .reference_prompts import NEUTRAL_PROMPTS


@dataclass
class PooledSubspace:
    basis: torch.Tensor  # [Dp, r]
    center: torch.Tensor  # [Dp]


def build_pooled_subspace(host_pooled, concepts: tuple[str, ...]) -> PooledSubspace:
    """``host_pooled(texts) -> [N, Dp]`` is the host's own pooled output for each text."""
    concept_vectors = host_pooled(list(concepts)).to(torch.float32)
    center = host_pooled(list(NEUTRAL_PROMPTS)).to(torch.float32).mean(0)
    return PooledSubspace(orthonormal_basis(concept_vectors - center), center)


class PooledCache:
    def __init__(self) -> None:
        self._entries: dict[tuple, PooledSubspace] = {}
        self._lock = threading.Lock()

    def get(self, key: str, host_pooled, concepts: tuple[str, ...]) -> PooledSubspace:
        full_key = (key, tuple(c.lower() for c in concepts))
        with self._lock:
            hit = self._entries.get(full_key)
        if hit is None:
            with torch.inference_mode():
                hit = build_pooled_subspace(host_pooled, concepts)
            with self._lock:
                self._entries[full_key] = hit
        return hit


DEFAULT_POOLED_CACHE = PooledCache()


def prompt_weights(weights: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
    """Largest edit weight of each prompt's word rows, ``[B]``."""
    return torch.where(roles == ROLE_WORD, weights, torch.zeros_like(weights)).amax(-1)


def sanitize_pooled(pooled: torch.Tensor, weight: torch.Tensor, subspace: PooledSubspace) -> torch.Tensor:
    """Remove the concept span from ``pooled`` ``[B, Dp]`` with per-prompt ``weight`` ``[B]``.

    Rows with weight 0 are returned bit for bit; dtype and device are kept. The weight is
    capped at 1 (full removal): past that the concept part would flip sign and grow again.
    """
    if pooled.dim() != 2 or pooled.shape[-1] != subspace.center.shape[-1]:
        raise ValueError(f"pooled vector of shape {tuple(pooled.shape)} does not match the pooled concept "
                         f"space of width {subspace.center.shape[-1]}")
    basis = subspace.basis.to(pooled.device)
    center = subspace.center.to(pooled.device)
    x = pooled.to(torch.float32)
    removed = x - ((x - center) @ basis) @ basis.T
    w = weight.to(pooled.device, torch.float32).clamp(0.0, 1.0).unsqueeze(-1)
    edited = (x + w * (removed - x)).to(pooled.dtype)
    return torch.where(w > 0, edited, pooled)
