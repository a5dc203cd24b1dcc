"""Whole-prompt detector: how unsafe a chunk reads as a whole, from its pooled vector.

The ES score head rates words. Prompts that never name the concept ("a woman in a
bathtub, painting by ...") carry it in the whole sentence instead, and a word
scorer misses them. The prompt detector looks at the chunk's pooled vector:

* pooled vector: the masked mean of the chunk's BOS, word and EOS rows (``mean``,
  how sentence encoders such as MiniLM pool) or its first EOS row (``eos``, how
  CLIP pools), L2-normalised;
* direction: the difference of the mean pooled vector of the calibration corpus's
  unsafe chunks and of its benign chunks (a centroid rule; whitened, more
  discriminative directions fit the synthetic corpus better but transfer worse to
  real prompts, which is why the plain difference is used);
* optionally (calibration's ``detector_junk_directions``, off by default) junk removed from the
  direction: benign corpus prompts with and without the corpus's own adversarial-style junk tokens
  (random letters, glued words, emoji, markup, digits) are encoded, and the main directions of the
  shift the junk causes (``nuisance_directions``) are projected out of the centroid direction. The
  plain direction also means "unusual text" (on the bundled encoder it flags a quarter of COCO
  captions with 6 or 12 junk tokens); removing that costs some detection of real unsafe prompts,
  whose lexica style reads as unusual text too (``tools/measure_detector_junk.py``);
* probability: ``sigmoid(slope * (v . direction) + bias)``, the slope and bias fitted
  by class-balanced logistic regression on the same corpus (Platt scaling).

It is calibrated together with the ES weights and stored in the same file. Besides
being reported, it confirms uncertain word flags (``es_model.apply_es``).
"""
from __future__ import annotations

import torch

from .layout import ROLE_EOS, ROLE_PAD, ROLE_WORD

POOLINGS = ("mean", "eos")


def pooling_for(layout) -> str:
    """CLIP layouts pool at the EOS row; the bundled BERT encoder and T5 by the mean."""
    return "eos" if layout.name.startswith(("sd1-", "sd2-", "sdxl-")) else "mean"


def pool_rows(rows: torch.Tensor, roles: torch.Tensor, pooling: str) -> torch.Tensor:
    """``[N, L, D]`` rows of single chunks -> ``[N, D]`` pooled vectors (float32, not normalised)."""
    rows = rows.float()
    if pooling == "mean":
        keep = (roles != ROLE_PAD).unsqueeze(-1).float()
        return (rows * keep).sum(1) / keep.sum(1).clamp_min(1.0)
    if pooling == "eos":
        is_eos = roles == ROLE_EOS
        # first EOS; a chunk without one (never from the layouts) falls back to its last non-pad row
        last_live = ((roles != ROLE_PAD).long() * torch.arange(roles.shape[1], device=roles.device)).argmax(1)
        first_eos = torch.where(is_eos.any(1), is_eos.float().argmax(1), last_live)
        return rows[torch.arange(rows.shape[0], device=rows.device), first_eos]
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")


def chunk_vectors(rows: torch.Tensor, roles: torch.Tensor, pooling: str) -> torch.Tensor:
    """``[N, L, D]`` rows of single chunks -> ``[N, D]`` unit pooled vectors (float32)."""
    return torch.nn.functional.normalize(pool_rows(rows, roles, pooling), dim=-1)


def nuisance_directions(clean: torch.Tensor, noisy: torch.Tensor, k: int = 1) -> torch.Tensor:
    """``[k, D]`` orthonormal directions along which ``noisy`` pooled vectors differ from their ``clean``
    counterparts (row by row: the same prompt without and with junk): the top right singular vectors of
    the differences, not centred, so the mean shift the junk causes counts."""
    if clean.shape != noisy.shape or clean.dim() != 2 or len(clean) == 0:
        raise ValueError(f"nuisance pairs must be two [N, D] tensors of one shape, got {tuple(clean.shape)} "
                         f"and {tuple(noisy.shape)}")
    diff = (noisy.double() - clean.double())
    _, _, vh = torch.linalg.svd(diff, full_matrices=False)
    return vh[:max(1, min(k, vh.shape[0]))].float()


def fit_prompt_detector(unsafe: torch.Tensor, benign: torch.Tensor, steps: int = 200,
                        nuisance: torch.Tensor | None = None) -> dict:
    """Centroid direction and Platt slope/bias from unit pooled vectors of unsafe and benign chunks.

    ``nuisance`` ``[k, D]`` (orthonormal rows, ``nuisance_directions``): directions projected out of the
    centroid direction before the slope and bias are fitted; the result reports the share of the
    direction's norm removed (``nuisance_removed``)."""
    if len(unsafe) == 0 or len(benign) == 0:
        raise ValueError("the prompt detector needs unsafe and benign chunks")
    unsafe, benign = unsafe.double(), benign.double()
    direction = unsafe.mean(0) - benign.mean(0)
    removed = 0.0
    if nuisance is not None and len(nuisance):
        basis = nuisance.double()
        kept = direction - basis.T @ (basis @ direction)
        removed = float(1.0 - kept.norm() / direction.norm().clamp_min(1e-12))
        direction = kept
    z_u, z_b = unsafe @ direction, benign @ direction
    # 1-D logistic regression, classes weighted equally; z standardised for a well-conditioned fit
    z = torch.cat([z_u, z_b])
    y = torch.cat([torch.ones_like(z_u), torch.zeros_like(z_b)])
    w = torch.cat([torch.full_like(z_u, 0.5 / len(z_u)), torch.full_like(z_b, 0.5 / len(z_b))])
    mu, sd = float(z.mean()), float(z.std().clamp_min(1e-12))
    zs = (z - mu) / sd
    a, b = torch.zeros((), dtype=torch.double), torch.zeros((), dtype=torch.double)
    for _ in range(steps):  # Newton's method on two parameters, with a tiny ridge for separable data
        p = torch.sigmoid(a * zs + b)
        g = torch.stack([(w * (p - y) * zs).sum() + 1e-4 * a, (w * (p - y)).sum()])
        h = w * p * (1 - p)
        hess = torch.stack([torch.stack([(h * zs * zs).sum() + 1e-4, (h * zs).sum()]),
                            torch.stack([(h * zs).sum(), h.sum()])])
        step = torch.linalg.solve(hess, g)
        a, b = a - step[0], b - step[1]
        if float(step.abs().max()) < 1e-10:
            break
    slope, bias = float(a) / sd, float(b) - float(a) * mu / sd
    return {"direction": direction.float(), "slope": slope, "bias": bias, "nuisance_removed": removed}


def prompt_probability(vectors: torch.Tensor, direction: torch.Tensor, slope, bias) -> torch.Tensor:
    """``[N, D]`` unit pooled vectors -> ``[N]`` probabilities in [0, 1] (slope, bias: floats or 0-d tensors)."""
    z = vectors.float() @ direction.to(vectors.device, torch.float32)
    return torch.sigmoid(slope * z + bias)


def chunk_has_words(roles: torch.Tensor) -> torch.Tensor:
    """``[N, L]`` roles -> ``[N]``: chunks with at least one word (an empty padding chunk scores 0)."""
    return (roles == ROLE_WORD).any(-1)
