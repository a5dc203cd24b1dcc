"""Tokenize corpus samples with the target encoder and build aligned training chunks.

Every prompt is cut into the encoder's chunks (at most ``layout.max_words``
words each, as the hosts do), and every chunk is kept as ``BOS words EOS`` plus
a few padding rows. Padding rows are masked as keys in the sanitizer, so the
rows of a chunk do not depend on how many padding rows follow it: training on
a short tail is exact, and much cheaper than encoding all 77 rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..layout import ROLE_WORD, token_roles
from .generator import Sample

TOKENIZE_BATCH = 256


@dataclass
class ChunkSet:
    """Unique chunks (token ids) and training examples that pair an input chunk with a target chunk.

    ``maps[e][p]`` is the target chunk's position paired with input position ``p``;
    ``labels[e][p]`` is the target score of the position (``Segment.target``): the concept strength (1, or
    lower for merely suggestive terms) on concept tokens, a lower carrier score on a subject the concept
    modifies, 0 on other words and -1 on BOS/EOS/PAD.
    """

    chunks: list[tuple[int, ...]] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    maps: list[list[int]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # unsafe | anchor | benign
    samples: list[int] = field(default_factory=list)  # index of the source sample
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs)


def word_ids_of(encoder, texts: list[str]) -> dict[str, list[int]]:
    """Word-token ids of each text in the encoder's own tokenizer (BOS/EOS/padding removed)."""
    out: dict[str, list[int]] = {}
    for start in range(0, len(texts), TOKENIZE_BATCH):
        part = texts[start:start + TOKENIZE_BATCH]
        batch = encoder.tokenize(part)
        roles = token_roles(batch.ids, encoder.layout)
        for text, ids, role in zip(part, batch.ids, roles):
            out[text] = ids[role == ROLE_WORD].tolist()
    return out


def _chunk(words: list[int], layout, pad_rows: int) -> tuple[int, ...]:
    bos = [layout.bos_id] if layout.bos_id is not None else []
    ids = bos + list(words) + [layout.eos_id]
    ids += [layout.pad_id] * max(0, min(pad_rows, layout.chunk_length - len(ids)))
    return tuple(ids)


def tokenize_samples(samples: list[Sample], encoder, pad_rows: int = 3, check: int = 64) -> ChunkSet:
    layout = encoder.layout
    if layout.chunk_length is None:
        raise ValueError(f"layout {layout.name!r} has no fixed chunk length; calibration needs CLIP-style chunks")
    per_chunk = layout.max_words
    b0 = 1 if layout.bos_id is not None else 0
    texts = sorted(({s.text for smp in samples for s in smp.segments} |
                    {s.anchor for smp in samples for s in smp.segments if s.concept}) - {""})
    seg_ids = word_ids_of(encoder, texts)
    seg_ids[""] = []  # a deleted concept (custom concepts without an anchor)
    # Check that segment-wise tokenization equals whole-prompt tokenization (the alignment relies on it).
    probe = samples[:check]
    whole = word_ids_of(encoder, [p.text for p in probe]) if probe else {}
    mismatched = sum(whole[p.text] != [i for s in p.segments for i in seg_ids[s.text]] for p in probe)
    out = ChunkSet()
    index: dict[tuple[int, ...], int] = {}

    def chunk_index(ids: tuple[int, ...]) -> int:
        if ids not in index:
            index[ids] = len(out.chunks)
            out.chunks.append(ids)
        return index[ids]

    def add(kind, sample_no, src, dst, pos_map, labels):
        out.inputs.append(chunk_index(src))
        out.targets.append(chunk_index(dst))
        out.maps.append(pos_map)
        out.labels.append(labels)
        out.kinds.append(kind)
        out.samples.append(sample_no)

    dropped = 0
    for no, smp in enumerate(samples):
        u_words, u_lab, a_words, amap, a_start_of = [], [], [], [], []
        for seg in smp.segments:
            u = seg_ids[seg.text]
            a = seg_ids[seg.anchor] if seg.concept else u
            if not u:
                continue
            a_off = len(a_words)
            for j in range(len(u)):
                a_start_of.append(a_off if j == 0 else None)
                amap.append(a_off + min(len(a) - 1, (j * len(a)) // len(u)) if a else a_off)
            u_words += u
            u_lab += [float(seg.target)] * len(u)
            a_words += a
        if not u_words:
            continue
        for s in range(0, len(u_words), per_chunk):
            e = min(s + per_chunk, len(u_words))
            words, labels = u_words[s:e], u_lab[s:e]
            src = _chunk(words, layout, pad_rows)
            tail = [-1] * (len(src) - b0 - len(words))
            lab = [-1] * b0 + labels + tail
            identity = list(range(len(src)))
            if smp.kind == "benign" or not any(labels) and a_words[amap[s]:amap[s] + len(words)] == words:
                add("benign" if smp.kind == "benign" else "anchor", no, src, src, identity, lab)
                continue
            a_s = a_start_of[s] if a_start_of[s] is not None else amap[s]
            a_e = len(a_words) if e == len(u_words) else (a_start_of[e] if a_start_of[e] is not None else amap[e])
            if a_e - a_s > per_chunk or a_e < a_s:
                dropped += 1
                continue
            dst = _chunk(a_words[a_s:a_e], layout, pad_rows)
            n_a = a_e - a_s
            pos_map = list(range(b0)) + [b0 + amap[j] - a_s for j in range(s, e)]
            eos_dst = b0 + n_a
            for k in range(len(src) - len(pos_map)):  # EOS then padding rows, paired by offset from EOS
                pos_map.append(min(eos_dst + k, len(dst) - 1))
            add("unsafe", no, src, dst, pos_map, lab)
            add("anchor", no, dst, dst, list(range(len(dst))), [-1] * b0 + [0] * n_a + [-1] * (len(dst) - b0 - n_a))
    out.stats = {"samples": len(samples), "examples": len(out.inputs), "unique_chunks": len(out.chunks),
                 "dropped_chunks": dropped, "segment_tokenization_mismatch": f"{mismatched}/{len(probe)}"}
    return out
