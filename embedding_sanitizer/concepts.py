"""Building and caching concept subspaces for an encoder."""
from __future__ import annotations

import logging
import threading

import torch

from .layout import ROLE_EOS, ROLE_PAD, ROLE_WORD, token_roles
from .projection import ConceptSubspace, NullCalibration, orthonormal_basis, projector, relevance
from .reference_prompts import NEUTRAL_PROMPTS

log = logging.getLogger(__name__)


class EmptyConceptList(ValueError):
    """The concept list is empty: there is nothing to remove."""


def neutral_rows(encoder) -> tuple[torch.Tensor, torch.Tensor]:
    """Word rows and EOS/padding rows of the neutral reference prompts (float32)."""
    batch = encoder.tokenize(list(NEUTRAL_PROMPTS))
    rows = encoder.encode(batch.ids).tokens.to(torch.float32)
    roles = token_roles(batch.ids, encoder.layout).to(rows.device)
    return rows[roles == ROLE_WORD], rows[(roles == ROLE_EOS) | (roles == ROLE_PAD)]


def build_subspace(encoder, concepts: tuple[str, ...],
                   neutral: tuple[torch.Tensor, torch.Tensor] | None = None) -> ConceptSubspace:
    """Encode the concepts (and, unless given, the neutral reference prompts) with ``encoder``."""
    if not concepts:
        raise EmptyConceptList("the concept list is empty: give at least one concept (e.g. 'nudity')")
    concept_batch = encoder.tokenize(list(concepts))
    concept_out = encoder.encode(concept_batch.ids)
    concept_roles = token_roles(concept_batch.ids, encoder.layout).to(concept_out.tokens.device)
    tokens = concept_out.tokens.to(torch.float32)
    is_word = (concept_roles == ROLE_WORD).unsqueeze(-1).to(torch.float32)
    word_mean = (tokens * is_word).sum(1) / is_word.sum(1).clamp_min(1)
    pooled = concept_out.pooled.to(torch.float32)

    neutral_words, neutral_tail = neutral if neutral is not None else neutral_rows(encoder)
    word_center = neutral_words.mean(0)
    pooled_center = neutral_tail.mean(0)

    word_basis = orthonormal_basis(word_mean - word_center)
    pooled_basis = orthonormal_basis(pooled - pooled_center)
    calibration = NullCalibration.from_samples(relevance(neutral_words, word_basis, word_center))
    return ConceptSubspace(
        concepts=tuple(concepts), pooled=pooled, words=word_mean, projector=projector(pooled),
        word_center=word_center, pooled_center=pooled_center, word_basis=word_basis,
        pooled_basis=pooled_basis, calibration=calibration,
        encoder_fingerprint=getattr(encoder, "fingerprint", ""),
    )


class SubspaceCache:
    """Concept subspaces keyed by (encoder fingerprint, concept list); thread-safe."""

    def __init__(self, max_entries: int = 16) -> None:
        self._entries: dict[tuple, ConceptSubspace] = {}
        self._neutral: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, encoder, concepts: tuple[str, ...]) -> ConceptSubspace:
        key = (encoder.cache_key, tuple(c.lower() for c in concepts))
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None:
            return hit
        log.info("building concept subspace for %d concept(s) on encoder %s", len(concepts), encoder.name)
        with torch.inference_mode():
            neutral = self._neutral.get(encoder.cache_key)
            if neutral is None:  # the neutral prompts are encoded once per encoder, not per concept list
                neutral = self._neutral[encoder.cache_key] = neutral_rows(encoder)
            built = build_subspace(encoder, concepts, neutral)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = built
        return built


DEFAULT_CACHE = SubspaceCache()
