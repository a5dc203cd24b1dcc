"""Long concept lists: batched encoding with progress, the same subspace as one whole-chunk batch, the cap."""
from __future__ import annotations

import pytest
import torch

from embedding_sanitizer.concepts import (
    MAX_CONCEPTS, ConceptListTooLong, EmptyConceptList, SubspaceCache, concept_means,
)
from embedding_sanitizer.layout import ROLE_WORD, token_roles
from embedding_sanitizer.settings import Settings, SettingsError, parse_concepts


@pytest.fixture(scope="module")
def clip():
    from embedding_sanitizer.encoders.clip_text import CLIPTextEncoder

    return CLIPTextEncoder.tiny_random(width=32, layers=2, heads=2, seed=5)


def whole_chunk_means(encoder, concepts):
    """The former single-batch computation: every concept encoded as whole 77-token chunks at once."""
    batch = encoder.tokenize(list(concepts))
    out = encoder.encode(batch.ids)
    roles = token_roles(batch.ids, encoder.layout)
    is_word = (roles == ROLE_WORD).unsqueeze(-1).float()
    tokens = out.tokens.float()
    return (tokens * is_word).sum(1) / is_word.sum(1).clamp_min(1), out.pooled.float()


def test_batched_short_chunks_match_one_whole_chunk_batch(clip):
    concepts = tuple(f"concept {i}" for i in range(150)) + ("a very long concept phrase with many words in it",)
    calls = []
    words, pooled = concept_means(clip, concepts, progress=lambda done, total: calls.append((done, total)),
                                  batch=64)
    ref_words, ref_pooled = whole_chunk_means(clip, concepts)
    assert torch.allclose(words, ref_words, atol=1e-5) and torch.allclose(pooled, ref_pooled, atol=1e-5)
    assert calls == [(64, 151), (128, 151), (151, 151)]


def test_multi_chunk_concepts_are_encoded_whole(clip):
    long = " ".join(["word"] * 90)  # two chunks: the whole padded length is encoded
    words, pooled = concept_means(clip, ("nudity", long))
    ref_words, ref_pooled = whole_chunk_means(clip, ("nudity", long))
    assert torch.allclose(words, ref_words, atol=1e-5) and torch.allclose(pooled, ref_pooled, atol=1e-5)


def test_cache_keyed_by_encoder_and_list_with_progress(clip):
    cache = SubspaceCache(references=False)
    calls = []
    first = cache.get(clip, ("nudity", "gore"), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 2)]
    assert cache.get(clip, ("Nudity", "GORE"), progress=lambda d, t: calls.append((d, t))) is first
    assert len(calls) == 1, "a cache hit encodes nothing"
    cache.clear()
    assert cache.get(clip, ("nudity", "gore")) is not first


def test_cap_and_empty_list_are_clear_errors(clip):
    too_many = ", ".join(f"c{i}" for i in range(MAX_CONCEPTS + 1))
    with pytest.raises(SettingsError, match=f"at most {MAX_CONCEPTS}"):
        Settings(concepts=too_many)
    assert len(Settings(concepts=", ".join(f"c{i}" for i in range(MAX_CONCEPTS))).concept_list) == MAX_CONCEPTS
    with pytest.raises(ConceptListTooLong, match=f"at most {MAX_CONCEPTS}"):
        SubspaceCache().get(clip, tuple(f"c{i}" for i in range(MAX_CONCEPTS + 1)))
    with pytest.raises(EmptyConceptList):
        SubspaceCache().get(clip, ())


def test_parse_concepts_is_linear_and_keeps_first_spelling():
    assert parse_concepts("Nudity, nudity, gore\nGORE, , blood") == ("Nudity", "gore", "blood")
    assert len(parse_concepts(", ".join(f"c{i}" for i in range(50000)))) == 50000


def test_concept_bench_reports_medians(clip):
    from embedding_sanitizer.evaluation.concept_bench import concept_list, time_concepts

    assert len(set(c.lower() for c in concept_list(1000))) == 1000
    result = time_concepts(clip, 20, repeats=1)
    assert result["concepts"] == 20 and result["first_list_s"] > 0 and result["later_list_s"] >= 0


def test_bench_concepts_only_refuses_more_than_the_cap(capsys):
    from embedding_sanitizer.cli import main

    assert main(["bench", "--concepts-only", str(MAX_CONCEPTS + 1)]) == 2
    assert f"1 to {MAX_CONCEPTS}" in capsys.readouterr().err
