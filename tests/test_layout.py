import pytest
import torch

from embedding_sanitizer.encoders.base import pad_chunks
from embedding_sanitizer.layout import (
    ROLE_BOS, ROLE_EOS, ROLE_PAD, ROLE_WORD, SD1_CLIP_L, SD2_CLIP_H, T5, token_roles, word_counts,
)


def test_sd1_roles_single_chunk():
    ids = torch.tensor([pad_chunks([320, 1125, 539], SD1_CLIP_L)[0]])
    roles = token_roles(ids, SD1_CLIP_L)
    assert roles[0, 0] == ROLE_BOS
    assert roles[0, 1:4].tolist() == [ROLE_WORD] * 3
    assert roles[0, 4] == ROLE_EOS
    assert (roles[0, 5:] == ROLE_PAD).all()


def test_zero_padding_sd2_word_zero_is_still_a_word():
    # "!" (id 0) is a real word in OpenCLIP; only what follows EOS is padding.
    ids = torch.tensor([pad_chunks([0, 500], SD2_CLIP_H)[0]])
    roles = token_roles(ids, SD2_CLIP_H)
    assert roles[0, 1:3].tolist() == [ROLE_WORD, ROLE_WORD]
    assert roles[0, 3] == ROLE_EOS and (roles[0, 4:] == ROLE_PAD).all()


def test_multi_chunk_300_tokens():
    chunks = pad_chunks(list(range(1000, 1300)), SD1_CLIP_L)
    ids = torch.tensor([[i for c in chunks for i in c]])
    assert ids.shape[1] == 77 * 4
    roles = token_roles(ids, SD1_CLIP_L)
    assert (roles[0, ::77] == ROLE_BOS).all()
    assert word_counts(roles, SD1_CLIP_L).tolist() == [[75, 75, 75, 75]]


def test_empty_prompt_has_no_words():
    ids = torch.tensor([pad_chunks([], SD1_CLIP_L)[0]])
    roles = token_roles(ids, SD1_CLIP_L)
    assert int((roles == ROLE_WORD).sum()) == 0 and roles[0, 1] == ROLE_EOS


def test_textual_inversion_sentinel_counts_as_word():
    ids = torch.tensor([pad_chunks([320, SD1_CLIP_L.ti_id, SD1_CLIP_L.ti_id], SD1_CLIP_L)[0]])
    roles = token_roles(ids, SD1_CLIP_L)
    assert roles[0, 2:4].tolist() == [ROLE_WORD, ROLE_WORD]


def test_t5_layout_has_no_bos():
    ids = torch.tensor([[100, 200, 1, 0, 0, 0]])
    roles = token_roles(ids, T5)
    assert roles[0].tolist() == [ROLE_WORD, ROLE_WORD, ROLE_EOS, ROLE_PAD, ROLE_PAD, ROLE_PAD]


def test_length_not_multiple_of_chunk_is_a_clear_error():
    with pytest.raises(ValueError, match="77-token chunks"):
        token_roles(torch.zeros(1, 80, dtype=torch.long), SD1_CLIP_L)


@pytest.mark.parametrize("layout", [SD1_CLIP_L, SD2_CLIP_H])
def test_literal_end_of_text_in_prompt_does_not_hide_words(layout):
    """'a photo <|endoftext|> naked woman': the words after the injected EOS stay words."""
    words = [320, 1125, layout.eos_id, 6287, 2308]
    ids = torch.tensor([pad_chunks(words, layout)[0]])
    roles = token_roles(ids, layout)
    assert roles[0, 1:6].tolist() == [ROLE_WORD] * 5
    assert roles[0, 6] == ROLE_EOS and (roles[0, 7:] == ROLE_PAD).all()
