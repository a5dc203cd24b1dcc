"""Building and caching concept subspaces for an encoder."""
from __future__ import annotations

import logging
import threading

import torch

from .corpus.generator import SUGGESTIVE_STRENGTH, CorpusGenerator
from .corpus.wordlists import HARD_NEGATIVES
from .layout import ROLE_EOS, ROLE_PAD, ROLE_WORD, token_roles
from .projection import ConceptSubspace, NullCalibration, context_vectors, orthonormal_basis, projector, relevance
from .reference_prompts import BENIGN_SENSES, NEUTRAL_PROMPTS
from .settings import MAX_CONCEPT_LIST, concept_cap_message

log = logging.getLogger(__name__)
REFERENCE_PER_TERM = 2  # generated unsafe prompts per term of the concept list (unsafe reference bank)
REFERENCE_UNSAFE = 100  # at least this many generated unsafe prompts
REFERENCE_UNSAFE_MAX = 600  # and at most this many
REFERENCE_BENIGN = 100  # generated benign prompts added to the benign reference bank
BENIGN_BANK_CONCEPTS = ("nudity", "violence")  # the generator's benign prompts for the (shared) benign bank
GATED_LAYOUTS = ("minilm",)  # where the contrast gate was measured (tools/measure_hard_negatives.py)


def gate_applies(layout) -> bool:
    """Whether the fast detector's contrast gate is used with this encoder layout: only where it was measured,
    the bundled BERT, whose rows see the words on both sides.

    Not CLIP: it is causal, so the row of "nude" in "a nude leather belt" is the row of "nude" in "a nude
    person"; a benign reference that starts like the prompt matches it exactly and the gate lowered unsafe
    words (the A1111 stand-in's random CLIP). Not T5 either until measured (the ComfyUI Flux test's random T5
    lost its edit). A real CLIP or T5 needs its own measurement before the gate is switched on for it.
    """
    return layout.name in GATED_LAYOUTS
REFERENCE_BATCH = 64
REFERENCE_SEED = 0
CONCEPT_BATCH = 64  # concepts encoded per text-encoder call (bounded memory, and a progress step each)
MAX_CONCEPTS = MAX_CONCEPT_LIST  # the documented cap (settings.py checks it when the settings are made)


class EmptyConceptList(ValueError):
    """The concept list is empty: there is nothing to remove."""


class ConceptListTooLong(ValueError):
    """More concepts than ``MAX_CONCEPTS``."""


def check_concept_count(concepts) -> None:
    if not concepts:
        raise EmptyConceptList("the concept list is empty: give at least one concept (e.g. 'nudity')")
    if len(concepts) > MAX_CONCEPTS:
        raise ConceptListTooLong(concept_cap_message(len(concepts)))


