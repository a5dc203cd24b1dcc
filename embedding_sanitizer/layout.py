"""Chunk layout of a tokenized prompt, and the role of every position.

Hosts encode prompts in fixed-length chunks (CLIP: 77 = BOS + 75 tokens + EOS,
padded). A batch of token ids ``[B, T]`` with ``T = chunks * chunk_length`` is
classified position by position into BOS, WORD, EOS and PAD roles, without a
Python loop over tokens. Positions that hold a textual-inversion vector instead
of a vocabulary id carry the sentinel ``layout.ti_id`` and count as words.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

ROLE_BOS = 0
ROLE_WORD = 1
ROLE_EOS = 2
ROLE_PAD = 3
ROLE_NAMES = ("bos", "word", "eos", "pad")


@dataclass(frozen=True)
class ChunkLayout:
    """How one encoder lays out token ids.

    chunk_length: length of one chunk; ``None`` means the whole sequence is one chunk.
    bos_id: id at position 0 of every chunk, or ``None`` when the encoder has no BOS (T5).
    eos_id: the first occurrence after the words ends the prompt.
    pad_id: id used after EOS (informational; everything after the first EOS is padding).
    mask_id: id substituted for a token by the leave-one-out detector ("!" = 0 for CLIP).
    ti_id: sentinel id for positions holding a textual-inversion vector.
    """

    name: str = "clip-l"
    chunk_length: int | None = 77
    bos_id: int | None = 49406
    eos_id: int = 49407
    pad_id: int = 49407
    mask_id: int = 0
    ti_id: int = -1

    @property
    def max_words(self) -> int | None:
        if self.chunk_length is None:
            return None
        return self.chunk_length - 1 - (self.bos_id is not None)

    def chunk_len_for(self, total_length: int) -> int:
        length = self.chunk_length or total_length
        if total_length % length:
            raise ValueError(
                f"token sequence of length {total_length} is not a whole number of "
                f"{length}-token chunks for layout {self.name!r}"
            )
        return length

    def to_dict(self) -> dict:
        return {
            "name": self.name, "chunk_length": self.chunk_length, "bos_id": self.bos_id,
            "eos_id": self.eos_id, "pad_id": self.pad_id, "mask_id": self.mask_id,
        }


SD1_CLIP_L = ChunkLayout("sd1-clip-l", 77, 49406, 49407, 49407, 0)
SD2_CLIP_H = ChunkLayout("sd2-clip-h", 77, 49406, 49407, 0, 0)
SDXL_CLIP_L = ChunkLayout("sdxl-clip-l", 77, 49406, 49407, 49407, 0)
SDXL_CLIP_G = ChunkLayout("sdxl-clip-g", 77, 49406, 49407, 0, 0)
T5 = ChunkLayout("t5", None, None, 1, 0, 2)  # T5: no BOS, EOS 1, pad 0; mask with an unk-like id


def token_roles(token_ids: torch.Tensor, layout: ChunkLayout, rows_are_chunks: bool = False) -> torch.Tensor:
    """Role of every position of ``token_ids`` ``[B, T]`` as a long tensor ``[B, T]``.

    Per chunk: position 0 is BOS (when the layout has one); the prompt's EOS is
    the one that closes the chunk, everything after it is PAD, and everything
    before it is a WORD. "Closes the chunk" matters: a prompt may contain the
    literal end-of-text token, and words after it must stay words (otherwise
    they would hide from scoring as "padding"). So the EOS is the start of the
    trailing run of EOS ids when padding uses the EOS id (SD1), and the last EOS
    id otherwise (SD2/SDXL-G pad with 0, T5 pads with 0). A chunk without EOS (a
    truncated chunk) is all words after BOS. With ``rows_are_chunks`` every row
    is one (possibly shortened) chunk.
    """
    if token_ids.dim() != 2:
        raise ValueError(f"token ids must be [batch, tokens], got shape {tuple(token_ids.shape)}")
    batch, total = token_ids.shape
    length = total if rows_are_chunks else layout.chunk_len_for(total)
    ids = token_ids.reshape(batch, total // length, length)
    position = torch.arange(length, device=ids.device)
    is_bos = (position == 0) if layout.bos_id is not None else torch.zeros_like(position, dtype=torch.bool)
    is_bos = is_bos.expand_as(ids)
    eos_hit = (ids == layout.eos_id) & ~is_bos
    if layout.pad_id == layout.eos_id:
        trailing = torch.flip(torch.cumprod(torch.flip(eos_hit, [-1]).to(torch.int32), dim=-1), [-1]).bool()
        before = torch.cat([torch.zeros_like(trailing[..., :1]), trailing[..., :-1]], dim=-1)
        is_eos = trailing & ~before
        is_pad = trailing & before
    else:
        at_or_after = torch.flip(torch.cumsum(torch.flip(eos_hit, [-1]).to(torch.int32), dim=-1), [-1])
        is_eos = eos_hit & (at_or_after == 1)
        seen = torch.cumsum(is_eos.to(torch.int32), dim=-1)
        is_pad = (seen >= 1) & ~is_eos
    roles = torch.full_like(ids, ROLE_WORD, dtype=torch.long)
    roles[is_pad] = ROLE_PAD
    roles[is_eos] = ROLE_EOS
    roles[is_bos] = ROLE_BOS
    return roles.reshape(batch, total)


def word_counts(roles: torch.Tensor, layout: ChunkLayout) -> torch.Tensor:
    """Number of word positions per chunk, ``[B, chunks]``."""
    batch, total = roles.shape
    length = layout.chunk_len_for(total)
    return (roles == ROLE_WORD).reshape(batch, total // length, length).sum(-1)
