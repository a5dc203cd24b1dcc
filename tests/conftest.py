"""Shared fixtures: tiny deterministic encoders for the core tests."""
from __future__ import annotations

import pytest
import torch

from embedding_sanitizer.encoders.base import EncoderOutput, TextEncoder, TokenBatch, pad_chunks, tensor_fingerprint
from embedding_sanitizer.layout import ROLE_PAD, SD1_CLIP_L, ChunkLayout, token_roles


class HashEncoder(TextEncoder):
    """A tiny causal 'text encoder' with random weights and a whitespace vocabulary.

    Words get ids from a fixed vocabulary (unknown words hash into it); the
    encoder is a random embedding plus a causal running mean, so every row
    depends on earlier tokens as in CLIP, and the EOS row summarises the prompt.
    """

    name = "hash-tiny"

    def __init__(self, width: int = 32, layout: ChunkLayout = SD1_CLIP_L, seed: int = 0) -> None:
        self.layout = layout
        self.width = width
        gen = torch.Generator().manual_seed(seed)
        self.table = torch.randn(49408, width, generator=gen)

    @property
    def vocab_size(self) -> int:
        return int(self.table.shape[0])

    def word_id(self, word: str) -> int:
        return 1000 + (sum(ord(c) * 31 ** i for i, c in enumerate(word)) % 40000)

    def tokenize(self, texts):
        rows = [[i for c in pad_chunks([self.word_id(w) for w in t.lower().split()], self.layout) for i in c]
                for t in texts]
        width = max(len(r) for r in rows)
        for r in rows:
            while len(r) < width:
                r.extend(pad_chunks([], self.layout)[0])
        ids = torch.tensor(rows, dtype=torch.long)
        pieces = [[str(i) for i in r] for r in rows]
        return TokenBatch(ids, pieces, self.layout, list(texts))

    def encode_chunks(self, ids):
        x = self.table[ids.clamp_min(0)]
        steps = torch.arange(1, ids.shape[1] + 1, dtype=torch.float32).view(1, -1, 1)
        rows = 0.5 * x + 0.5 * x.cumsum(1) / steps
        roles = token_roles(ids, self.layout, rows_are_chunks=True)
        eos = (roles == 2).float().argmax(1)
        pooled = rows[torch.arange(ids.shape[0]), eos]
        return EncoderOutput(rows, pooled)

    def compute_fingerprint(self):
        return tensor_fingerprint(self.table)


@pytest.fixture(scope="session")
def hash_encoder():
    return HashEncoder()