def concept_means(encoder, concepts: tuple[str, ...], progress=None,
                  batch: int = CONCEPT_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean word row ``[N, D]``, pooled row ``[N, D]``) of each concept, float32, in batches of ``batch``.

    The list is tokenized at once (one padded length, as one batch would have it), then encoded ``batch``
    concepts at a time; ``progress(done, total)`` is called after each batch. With a chunked layout (CLIP)
    a concept that fits one chunk is encoded only up to the last non-padding position of its batch: CLIP
    is causal, so its word and end-of-text rows do not depend on the padding after them (a host encoder
    that needs whole chunks pads them back itself). Longer concepts and unchunked layouts (T5) are encoded
    at their full padded length, as before.
    """
    ids = encoder.tokenize(list(concepts)).ids
    layout = encoder.layout
    roles = token_roles(ids, layout)
    words_out: list = [None] * len(concepts)
    pooled_out: list = [None] * len(concepts)
    one_chunk = layout.chunk_length is not None and ids.shape[1] == layout.chunk_length
    active = (roles != ROLE_PAD).sum(-1)
    order = torch.argsort(active, descending=True).tolist() if one_chunk else list(range(len(concepts)))
    for start in range(0, len(order), batch):
        part = order[start:start + batch]
        if one_chunk:
            width = int(active[part].max())
            out = encoder.encode_chunks(ids[part, :width])
            part_roles = roles[part, :width]
        else:
            out = encoder.encode(ids[part])
            part_roles = roles[part]
        tokens = out.tokens.to(torch.float32)
        is_word = (part_roles.to(tokens.device) == ROLE_WORD).unsqueeze(-1).to(torch.float32)
        means = (tokens * is_word).sum(1) / is_word.sum(1).clamp_min(1)
        pooled = out.pooled.to(torch.float32)
        for k, i in enumerate(part):
            words_out[i], pooled_out[i] = means[k], pooled[k]
        if progress is not None:
            progress(min(start + batch, len(order)), len(order))
    return torch.stack(words_out), torch.stack(pooled_out)


def neutral_rows(encoder) -> tuple[torch.Tensor, torch.Tensor]:
    """Word rows and EOS/padding rows of the neutral reference prompts (float32)."""
    batch = encoder.tokenize(list(NEUTRAL_PROMPTS))
    rows = encoder.encode(batch.ids).tokens.to(torch.float32)
    roles = token_roles(batch.ids, encoder.layout).to(rows.device)
    return rows[roles == ROLE_WORD], rows[(roles == ROLE_EOS) | (roles == ROLE_PAD)]


def _encoded_words(encoder, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(rows ``[L, D]`` float32, roles ``[L]``) of the first chunk of each text.

    The chunks are cut after their last non-padding position before encoding: word rows do not depend
    on trailing padding (CLIP is causal, the bundled BERT masks padding, host encoders pad short chunks
    back themselves), and the reference texts are short, so this is several times cheaper.
    """
    out: list = [None] * len(texts)
    batch = encoder.tokenize(list(texts)) if texts else None
    if batch is None:
        return []
    length = encoder.layout.chunk_length or batch.ids.shape[1]
    ids = batch.ids[:, :length]
    roles = token_roles(ids, encoder.layout, rows_are_chunks=True)
    active = (roles != ROLE_PAD).sum(-1)
    order = torch.argsort(active, descending=True).tolist()
    for start in range(0, len(order), REFERENCE_BATCH):
        part = order[start:start + REFERENCE_BATCH]
        width = int(active[part].max())
        rows = encoder.encode_chunks(ids[part, :width]).tokens.to(torch.float32)
        for k, i in enumerate(part):
            out[i] = (rows[k], roles[i, :width].to(rows.device))
    return out


def _word_counts(encoder, texts: list[str]) -> dict[str, int]:
    counts = {"": 0}
    for start in range(0, len(texts), 256):
        part = texts[start:start + 256]
        roles = token_roles(encoder.tokenize(part).ids, encoder.layout)
        counts.update(zip(part, (roles == ROLE_WORD).sum(-1).tolist()))
    return counts


def benign_bank(encoder, center: torch.Tensor, n_benign: int = REFERENCE_BENIGN,
                seed: int = REFERENCE_SEED) -> torch.Tensor:
    """Context vectors (``projection.context_vectors``) of the fast detector's benign reference bank.

    Every word of the neutral prompts, the calibration corpus's hard negatives, ``BENIGN_SENSES`` and
    ``n_benign`` benign prompts of the corpus generator. It does not depend on the concept list.
    """
    generator = CorpusGenerator(list(BENIGN_BANK_CONCEPTS), seed=seed)
    texts = list(NEUTRAL_PROMPTS) + list(HARD_NEGATIVES) + list(BENIGN_SENSES)
    texts += [generator.benign().text for _ in range(n_benign)]
    return torch.cat([context_vectors(rows[None], roles[None], center)[0][roles == ROLE_WORD]
                      for rows, roles in _encoded_words(encoder, texts)])


def unsafe_bank(encoder, concepts: tuple[str, ...], center: torch.Tensor, seed: int = REFERENCE_SEED) -> torch.Tensor:
    """Context vectors of the fast detector's unsafe reference bank for ``concepts``.

    The concept words (merely suggestive terms included) of prompts from the calibration corpus generator,
    about ``REFERENCE_PER_TERM`` per term of the concept list (between ``REFERENCE_UNSAFE`` and
    ``REFERENCE_UNSAFE_MAX`` prompts), and every word of each concept encoded alone.
    """
    generator = CorpusGenerator(list(concepts), seed=seed)
    n_unsafe = min(REFERENCE_UNSAFE_MAX, max(REFERENCE_UNSAFE, REFERENCE_PER_TERM * len(generator.terms)))
    unsafe = [s for s in generator.generate(n_unsafe, 0) if s.kind == "unsafe"]
    counts = _word_counts(encoder, sorted({seg.text for s in unsafe for seg in s.segments}))
    out, skipped = [], 0
    for sample, (rows, roles) in zip(unsafe, _encoded_words(encoder, [s.text for s in unsafe])):
        labels = [seg.strength if seg.concept else 0.0 for seg in sample.segments for _ in range(counts[seg.text])]
        word = roles == ROLE_WORD
        if len(labels) != int(word.sum()):  # the tokenizer merged across segments, or the prompt was cut
            skipped += 1
            continue
        vectors = context_vectors(rows[None], roles[None], center)[0][word]
        out.append(vectors[torch.tensor(labels, device=vectors.device) >= SUGGESTIVE_STRENGTH])
    for rows, roles in _encoded_words(encoder, list(concepts)):
        out.append(context_vectors(rows[None], roles[None], center)[0][roles == ROLE_WORD])
    if skipped:
        log.info("unsafe reference bank: %d of %d generated prompts skipped (token alignment)", skipped, len(unsafe))
    return torch.cat(out)


