"""The pooled vector of a webui text model that returns one (SDXL CLIP-G; Forge's Flux CLIP-L).

A1111 and Forge build SDXL's ``vector`` conditioning as the concatenation of CLIP-G's
pooled output (the second element of the text model's ``(z, pooled)`` result) and the
size/crop embeddings; Forge's Flux uses CLIP-L's pooled output as ``vector``. The hook
hands the pooled element here, so only that slice of ``vector`` can change. It is cleaned
in its own concept span (``embedding_sanitizer.pooled``) built from the host's own pooled
outputs of the concept list, with the largest edit weight of each prompt's word rows: a
prompt with no edited word keeps its pooled vector bit for bit.
"""
from __future__ import annotations

import torch

from embedding_sanitizer.pooled import DEFAULT_POOLED_CACHE, prompt_weights, sanitize_pooled

BATCH = 16


def host_pooled(encoder, texts) -> torch.Tensor:
    """``[N, Dp]`` float32 on the CPU: the host's own pooled output for each text.

    The host's forward returns the pooled output of the first chunk, computed by
    ``process_tokens`` (the transformer's pooled/projected output, before emphasis); the same
    call is made here on each text's first chunk.
    """
    host = encoder.host
    batch_chunks, _ = host.process_texts(list(texts))
    firsts = [chunks[0] if chunks else host.empty_chunk() for chunks in batch_chunks]
    out = []
    with torch.no_grad():
        for start in range(0, len(firsts), BATCH):
            part = firsts[start:start + BATCH]
            z = host.process_tokens([list(c.tokens) for c in part], [list(c.multipliers) for c in part])
            pooled = getattr(z, "pooled", None)
            if not isinstance(pooled, torch.Tensor):
                raise RuntimeError(f"{type(host).__name__} returns no pooled output from process_tokens")
            out.append(pooled.float().cpu())
    return torch.cat(out)


def sanitize_rest(encoder, state, result, rest: tuple) -> tuple:
    """The host output after the token rows, with its pooled vector (``rest[0]``) replaced by a new tensor."""
    if not rest or not isinstance(rest[0], torch.Tensor) or rest[0].dim() != 2:
        return rest
    pooled = rest[0]
    weight = prompt_weights(result.weights, result.roles).to(torch.float32)
    if weight.shape[0] != pooled.shape[0]:
        raise RuntimeError(f"Embedding Sanitizer: pooled output of {tuple(pooled.shape)} for {weight.shape[0]} "
                           "prompts; this webui version returns pooled vectors differently")
    largest = float(weight.max()) if weight.numel() else 0.0
    if largest <= 0:
        return (pooled.clone(),) + tuple(rest[1:])
    subspace = DEFAULT_POOLED_CACHE.get(f"{encoder.cache_key}|pooled", lambda texts: host_pooled(encoder, texts),
                                        state.settings.all_concepts)
    note = f"{encoder.name} pooled vector: sanitized with weight {largest:.3g}"
    if note not in state.notes:
        state.notes.append(note)
    with torch.no_grad():  # the span is built under inference mode; the host output may track gradients
        new = sanitize_pooled(pooled, weight, subspace)
    return (new,) + tuple(rest[1:])
