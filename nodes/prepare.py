"""The sanitizer CLIP node's own check run: everything an encode needs is loaded and validated in the node.

The patched CLIP encodes lazily (inside the downstream CLIPTextEncode), so without this a bad setting
would turn the encode node red instead of the sanitizer node. ``prepare`` encodes the empty prompt once
through the patched clone with the host's own ``encode_from_tokens`` (its clip options and model loading);
the proxy hands that encode to ``Preparation.run`` instead of sanitizing it for a graph. For every
text-encoder stream it resolves the weights (``mode 'es' needs weights``, a weights file that does not
match), builds the concept subspaces (an empty or too long concept list) and the pooled span with a
progress callback, and sanitizes the empty prompt. What it builds is kept where the encodes look for it:
the patch's per-stream sanitizers and the core's subspace caches. Nothing is pushed to the browser or
written to the audit log.
"""
from __future__ import annotations

import torch

from embedding_sanitizer.pooled import DEFAULT_POOLED_CACHE
from embedding_sanitizer.reference_prompts import NEUTRAL_PROMPTS

from .proxy import Patch, record_encode
from .streams import POOLED
from .weights import mismatch_notes


class Preparation:
    """One check run of a patch; ``progress_factory(total)`` returns ``advance(n)`` (a progress bar)."""

    def __init__(self, patch: Patch, progress_factory=None) -> None:
        self.patch = patch
        self.progress_factory = progress_factory
        self.notes: list[str] = []
        self.streams: list[str] = []

    def run(self, inner, tokenizer, token_weight_pairs):
        patch = self.patch
        record = record_encode(inner, tokenizer, token_weight_pairs)
        if record.family is None or not all(_finite(rec.output) for rec in record.streams):
            # not covered (apply() refuses under a lock, notes it otherwise), or a broken model: the encode's own
            # check gives its message ("embeddings contain NaN") before any concept is encoded
            return patch.apply(record)[0]
        plans = []
        for rec in record.streams:
            sanitizer, settings, notes = patch._sanitizer_for(rec, len(record.streams))
            self.notes += [n for n in notes + mismatch_notes(rec.stream, rec.encoder) if n not in self.notes]
            active = settings.enabled and settings.mode != "off"  # a switched-off node encodes no concepts
            lists = settings.projection_concept_lists if active and settings.uses_projection else ()
            pooled = rec.stream in POOLED.get(record.family, ((), ""))[0] and settings.effective_intensity > 0
            plans.append((rec, sanitizer, lists, pooled, settings))
        total = sum(len(c) for _, _, lists, _, _ in plans for c in lists)
        total += sum(len(s.all_concepts) + len(NEUTRAL_PROMPTS) for _, _, _, pooled, s in plans if pooled)
        advance = self.progress_factory(total) if self.progress_factory is not None and total else None
        for rec, sanitizer, lists, pooled, settings in plans:
            self.streams.append(rec.stream)
            for concepts in lists:
                sanitizer.cache.get(rec.encoder, concepts, progress=_stepper(advance))
            if pooled:
                def host_pooled(texts, _enc=rec.encoder, _step=_stepper(advance)):
                    return _enc.host_pooled(texts, progress=_step)

                DEFAULT_POOLED_CACHE.get(rec.encoder.pooled_key, host_pooled, settings.all_concepts)
        out, _entry = patch.apply(record)  # the empty prompt through every stage (alignment, NaN, policy)
        return out


def _finite(output) -> bool:
    rows = output[0] if output else None
    return not torch.is_tensor(rows) or bool(torch.isfinite(rows).all())


def _stepper(advance):
    """``progress(done, total)`` of one build -> increments of the shared bar."""
    if advance is None:
        return None
    state = {"done": 0}

    def progress(done, total):
        if done < state["done"]:  # a new call of the same builder (the pooled span's neutral prompts)
            state["done"] = 0
        advance(done - state["done"])
        state["done"] = done

    return progress


def prepare(clone, patch: Patch, progress_factory=None) -> Preparation:
    """Run the check on ``clone`` (a CLIP patched with ``patch``); raises what an encode would raise."""
    preparation = Preparation(patch, progress_factory)
    patch.preparing = preparation.run
    try:
        clone.encode_from_tokens(clone.tokenize(""), return_pooled=True)
    finally:
        patch.preparing = None
    return preparation


def comfy_progress(total: int):
    """A ComfyUI progress bar on the running node (the server shows it on the node)."""
    import comfy.utils

    bar = comfy.utils.ProgressBar(total)
    return bar.update