def build_subspace(encoder, concepts: tuple[str, ...],
                   neutral: tuple[torch.Tensor, torch.Tensor] | None = None,
                   references: bool = True, benign: torch.Tensor | None = None, progress=None) -> ConceptSubspace:
    """Encode the concepts (and, unless given, the neutral reference prompts) with ``encoder``.

    ``progress(done, total)``, when given, is called as the concepts are encoded (``concept_means``).
    """
    check_concept_count(concepts)
    word_mean, pooled = concept_means(encoder, tuple(concepts), progress)

    neutral_words, neutral_tail = neutral if neutral is not None else neutral_rows(encoder)
    word_center = neutral_words.mean(0)
    pooled_center = neutral_tail.mean(0)

    word_basis = orthonormal_basis(word_mean - word_center)
    pooled_basis = orthonormal_basis(pooled - pooled_center)
    calibration = NullCalibration.from_samples(relevance(neutral_words, word_basis, word_center))
    unsafe_refs = benign_refs = None
    if references:  # the contrast gate's banks; ``benign`` must have been built with this ``word_center``
        unsafe_refs = unsafe_bank(encoder, concepts, word_center)
        benign_refs = benign if benign is not None else benign_bank(encoder, word_center)
    return ConceptSubspace(
        concepts=tuple(concepts), pooled=pooled, words=word_mean, projector=projector(pooled),
        word_center=word_center, pooled_center=pooled_center, word_basis=word_basis,
        pooled_basis=pooled_basis, calibration=calibration,
        encoder_fingerprint=getattr(encoder, "fingerprint", ""),
        unsafe_refs=unsafe_refs, benign_refs=benign_refs,
    )


class SubspaceCache:
    """Concept subspaces keyed by (encoder fingerprint, concept list); thread-safe."""

    def __init__(self, max_entries: int = 16, references: bool = True) -> None:
        self.references = references  # False: no reference banks (the fast detector without its contrast gate)
        self._entries: dict[tuple, ConceptSubspace] = {}
        self._neutral: dict[str, tuple] = {}  # encoder -> (neutral word rows, tail rows, benign bank)
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def clear(self) -> None:
        """Forget every subspace and neutral reference (benchmarks; a changed reference set)."""
        with self._lock:
            self._entries.clear()
            self._neutral.clear()

    def get(self, encoder, concepts: tuple[str, ...], progress=None) -> ConceptSubspace:
        """The subspace of ``concepts`` on ``encoder`` (keyed by the encoder's fingerprint and the list, case
        folded); built on a miss, with ``progress(done, total)`` called as the concepts are encoded."""
        check_concept_count(concepts)
        key = (encoder.cache_key, tuple(c.lower() for c in concepts))
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None:
            return hit
        log.info("building concept subspace for %d concept(s) on encoder %s", len(concepts), encoder.name)
        with torch.inference_mode():
            references = self.references and gate_applies(encoder.layout)
            neutral = self._neutral.get(encoder.cache_key)
            if neutral is None:  # the neutral prompts and the benign bank are built once per encoder
                words, tail = neutral_rows(encoder)
                benign = benign_bank(encoder, words.mean(0)) if references else None
                neutral = self._neutral[encoder.cache_key] = (words, tail, benign)
            built = build_subspace(encoder, concepts, neutral[:2], references=references, benign=neutral[2],
                                   progress=progress)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = built
        return built


DEFAULT_CACHE = SubspaceCache()
