"""The overall scale of an embedding, read from its BOS rows, so that scores and edits do not depend on it.

Hosts may multiply every row of a chunk by one constant before the sanitizer sees it: A1111's and
Forge's "Original" emphasis multiplies the weighted rows, then rescales the whole chunk batch by
``original mean / new mean`` (a ratio that is far from 1 when the rows' mean is near 0). The detectors
and the learned sanitizer were calibrated on the encoder's own rows, so the core divides each chunk by
its scale ``c`` before scoring and editing, and multiplies the edited rows by ``c`` again: scores and
flags of ``c * x`` are those of ``x``, and the edit of ``c * x`` is ``c`` times the edit of ``x``.

``c`` is read from the chunk's BOS row. In a causal encoder (every CLIP text tower of SD1, SD2, SDXL
and Flux) the BOS row depends on nothing but the BOS token, so it is the same in every chunk of every
prompt, and ``c = <bos, ref> / <ref, ref>`` with ``ref`` the encoder's own BOS row is exactly the
host's factor (1 for an unscaled embedding, where nothing changes). The reference is measured once per
encoder and output layer (``encoder.cache_key``). Encoders whose BOS row depends on the prompt
(bidirectional ones, such as the MiniLM demo encoder) and layouts without BOS (T5) are not rescaled;
their hosts do not rescale either. A BOS row that does not point along the reference (another
extension changed it) leaves its chunk unscaled, and the report notes it.
"""
from __future__ import annotations

import logging
import threading

import torch

from .layout import ROLE_BOS

log = logging.getLogger(__name__)

SNAP = 1e-6  # |c - 1| up to this is rounding: the chunk is left exactly as it is
MIN_SCALE = 1e-6  # |c| below this cannot be undone reliably
MIN_COSINE = 0.98  # a BOS row less aligned with the reference was changed by something else
PROBES = ("", "a photo of a cat")

_REFERENCES: dict[str, torch.Tensor | None] = {}
_LOCK = threading.Lock()


def reference_bos(encoder) -> torch.Tensor | None:
    """The encoder's BOS row ``[D]`` (float32, CPU), or None when it depends on the prompt or there is none."""
    if encoder is None or getattr(encoder.layout, "bos_id", None) is None:
        return None
    key = encoder.cache_key
    with _LOCK:
        if key in _REFERENCES:
            return _REFERENCES[key]
    batch = encoder.tokenize(list(PROBES))
    with torch.no_grad():
        rows = encoder.encode(batch.ids).tokens
    first = rows[:, 0].detach().to("cpu", torch.float32)
    ref = first[0]
    spread = (first - ref).abs().amax()
    constant = bool(torch.isfinite(first).all()) and float(ref.norm()) > 0 and \
        float(spread) <= 1e-3 * float(ref.abs().amax())
    value = ref.clone() if constant else None
    if value is None:
        log.info("Embedding Sanitizer: %s has a prompt-dependent BOS row; embeddings are not rescaled",
                 getattr(encoder, "name", "encoder"))
    with _LOCK:
        _REFERENCES[key] = value
    return value


def chunk_scales(rows: torch.Tensor, roles: torch.Tensor, chunk: int, ref: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Scale ``[B, n]`` of every chunk of ``rows`` ``[B, T, D]`` (float32), and how many chunks had an unreadable
    scale (their scale is 1). Values within ``SNAP`` of 1 are exactly 1."""
    batch, total, width = rows.shape
    n = total // chunk
    bos = rows.reshape(batch, n, chunk, width)[:, :, 0].to(torch.float32)
    has_bos = roles.reshape(batch, n, chunk)[:, :, 0] == ROLE_BOS
    ref = ref.to(bos.device, torch.float32)
    c = (bos @ ref) / (ref @ ref)
    cosine = torch.nn.functional.cosine_similarity(bos, ref.expand_as(bos), dim=-1)
    readable = torch.isfinite(c) & (c.abs() >= MIN_SCALE) & (cosine.abs() >= MIN_COSINE)
    unreadable = int((has_bos & ~readable).sum())
    c = torch.where(has_bos & readable, c, torch.ones_like(c))
    c = torch.where((c - 1.0).abs() <= SNAP, torch.ones_like(c), c)
    return c, unreadable


def row_scales(sanitizer_encoder, rows: torch.Tensor, roles: torch.Tensor, chunk: int,
               notes: list[str]) -> torch.Tensor | None:
    """``[B, n]`` chunk scales for the sanitizer, or None when every chunk is at scale 1 (nothing to undo)."""
    try:
        ref = reference_bos(sanitizer_encoder)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        notes.append(f"embedding scale not read ({type(exc).__name__}: {exc}); scored as given")
        return None
    if ref is None or ref.shape[-1] != rows.shape[-1]:
        return None
    scales, unreadable = chunk_scales(rows, roles, chunk, ref)
    if unreadable:
        notes.append(f"{unreadable} chunk(s) with a BOS row that does not match the encoder's: their scale was "
                     "not read (scored as given)")
    if bool((scales == 1).all()):
        return None
    return scales


def expand(scales: torch.Tensor, chunk: int) -> torch.Tensor:
    """``[B, n]`` chunk scales -> ``[B, n * chunk, 1]`` row multipliers."""
    return scales.repeat_interleave(chunk, dim=1).unsqueeze(-1)
