"""Scores, flags and edits do not depend on the overall scale of the embedding (``embedding_sanitizer.scale``).

A1111's and Forge's emphasis rescales whole chunks by ``original mean / new mean``; scaling every row
by a constant ``c`` must leave scores and flags unchanged and scale the edit with it.
"""
import pytest
import torch
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from embedding_sanitizer import Sanitizer, Settings
from embedding_sanitizer.encoders.base import EncoderOutput
from embedding_sanitizer.scale import chunk_scales, reference_bos
from embedding_sanitizer.layout import token_roles
from tests.conftest import HashEncoder
from tests.test_sanitize_properties import CONCEPTS, WORDS, random_es

prompts = st.lists(st.sampled_from(WORDS), min_size=0, max_size=160).map(" ".join)
modes = st.sampled_from(["es", "safree", "es+safree"])
detectors = st.sampled_from(["fast", "loo"])
intensities = st.floats(min_value=0.0, max_value=3.0, allow_nan=False)
factors = st.floats(min_value=-3.0, max_value=1.5).map(lambda e: float(10 ** e))  # 0.001 .. 31.6
prop = hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def sanitizer(hash_encoder):
    return Sanitizer(hash_encoder, es_model=random_es(hash_encoder.width), es_meta={"encoder_name": "hash-tiny"})


def both(sanitizer, encoder, texts, c, **changes):
    batch, out = encoder.encode_texts(texts)
    cfg = Settings(concepts=CONCEPTS, **changes)
    plain = sanitizer.sanitize(out.tokens, batch.ids, encoder.layout, cfg)
    scaled = sanitizer.sanitize(out.tokens * c, batch.ids, encoder.layout, cfg)
    return out.tokens, plain, scaled


def assert_equivariant(x, plain, scaled, c):
    assert torch.allclose(scaled.scores, plain.scores, atol=1e-4), float((scaled.scores - plain.scores).abs().max())
    assert torch.equal(scaled.flagged, plain.flagged)
    assert torch.allclose(scaled.weights, plain.weights, atol=1e-4)
    tol = 1e-4 * abs(c) * float(plain.embeddings.abs().max()) + 1e-30
    assert torch.allclose(scaled.embeddings, c * plain.embeddings, rtol=1e-4, atol=tol), \
        float((scaled.embeddings - c * plain.embeddings).abs().max())
    assert [p["flagged"] for p in scaled.report["prompts"]] == [p["flagged"] for p in plain.report["prompts"]]


@prop
@given(prompt=prompts, mode=modes, detector=detectors, intensity=intensities, c=factors)
def test_scaling_every_row_leaves_scores_and_flags_and_scales_the_edit(sanitizer, hash_encoder, prompt, mode,
                                                                         detector, intensity, c):
    x, plain, scaled = both(sanitizer, hash_encoder, [prompt, "a naked woman in blood"], c, mode=mode,
                            detector=detector, preset="custom", intensity=intensity)
    assert_equivariant(x, plain, scaled, c)
    if intensity == 0:
        assert torch.equal(scaled.embeddings, x * c), "intensity 0 is the exact identity at any scale"


@prop
@given(prompt=prompts, mode=modes, c=factors)
def test_intensity_zero_is_the_exact_identity_at_any_scale(sanitizer, hash_encoder, prompt, mode, c):
    batch, out = hash_encoder.encode_texts([prompt])
    x = out.tokens * c
    result = sanitizer.sanitize(x, batch.ids, hash_encoder.layout,
                                Settings(concepts=CONCEPTS, mode=mode, preset="custom", intensity=0.0))
    assert torch.equal(result.embeddings, x) and not result.changed


