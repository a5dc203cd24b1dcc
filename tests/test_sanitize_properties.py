"""Invariants of the core entry, checked as properties over random prompts and settings."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from embedding_sanitizer import Sanitizer, SanitizerInputError, Settings
from embedding_sanitizer.es_model import ESConfig, EmbeddingSanitizerNet
from embedding_sanitizer.layout import ROLE_BOS, SD1_CLIP_L
from embedding_sanitizer.encoders.base import pad_chunks

WORDS = ["a", "photo", "of", "naked", "woman", "beach", "blood", "gore", "cat", "chair", "nude", "violence",
         "sunset", "red", "car", "corpse", "forest", "city", "dog", "erotic"]
CONCEPTS = "nudity, naked, violence, gore, blood"


def random_es(width: int, seed: int = 0) -> EmbeddingSanitizerNet:
    torch.manual_seed(seed)
    model = EmbeddingSanitizerNet(ESConfig(width=width, hidden=32, layers=1, heads=2))
    for p in model.delta_head.parameters():  # a fresh model is the identity; make it edit
        torch.nn.init.normal_(p, std=0.1)
    with torch.no_grad():
        model.score_head[-1].bias.fill_(2.0)  # score most words highly so edits happen
    return model.eval()


@pytest.fixture(scope="module")
def sanitizer(hash_encoder):
    return Sanitizer(hash_encoder, es_model=random_es(hash_encoder.width), es_meta={"encoder_name": "hash-tiny"})


prompts = st.lists(st.sampled_from(WORDS), min_size=0, max_size=160).map(" ".join)
modes = st.sampled_from(["es", "safree", "es+safree"])
detectors = st.sampled_from(["fast", "loo"])
intensities = st.floats(min_value=0.0, max_value=3.0, allow_nan=False)
prop = hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run(sanitizer, encoder, texts, **changes):
    batch, out = encoder.encode_texts(texts)
    cfg = Settings(concepts=CONCEPTS, **changes)
    return batch, out, sanitizer.sanitize(out.tokens, batch.ids, encoder.layout, cfg)


@prop
@given(prompt=prompts, mode=modes, detector=detectors)
def test_intensity_zero_is_bit_identical(sanitizer, hash_encoder, prompt, mode, detector):
    _, out, result = run(sanitizer, hash_encoder, [prompt], mode=mode, detector=detector, preset="custom",
                         intensity=0.0)
    assert torch.equal(result.embeddings, out.tokens)
    assert not result.changed


@prop
@given(prompt=prompts, mode=modes, detector=detectors, intensity=intensities,
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_bos_shape_dtype_device_and_score_range(sanitizer, hash_encoder, prompt, mode, detector, intensity, dtype):
    batch, out = hash_encoder.encode_texts([prompt, "a cat on a chair"])
    emb = out.tokens.to(dtype)
    cfg = Settings(concepts=CONCEPTS, mode=mode, detector=detector, preset="custom", intensity=intensity)
    result = sanitizer.sanitize(emb, batch.ids, SD1_CLIP_L, cfg)
    assert result.embeddings.shape == emb.shape
    assert result.embeddings.dtype == dtype and result.embeddings.device == emb.device
    assert torch.equal(result.embeddings[:, ::77], emb[:, ::77])  # BOS of every chunk
    assert ((result.scores >= 0) & (result.scores <= 1)).all()
    assert (result.weights[result.roles == ROLE_BOS] == 0).all()


@prop
@given(prompt=prompts, mode=modes)
def test_padding_does_not_change_scores(sanitizer, hash_encoder, prompt, mode):
    """Appending an empty chunk (as hosts do to align cond/uncond) changes no score."""
    batch, out = hash_encoder.encode_texts([prompt])
    empty = torch.tensor([pad_chunks([], SD1_CLIP_L)[0]])
    ids_padded = torch.cat([batch.ids, empty], dim=1)
    rows_padded = hash_encoder.encode(ids_padded).tokens
    cfg = Settings(concepts=CONCEPTS, mode=mode)
    plain = sanitizer.sanitize(out.tokens, batch.ids, SD1_CLIP_L, cfg)
    padded = sanitizer.sanitize(rows_padded, ids_padded, SD1_CLIP_L, cfg)
    total = batch.ids.shape[1]
    assert torch.allclose(padded.scores[:, :total], plain.scores, atol=1e-6)
    assert (padded.scores[:, total:] == 0).all()


def test_untouched_rows_are_bit_identical(sanitizer, hash_encoder):
    _, out, result = run(sanitizer, hash_encoder, ["a naked woman on a beach at sunset"], mode="safree")
    untouched = result.weights == 0
    assert torch.equal(result.embeddings[untouched], out.tokens[untouched])


def test_higher_intensity_moves_further(sanitizer, hash_encoder):
    batch, out = hash_encoder.encode_texts(["naked gore blood corpse nude"])
    dist = []
    for intensity in (0.5, 1.0, 2.0):
        cfg = Settings(concepts=CONCEPTS, mode="safree", preset="custom", intensity=intensity)
        r = sanitizer.sanitize(out.tokens, batch.ids, SD1_CLIP_L, cfg)
        dist.append(float((r.embeddings - out.tokens).norm()))
    assert dist[0] < dist[1] < dist[2]


def test_disabled_and_off_are_identity(sanitizer, hash_encoder):
    for changes in ({"enabled": False}, {"mode": "off"}):
        _, out, result = run(sanitizer, hash_encoder, ["naked gore"], **changes)
        assert result.embeddings is out.tokens
        assert result.report["prompts"][0]["rows_edited"] == 0


def test_report_is_json_serialisable(sanitizer, hash_encoder):
    import json

    batch, out = hash_encoder.encode_texts(["a naked woman covered in blood"])
    result = sanitizer.sanitize(out.tokens, batch.ids, SD1_CLIP_L, Settings(concepts=CONCEPTS, mode="es+safree"),
                                pieces=batch.pieces)
    text = json.dumps(result.report)
    assert "prompts" in text and result.report["settings"]["mode"] == "es+safree"


def test_multi_chunk_300_token_prompt(sanitizer, hash_encoder):
    prompt = " ".join(WORDS * 15)  # 300 words
    batch, out, result = run(sanitizer, hash_encoder, [prompt], mode="es+safree", detector="loo")
    assert out.tokens.shape[1] == 77 * 4
    assert result.embeddings.shape == out.tokens.shape
    assert torch.equal(result.embeddings[:, ::77], out.tokens[:, ::77])


def test_empty_prompt(sanitizer, hash_encoder):
    for detector in ("fast", "loo"):
        _, out, result = run(sanitizer, hash_encoder, [""], mode="es+safree", detector=detector)
        assert torch.equal(result.embeddings, out.tokens)
        assert result.report["prompts"][0]["words"] == 0


def test_textual_inversion_positions(sanitizer, hash_encoder):
    """TI vectors have no id: LOO falls back to the fast detector and says so."""
    batch, out = hash_encoder.encode_texts(["a naked woman on a beach"])
    ids = batch.ids.clone()
    ids[0, 2] = SD1_CLIP_L.ti_id
    result = sanitizer.sanitize(out.tokens, ids, SD1_CLIP_L, Settings(concepts=CONCEPTS, detector="loo"))
    assert any("textual-inversion" in note for note in result.report["notes"])
    assert result.embeddings.shape == out.tokens.shape


def test_nan_input_is_a_clear_error(sanitizer, hash_encoder):
    batch, out = hash_encoder.encode_texts(["a cat"])
    bad = out.tokens.clone()
    bad[0, 3, 0] = float("nan")
    with pytest.raises(SanitizerInputError, match="NaN"):
        sanitizer.sanitize(bad, batch.ids, SD1_CLIP_L, Settings(concepts=CONCEPTS))


def test_wrong_width_weights_is_a_clear_error(hash_encoder):
    wrong = Sanitizer(hash_encoder, es_model=random_es(48), es_meta={"encoder_name": "clip-big"})
    batch, out = hash_encoder.encode_texts(["a cat"])
    with pytest.raises(SanitizerInputError, match="clip-big.*width 48.*width 32"):
        wrong.sanitize(out.tokens, batch.ids, SD1_CLIP_L, Settings(mode="es"))


def test_es_without_weights_is_a_clear_error(hash_encoder):
    batch, out = hash_encoder.encode_texts(["a cat"])
    with pytest.raises(SanitizerInputError, match="calibrated sanitizer weights"):
        Sanitizer(hash_encoder).sanitize(out.tokens, batch.ids, SD1_CLIP_L, Settings(mode="es"))


def test_empty_concept_list_is_a_clear_error(sanitizer, hash_encoder):
    batch, out = hash_encoder.encode_texts(["a cat"])
    with pytest.raises(ValueError, match="concept list is empty"):
        sanitizer.sanitize(out.tokens, batch.ids, SD1_CLIP_L, Settings(concepts=" , "))


def test_shape_mismatch_is_a_clear_error(sanitizer, hash_encoder):
    batch, out = hash_encoder.encode_texts(["a cat"])
    with pytest.raises(SanitizerInputError, match="do not match"):
        sanitizer.sanitize(out.tokens, batch.ids[:, :50], SD1_CLIP_L, Settings())


def test_svf_schedule_fraction(sanitizer, hash_encoder):
    _, _, result = run(sanitizer, hash_encoder, ["naked gore blood", "a cat"], mode="safree", detector="loo",
                       schedule="svf")
    assert result.schedule_end is not None and len(result.schedule_end) == 2
    assert all(0.0 <= f <= 11 / 50 for f in result.schedule_end)
