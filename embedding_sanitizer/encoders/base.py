"""The text-encoder interface of the core.

An encoder tokenizes texts into its host's exact chunk layout and encodes
chunks of token ids into per-token embeddings and a pooled vector in the same
space as the token rows (the EOS row for CLIP, the masked mean for BERT-style
encoders). Host glue wraps a ComfyUI CLIP or an A1111 text model in this
interface so that the core can encode concept lists and leave-one-out copies.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from ..layout import ChunkLayout


@dataclass
class TokenBatch:
    """Token ids ``[B, T]`` (``T`` a multiple of the chunk length) and the text of every position."""

    ids: torch.Tensor
    pieces: list[list[str]]
    layout: ChunkLayout
    texts: list[str] = field(default_factory=list)


@dataclass
class EncoderOutput:
    tokens: torch.Tensor  # [N, L, D]
    pooled: torch.Tensor  # [N, D], same space as the token rows


class TextEncoder:
    """Base class: subclasses implement ``tokenize`` and ``encode_chunks``."""

    name: str = "encoder"
    layout: ChunkLayout
    width: int

    def tokenize(self, texts: list[str]) -> TokenBatch:
        raise NotImplementedError

    def encode_chunks(self, ids: torch.Tensor) -> EncoderOutput:
        """Encode ``[N, L]`` ids, ``L <= chunk_length``, each row one chunk (BOS ... EOS pad)."""
        raise NotImplementedError

    def encode(self, ids: torch.Tensor) -> EncoderOutput:
        """Encode ``[B, T]`` ids chunk by chunk; pooled comes from each prompt's first chunk."""
        batch, total = ids.shape
        length = self.layout.chunk_len_for(total)
        out = self.encode_chunks(ids.reshape(-1, length))
        tokens = out.tokens.reshape(batch, total, -1)
        pooled = out.pooled.reshape(batch, total // length, -1)[:, 0]
        return EncoderOutput(tokens, pooled)

    def encode_texts(self, texts: list[str]) -> tuple[TokenBatch, EncoderOutput]:
        batch = self.tokenize(texts)
        return batch, self.encode(batch.ids)

    def pooled_texts(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Pooled vectors ``[K, D]`` of short texts (concepts), each encoded alone."""
        rows = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenize(list(texts[start:start + batch_size]))
            rows.append(self.encode(batch.ids).pooled)
        return torch.cat(rows)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def vocab_size(self) -> int | None:
        """How many token ids the encoder can encode by id (None: not known)."""
        return None

    def word_joins(self, ids: torch.Tensor) -> torch.Tensor | None:
        """``[B, T]`` bool: positions t and t + 1 hold pieces of one word; None when the encoder cannot tell
        (here, and in host adapters: every piece is then scored alone)."""
        return None

    @property
    def fingerprint(self) -> str:
        """Stable identifier of the encoder weights (used to match calibrated ES weights)."""
        cached = getattr(self, "_fingerprint", None)
        if cached is None:
            cached = self._fingerprint = self.compute_fingerprint()
        return cached

    def compute_fingerprint(self) -> str:
        raise NotImplementedError

    @property
    def cache_key(self) -> str:
        """Key for caches of things derived from this encoder's outputs (concept subspaces).

        Adapters whose output layer can change without the weights changing (CLIP skip,
        ComfyUI's CLIPSetLastLayer) must override this to include the layer.
        """
        return f"{self.name}|{self.fingerprint}"


def joins_from_continuations(ids: torch.Tensor, continues: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool for ``TextEncoder.word_joins`` from a ``[vocab]`` table of the ids that continue the word
    before them (WordPiece ``##``): t joins t + 1 when the id at t + 1 continues. Ids outside the table
    (textual-inversion positions, special ids) never join; the last position never joins."""
    table = continues.to(ids.device)
    nxt = ids[..., 1:]
    inside = (nxt >= 0) & (nxt < table.shape[0])
    joins = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
    joins[..., :-1] = table[nxt.clamp(0, table.shape[0] - 1)] & inside
    return joins


def tensor_fingerprint(tensor: torch.Tensor) -> str:
    """Fingerprint of a weight tensor (the token embedding) that survives dtype changes.

    16 block statistics of the first 65,536 values, written as text. The same
    encoder loaded in float32, float16 or bfloat16 gives fingerprints that
    ``fingerprints_match`` accepts; a different encoder does not.
    """
    sample = tensor.detach().reshape(-1)[:65536].to("cpu", torch.float32)
    blocks = sample[: (sample.numel() // 16) * 16].reshape(16, -1)
    stats = torch.cat([blocks.mean(1), blocks.abs().mean(1)]).tolist()
    shape = "x".join(str(s) for s in tensor.shape)
    return f"fp1:{shape}:" + ",".join(f"{v:.4e}" for v in stats)


def fingerprints_match(a: str, b: str, rel_tol: float = 2e-2) -> bool:
    """Whether two fingerprints name the same encoder (tolerant to dtype rounding)."""
    if a == b:
        return True
    try:
        kind_a, shape_a, values_a = a.split(":")
        kind_b, shape_b, values_b = b.split(":")
    except ValueError:
        return False
    if kind_a != kind_b or shape_a != shape_b:
        return False
    xs = [float(v) for v in values_a.split(",")]
    ys = [float(v) for v in values_b.split(",")]
    scale = max(max(abs(v) for v in xs + ys), 1e-12)
    return len(xs) == len(ys) and all(abs(x - y) <= rel_tol * (abs(x) + abs(y)) / 2 + 1e-4 * scale
                                      for x, y in zip(xs, ys))


def short_fingerprint(fingerprint: str) -> str:
    """A short, stable label of a fingerprint for messages and file names."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:10]


def pad_chunks(words: list[int], layout: ChunkLayout) -> list[list[int]]:
    """Wrap word ids into ``[BOS] words [EOS] [PAD...]`` chunks of the layout's length.

    A prompt with more words than fit in one chunk is split into several
    chunks; an empty prompt gives one chunk holding BOS, EOS and padding.
    """
    length = layout.chunk_length
    if length is None:
        raise ValueError("pad_chunks needs a layout with a chunk length")
    per_chunk = layout.max_words
    out = []
    for start in range(0, max(len(words), 1), per_chunk):
        piece = words[start:start + per_chunk]
        chunk = ([layout.bos_id] if layout.bos_id is not None else []) + list(piece) + [layout.eos_id]
        chunk += [layout.pad_id] * (length - len(chunk))
        out.append(chunk)
    return out