def test_each_chunk_has_its_own_scale_and_a_sign_flip_is_undone(sanitizer, hash_encoder):
    """The webui rescales chunk by chunk (one ratio per chunk of the batch); a negative ratio flips the rows."""
    text = " ".join(["a naked woman covered in blood"] * 20)  # 120 words: two chunks
    batch, out = hash_encoder.encode_texts([text])
    x = out.tokens
    assert x.shape[1] == 154
    factor = torch.ones(1, 154, 1)
    factor[:, :77] = 0.02
    factor[:, 77:] = -7.0
    cfg = Settings(concepts=CONCEPTS, mode="es+safree", preset="max")
    plain = sanitizer.sanitize(x, batch.ids, hash_encoder.layout, cfg)
    scaled = sanitizer.sanitize(x * factor, batch.ids, hash_encoder.layout, cfg)
    assert plain.changed and plain.flagged.any()
    assert torch.equal(scaled.flagged, plain.flagged)
    assert torch.allclose(scaled.scores, plain.scores, atol=1e-4)
    assert torch.allclose(scaled.embeddings, plain.embeddings * factor, rtol=1e-4, atol=1e-5)
    assert scaled.scales is not None and torch.allclose(scaled.scales, torch.tensor([[0.02, -7.0]]), rtol=1e-5)
    assert plain.scales is None, "an unscaled embedding is left exactly as it is"


def test_unscaled_embedding_is_not_touched_by_the_scale_step(sanitizer, hash_encoder):
    batch, out = hash_encoder.encode_texts(["a naked woman"])
    rows = out.tokens
    ref = reference_bos(hash_encoder)
    scales, unreadable = chunk_scales(rows, token_roles(batch.ids, hash_encoder.layout), 77, ref)
    assert unreadable == 0 and torch.equal(scales, torch.ones(1, 1))


class BidirectionalEncoder(HashEncoder):
    """Every row sees the whole chunk: the BOS row depends on the prompt."""

    name = "hash-bidirectional"

    def encode_chunks(self, ids):
        x = self.table[ids.clamp_min(0)]
        rows = 0.5 * x + 0.5 * x.mean(1, keepdim=True)
        return EncoderOutput(rows, rows[:, 0])


def test_an_encoder_with_a_prompt_dependent_bos_row_is_not_rescaled():
    encoder = BidirectionalEncoder(seed=3)
    assert reference_bos(encoder) is None
    batch, out = encoder.encode_texts(["a naked woman"])
    result = Sanitizer(encoder).sanitize(out.tokens * 5.0, batch.ids, encoder.layout,
                                         Settings(concepts=CONCEPTS, preset="max"))
    assert result.scales is None


def test_a_bos_row_changed_by_something_else_is_noted_and_left_unscaled(sanitizer, hash_encoder):
    batch, out = hash_encoder.encode_texts(["a naked woman"])
    x = out.tokens.clone()
    x[:, 0] = torch.randn(x.shape[-1], generator=torch.Generator().manual_seed(5))
    result = sanitizer.sanitize(x, batch.ids, hash_encoder.layout, Settings(concepts=CONCEPTS, preset="max"))
    assert result.scales is None
    assert any("BOS row that does not match" in n for n in result.report["notes"])


def test_the_normalised_text_check_replaces_chunks_at_the_prompt_scale(sanitizer, hash_encoder):
    text = "n\u0430ked g\u043ere bl\u043eod"  # Cyrillic a and o: pieces the detectors do not know
    batch, out = hash_encoder.encode_texts([text])
    cfg = Settings(concepts=CONCEPTS, mode="es+safree", preset="medium")
    plain = sanitizer.sanitize(out.tokens, batch.ids, hash_encoder.layout, cfg, texts=[text])
    assert plain.report["prompts"][0]["normalized"]["chunks_replaced"] == [0]
    scaled = sanitizer.sanitize(out.tokens * 0.3, batch.ids, hash_encoder.layout, cfg, texts=[text])
    assert scaled.report["prompts"][0]["normalized"]["chunks_replaced"] == [0]
    assert torch.equal(scaled.flagged, plain.flagged)
    assert torch.allclose(scaled.embeddings, 0.3 * plain.embeddings, rtol=1e-4, atol=1e-6)
