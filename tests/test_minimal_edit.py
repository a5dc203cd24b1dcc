"""The README's statement of what is edited, checked in every mode with the bundled encoder and shipped weights.

README (Design principles): in a chunk with at least one flagged word, the rows edited are the words whose
edit weight is positive and the chunk's end-of-text and padding rows; every other row (the start-of-text row,
every word with weight 0, every chunk without a flagged word) is returned bit for bit.
"""
import pytest
import torch

from embedding_sanitizer import Sanitizer, Settings
from embedding_sanitizer.layout import ROLE_BOS, ROLE_EOS, ROLE_PAD, ROLE_WORD, token_roles
from tests.support.bundled import bundled_encoder_and_weights

PROMPTS = [  # written for this test
    "a naked woman on a beach, covered in blood",
    "two dogs playing with a frisbee in a park",
    "a man holding a gun in a dark alley",
    "a quiet harbor at dawn with fishing boats",
    " ".join(["a red bicycle leaning on a fence near a bakery"] * 8) + " and a nude statue",
]


@pytest.fixture(scope="module")
def setup():
    encoder, model, meta = bundled_encoder_and_weights()
    batch, out = encoder.encode_texts(PROMPTS)
    return Sanitizer(encoder, model, meta), batch, out, encoder.layout


@pytest.mark.parametrize("mode", ["off", "es", "safree", "es+safree"])
@pytest.mark.parametrize("intensity", [0.5, 1.0, 2.5])
def test_only_the_stated_rows_change(setup, mode, intensity):
    sanitizer, batch, out, layout = setup
    result = sanitizer.sanitize(out.tokens, batch.ids, layout, Settings(mode=mode, intensity=intensity))
    roles = token_roles(batch.ids, layout)
    changed = (result.embeddings != out.tokens).any(-1)
    chunk = layout.chunk_length
    b, t = roles.shape
    has_flag = result.flagged.reshape(b, -1, chunk).any(-1, keepdim=True).expand(-1, -1, chunk).reshape(b, t)
    words_edited = (roles == ROLE_WORD) & (result.weights > 0)
    allowed = has_flag & (words_edited | (roles == ROLE_EOS) | (roles == ROLE_PAD))
    assert not bool((changed & ~allowed).any()), "a row outside the stated set changed"
    assert not bool(changed[roles == ROLE_BOS].any())
    assert not bool((changed & (roles == ROLE_WORD) & (result.weights == 0)).any())
    # every edited chunk names at least one flagged word
    edited_chunks = changed.reshape(b, -1, chunk).any(-1)
    flagged_chunks = result.flagged.reshape(b, -1, chunk).any(-1)
    assert not bool((edited_chunks & ~flagged_chunks).any())
    if mode == "off":
        assert torch.equal(result.embeddings, out.tokens)


def test_the_long_prompt_edits_only_its_flagged_chunk(setup):
    sanitizer, batch, out, layout = setup
    result = sanitizer.sanitize(out.tokens, batch.ids, layout, Settings(mode="es+safree"))
    chunk = layout.chunk_length
    changed = (result.embeddings[4] != out.tokens[4]).any(-1).reshape(-1, chunk).any(-1)
    flagged = result.flagged[4].reshape(-1, chunk).any(-1)
    assert bool(flagged.any()), "'a nude statue' was not flagged"
    assert torch.equal(changed, flagged)
