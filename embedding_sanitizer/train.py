"""Calibrate the learned sanitizer (ES) for a text encoder from the synthetic corpus.

``calibrate(encoder, concepts, out_path, progress=callback)`` is the public entry
(the CLI, the ComfyUI and the A1111 calibrate buttons call it):

1. generate the corpus for the concept list (``embedding_sanitizer.corpus``):
   unsafe prompts with aligned safe anchors, and benign prompts with hard negatives;
2. tokenize it with the encoder's own tokenizer and encode every unique chunk
   once, batched and length-sorted (cached on disk, keyed by the encoder
   fingerprint and the corpus settings);
3. train ``EmbeddingSanitizerNet`` with three losses:
   * erase: on unsafe chunks, ``rows + correction`` should equal the aligned rows
     of the anchor prompt (every non-BOS row: words, EOS, padding);
   * keep: on benign and anchor chunks the correction should be zero;
   * score: token-level BCE (concept tokens 1, suggestive ones lower, the subject a
     concept word modifies ``CARRIER_STRENGTH`` of that, every other word 0), plus a
     chunk-level BCE on the max word logit (detection is the prompt's max score);
   the erase and keep losses are divided by the erase loss of the identity, so
   ``erase`` reads as the fraction of the squared gap left to close;
4. hold out 10% of the prompts for validation, stop early, keep the best state;
5. fit the whole-prompt detector (``prompt_detector``: the centroid direction of
   unsafe vs benign chunks in pooled space, optionally less the directions that junk
   tokens move benign prompts along, with a Platt slope and bias) on the training
   split, and save ``.safetensors`` with metadata (encoder, concepts, corpus and
   training settings, validation metrics).

Everything is seeded; it runs on CPU or GPU.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .calibration_run import (CACHE_MAX_BYTES, ENCODE_SHARE, RESERVE_SHARE, Budget, StopCheck, check_cancel,
                              format_duration, prune_cache, scaled_sizes, trainable, training_mode, write_atomically)
from .corpus import ChunkSet, CorpusGenerator, tokenize_samples, vocabulary_words
from .corpus.generator import join_segments
from .es_model import ESConfig, EmbeddingSanitizerNet, apply_es
from .pooled_erasure import edited_words, fit_pooled_head, pooled_features
from .layout import ROLE_BOS, ROLE_PAD, ROLE_WORD, token_roles
from .prompt_detector import (
    chunk_has_words, chunk_vectors, fit_prompt_detector, nuisance_directions, pooling_for, prompt_probability,
)
from .encoders.base import fingerprints_match
from .weights_io import read_metadata, save_es

log = logging.getLogger(__name__)
CORPUS_VERSION = "5"  # 3: core terms drawn CORE_TERM_WEIGHT times as often; 4: carrier subjects labelled;
# 5: weapons vocabulary and its hard negatives, decorations and adversarial-style noise in 30% of prompts
# Benign filler words drawn from the encoder's tokenizer vocabulary (corpus.vocab); 0 = off (the default: on the
# bundled encoder 2,000-4,000 words lowered COCO false positives but not localisation, so the shipped weights
# are calibrated without them).
VOCAB_WORDS = 0
Progress = Callable[[int, int, str], None]
LogLine = Callable[[str], None]
KEEP_BETTER_MARGIN = 0.01  # token AUROC by which an earlier file must be better to be kept (calibrate)
PROBE_CHUNKS = 16  # chunks encoded to time the encoder before sizing the corpus to a time budget


def _noop(done: int, total: int, message: str) -> None:  # noqa: ARG001
    return None


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "embedding-sanitizer"


def corpus_sizes(generator: CorpusGenerator, n_unsafe: int | None, n_benign: int | None) -> tuple[int, int]:
    """Default corpus size: about 2,400 unsafe prompts per built-in pack and 8 per custom concept."""
    if n_unsafe is None:
        n_unsafe = 2400 * len(generator.packs) + 8 * len(generator.custom)
        n_unsafe = max(600, min(n_unsafe, 6000))
    if n_benign is None:
        n_benign = max(500, int(0.8 * n_unsafe))
    return n_unsafe, n_benign


# -- encoding -------------------------------------------------------------------------------------
def encode_chunks(encoder, chunks: list[tuple[int, ...]], batch_size: int = 128,
                  progress: Progress = _noop, should_stop: StopCheck | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode unique chunks once (length-sorted batches). Returns (rows ``[R, D]`` float16, offsets ``[C+1]``).

    ``should_stop()`` is polled before every batch (``Cancelled`` is raised when it answers true).
    """
    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i]))
    lengths = torch.tensor([len(c) for c in chunks], dtype=torch.long)
    offsets = torch.zeros(len(chunks) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(lengths, 0)
    rows = torch.empty(int(offsets[-1]), encoder.width, dtype=torch.float16)
    pad = encoder.layout.pad_id
    total = math.ceil(len(order) / batch_size)
    for b, start in enumerate(range(0, len(order), batch_size)):
        check_cancel(should_stop)
        part = order[start:start + batch_size]
        width = max(len(chunks[i]) for i in part)
        ids = torch.tensor([list(chunks[i]) + [pad] * (width - len(chunks[i])) for i in part], dtype=torch.long)
        with torch.no_grad():  # inside calibrate() gradients are on; the encoder's own weights need none
            out = encoder.encode_chunks(ids).tokens.to("cpu", torch.float32)
        for k, i in enumerate(part):
            rows[offsets[i]:offsets[i + 1]] = out[k, :len(chunks[i])].to(torch.float16)
        progress(b + 1, total, f"encoding corpus chunks ({len(order)} chunks)")
    return rows, offsets


def _cache_key(encoder, concepts, settings: dict, chunks: list[tuple[int, ...]]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": CORPUS_VERSION, "encoder": encoder.cache_key, "concepts": list(concepts),
                         "settings": settings}, sort_keys=True).encode())
    h.update(str(len(chunks)).encode())
    for c in chunks[:: max(1, len(chunks) // 512)]:
        h.update(str(c).encode())
    return h.hexdigest()[:20]


def cache_path(encoder, concepts, settings: dict, chunks, cache_dir: Path | None) -> Path | None:
    if cache_dir is None:
        return None
    return Path(cache_dir) / f"corpus-{_cache_key(encoder, concepts, settings, chunks)}.safetensors"


def encode_cached(encoder, concepts, settings: dict, chunks, cache_dir: Path | None, progress: Progress,
                  should_stop: StopCheck | None = None, cache_max_bytes: int = CACHE_MAX_BYTES):
    """Encoded corpus rows from the cache folder, or encoded now and cached (written atomically; the folder
    is then pruned to ``cache_max_bytes``, oldest files first)."""
    if cache_dir is None:
        return encode_chunks(encoder, chunks, progress=progress, should_stop=should_stop), False
    from safetensors.torch import load_file, save_file

    path = cache_path(encoder, concepts, settings, chunks, cache_dir)
    if path.is_file():
        try:
            data = load_file(str(path))
            if int(data["offsets"].shape[0]) == len(chunks) + 1:
                progress(1, 1, "encoded corpus loaded from cache")
                os.utime(path)  # recently used: evicted last
                return (data["rows"], data["offsets"]), True
        except Exception:  # noqa: BLE001 - a broken cache file is simply rebuilt
            log.warning("ignoring unreadable corpus cache %s", path.name)
    rows, offsets = encode_chunks(encoder, chunks, progress=progress, should_stop=should_stop)
    try:
        write_atomically(path, lambda temp: save_file({"rows": rows.contiguous(), "offsets": offsets}, str(temp)))
        prune_cache(path.parent, cache_max_bytes, keep=path)
    except OSError as exc:
        log.warning("could not write the corpus cache (%s); continuing without it", exc)
    return (rows, offsets), False


def seconds_per_prompt(encoder, chunks: list[tuple[int, ...]], n_prompts: int) -> float:
    """Encoding seconds per corpus prompt, timed on ``PROBE_CHUNKS`` chunks spread over the lengths."""
    if not chunks or n_prompts <= 0:
        return 0.0
    by_length = sorted(chunks, key=len)
    step = max(1, len(by_length) // PROBE_CHUNKS)
    probe = by_length[::step][:PROBE_CHUNKS]
    started = time.perf_counter()
    encode_chunks(encoder, probe, batch_size=PROBE_CHUNKS)
    per_chunk = (time.perf_counter() - started) / len(probe)
    return per_chunk * len(chunks) / n_prompts


# -- training tensors -----------------------------------------------------------------------------
class TrainingSet:
    """Dense per-example index tensors (``[E, 77]``) into the flat row store."""

    def __init__(self, cs: ChunkSet, rows: torch.Tensor, offsets: torch.Tensor, layout, max_len: int) -> None:
        n = len(cs)
        self.rows = rows
        self.in_idx = torch.zeros(n, max_len, dtype=torch.long)
        self.tgt_idx = torch.zeros(n, max_len, dtype=torch.long)
        self.valid = torch.zeros(n, max_len, dtype=torch.bool)
        self.labels = torch.full((n, max_len), -1.0)
        self.roles = torch.full((n, max_len), ROLE_PAD, dtype=torch.long)
        self.erase = torch.tensor([k == "unsafe" for k in cs.kinds])
        self.benign = torch.tensor([k == "benign" for k in cs.kinds])
        # per prompt, its first unsafe chunk (the first chunk carrying a concept) and its first benign chunk
        # (examples are added chunk by chunk, in order)
        seen: set = set()
        lead = []
        for sample, kind in zip(cs.samples, cs.kinds):
            lead.append(kind in ("unsafe", "benign") and (sample, kind) not in seen)
            seen.add((sample, kind))
        self.lead = torch.tensor(lead, dtype=torch.bool)
        self.sample = torch.tensor(cs.samples, dtype=torch.long)
        self.length = torch.zeros(n, dtype=torch.long)
        for e in range(n):
            src, dst = cs.inputs[e], cs.targets[e]
            length = len(cs.chunks[src])
            self.length[e] = length
            self.in_idx[e, :length] = offsets[src] + torch.arange(length)
            self.tgt_idx[e, :length] = offsets[dst] + torch.tensor(cs.maps[e], dtype=torch.long)
            self.valid[e, :length] = True
            self.labels[e, :length] = torch.tensor(cs.labels[e], dtype=torch.float32)
            ids = torch.tensor(cs.chunks[src], dtype=torch.long).unsqueeze(0)
            self.roles[e, :length] = token_roles(ids, layout, rows_are_chunks=True)[0]
        self.has_concept = self.labels.amax(1).clamp_min(0)  # strength of the chunk's strongest concept

    def batch(self, idx: torch.Tensor, device) -> dict:
        length = int(self.length[idx].max())
        sl = slice(0, length)
        x = self.rows[self.in_idx[idx, sl]].to(device, torch.float32)
        t = self.rows[self.tgt_idx[idx, sl]].to(device, torch.float32)
        return {"x": x, "t": t, "valid": self.valid[idx, sl].to(device), "labels": self.labels[idx, sl].to(device),
                "roles": self.roles[idx, sl].to(device), "erase": self.erase[idx].to(device),
                "has_concept": self.has_concept[idx].to(device)}


def compute_losses(model, b: dict, gap_scale: float, pos_weight: float) -> tuple[torch.Tensor, dict]:
    logits, delta = model(b["x"], b["roles"])
    word = b["valid"] & (b["roles"] == ROLE_WORD)
    labels = b["labels"].clamp_min(0)
    weight = torch.where(labels > 0, torch.full_like(labels, pos_weight), torch.ones_like(labels))
    bce = (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weight)[word].sum() / \
        weight[word].sum().clamp_min(1)
    has_words = word.any(1)
    chunk_logit = logits.masked_fill(~word, -1e4).amax(1)
    chunk_bce = F.binary_cross_entropy_with_logits(chunk_logit[has_words], b["has_concept"][has_words]) \
        if bool(has_words.any()) else logits.sum() * 0
    editable = b["valid"] & (b["roles"] != ROLE_BOS)
    pred = b["x"] + delta
    err = ((pred - b["t"]) ** 2).sum(-1) / gap_scale  # per row, relative to the identity's erase loss
    er_rows = editable & b["erase"].unsqueeze(1)
    kp_rows = editable & ~b["erase"].unsqueeze(1)
    erase = err[er_rows].sum() / er_rows.sum().clamp_min(1)
    keep = ((delta ** 2).sum(-1) / gap_scale)[kp_rows].sum() / kp_rows.sum().clamp_min(1)
    return erase, {"erase": erase, "keep": keep, "bce": bce, "chunk_bce": chunk_bce, "logits": logits, "word": word}


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Mann-Whitney AUROC (ties count half)."""
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    scores = torch.cat([pos, neg]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.double)
    # average ranks of ties
    uniq, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    if len(uniq) < len(scores):
        sums = torch.zeros(len(uniq), dtype=torch.double).index_add_(0, inverse, ranks)
        ranks = (sums / counts.double())[inverse]
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


@torch.no_grad()
def evaluate(model, ts: TrainingSet, idx: torch.Tensor, device, gap_scale, pos_weight, weights, batch_size=256):
    model.eval()
    tot = {k: 0.0 for k in ("erase", "keep", "bce", "chunk_bce", "loss")}
    n = 0
    tok_pos, tok_neg, chunk_pos, chunk_neg = [], [], [], []
    for start in range(0, len(idx), batch_size):
        part = idx[start:start + batch_size]
        b = ts.batch(part, device)
        _, parts = compute_losses(model, b, gap_scale, pos_weight)
        loss = sum(weights[k] * parts[k] for k in weights)
        for k in ("erase", "keep", "bce", "chunk_bce"):
            tot[k] += float(parts[k]) * len(part)
        tot["loss"] += float(loss) * len(part)
        n += len(part)
        logits, word = parts["logits"], parts["word"]
        tok_pos.append(logits[word & (b["labels"] > 0)].cpu())
        tok_neg.append(logits[word & (b["labels"] == 0)].cpu())
        cmax = logits.masked_fill(~word, -1e4).amax(1).cpu()
        hw = word.any(1).cpu()
        hc = b["has_concept"].cpu() > 0
        chunk_pos.append(cmax[hw & hc])
        chunk_neg.append(cmax[hw & ~hc & ~b["erase"].cpu()])
    model.train()
    out = {k: v / max(n, 1) for k, v in tot.items()}
    out["token_auroc"] = auroc(torch.cat(tok_pos), torch.cat(tok_neg))
    out["chunk_auroc"] = auroc(torch.cat(chunk_pos), torch.cat(chunk_neg))
    neg = torch.sigmoid(torch.cat(chunk_neg))
    out["benign_chunks_edited"] = float((neg > 0.05).float().mean()) if neg.numel() else float("nan")
    return out


def chunk_vectors_of(ts: TrainingSet, idx: torch.Tensor, pooling: str, batch_size: int = 512) -> torch.Tensor:
    """Unit pooled vectors of the examples ``idx`` (their input chunks), batched to bound memory."""
    out = []
    for start in range(0, len(idx), batch_size):
        part = idx[start:start + batch_size]
        rows = ts.rows[ts.in_idx[part]].float()
        out.append(chunk_vectors(rows, ts.roles[part], pooling))
    return torch.cat(out) if out else torch.zeros(0, ts.rows.shape[-1])


DETECTOR_EXTRA_FACTOR = 2  # extra prompts generated for the detector, in units of the corpus's unsafe prompts


JUNK_PAIRS = 400  # benign prompts encoded with and without junk tokens for the detector's nuisance direction
JUNK_COUNTS = (3, 6, 12)


def pooled_first_chunks(encoder, texts: list[str], pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit pooled vectors ``[N, D]`` of the first chunk of each text, pooled as the whole-prompt detector pools,
    and which of those chunks have a word ``[N]``."""
    ids = encoder.tokenize(texts).ids[:, :encoder.layout.chunk_length]
    with torch.no_grad():
        rows = encoder.encode_chunks(ids).tokens.to("cpu", torch.float32)
    roles = token_roles(ids, encoder.layout, rows_are_chunks=True)
    return chunk_vectors(rows, roles, pooling), chunk_has_words(roles)


def encode_first_chunks(encoder, texts: list[str], pooling: str, label: str, progress: Progress = _noop,
                        batch_size: int = 64, should_stop: StopCheck | None = None,
                        out_of_time: Callable[[], bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``pooled_first_chunks`` of ``texts`` batch by batch, with progress ("encoding ``label``"), cancellation
    and the time budget: ``out_of_time()`` is asked before every batch after the first, and the texts encoded
    so far are kept (the result covers a prefix of ``texts``)."""
    vectors, has_words = [], []
    total = math.ceil(len(texts) / batch_size)
    for n, start in enumerate(range(0, len(texts), batch_size)):
        check_cancel(should_stop)
        if n and out_of_time is not None and out_of_time():
            log.info("%s: the time budget allows %d of %d", label, start, len(texts))
            break
        v, w = pooled_first_chunks(encoder, texts[start:start + batch_size], pooling)
        vectors.append(v)
        has_words.append(w)
        progress(n + 1, total, f"encoding {label} ({len(texts)})")
    if not vectors:
        return torch.zeros(0, encoder.width), torch.zeros(0, dtype=torch.bool)
    return torch.cat(vectors), torch.cat(has_words)


def junk_pairs(concepts, seed: int, n_pairs: int) -> tuple[list[str], list[str]]:
    """Benign prompts from a generator with another seed, as they are and with 3, 6 or 12 of the corpus's own
    junk tokens inserted (``CorpusGenerator.with_junk``: random letters, glued words, emoji, markup, digits;
    not the evaluation's gibberish generator)."""
    gen = CorpusGenerator(concepts, seed=seed + 104729)
    samples = [s for s in gen.generate(0, n_pairs) if s.kind == "benign"][:n_pairs]
    noisy = [join_segments([seg.text for seg in gen.with_junk(s.segments, gen.rng.choice(JUNK_COUNTS))])
             for s in samples]
    return [s.text for s in samples], noisy


def junk_pair_vectors(encoder, concepts, seed: int, pooling: str, n_pairs: int = JUNK_PAIRS,
                      progress: Progress = _noop, batch_size: int = 64, should_stop: StopCheck | None = None,
                      out_of_time: Callable[[], bool] | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Unit pooled vectors ``[N, D]`` of the ``junk_pairs`` (clean, with junk), first chunks; None when none
    was encoded. The pairs are encoded side by side, so a time budget that stops early keeps whole pairs."""
    clean, noisy = junk_pairs(concepts, seed, n_pairs)
    interleaved = [text for pair in zip(clean, noisy) for text in pair]
    vectors, _ = encode_first_chunks(encoder, interleaved, pooling, "junk pairs for the detector", progress,
                                     2 * batch_size, should_stop, out_of_time)
    vectors = vectors[:len(vectors) // 2 * 2]
    return (vectors[0::2], vectors[1::2]) if len(vectors) else None


def junk_nuisance(encoder, concepts, seed: int, pooling: str, n_pairs: int = JUNK_PAIRS,
                  progress: Progress = _noop, batch_size: int = 64, directions: int = 1,
                  should_stop: StopCheck | None = None,
                  out_of_time: Callable[[], bool] | None = None) -> tuple[torch.Tensor | None, int]:
    """The whole-prompt detector's nuisance direction(s) ``[k, D]`` (the main axis of the pooled shifts that
    junk causes, ``prompt_detector.nuisance_directions``) and the number of pairs behind them; (None, 0) when
    no pair was encoded in time."""
    pairs = junk_pair_vectors(encoder, concepts, seed, pooling, n_pairs, progress, batch_size, should_stop,
                              out_of_time)
    if pairs is None:
        return None, 0
    return nuisance_directions(*pairs, directions), len(pairs[0])


def detector_extra_vectors(encoder, concepts, seed: int, n_generate: int, pooling: str,
                           progress: Progress = _noop, batch_size: int = 64, should_stop: StopCheck | None = None,
                           out_of_time: Callable[[], bool] | None = None) -> torch.Tensor:
    """Unit pooled vectors of extra indirect unsafe prompts for the whole-prompt detector.

    The detector's direction is a mean over unsafe prompts; with one corpus's few thousand indirect prompts
    it still moved with the sampling (AUROC 0.986 to 0.993 across corpus seeds on the development split).
    These prompts come from a generator with another seed; only prompts whose term is not a plain core word
    are kept, and only the pooled vector of their first chunk is computed (one encoder pass each, no
    training). Long tag-list prompts stay in: the benign side has them too, and leaving them out of the
    unsafe side alone made the direction mean "not a tag list" (development AUROC 0.66 instead of 0.99).
    ``out_of_time()`` is asked before every batch after the first; the prompts encoded so far are kept.
    """
    gen = CorpusGenerator(concepts, seed=seed + 7919)
    texts = [s.text for s in gen.generate(n_generate, 0) if s.term_kind not in ("", "core")]
    vectors, has_words = encode_first_chunks(encoder, texts, pooling, "detector prompts", progress, batch_size,
                                             should_stop, out_of_time)
    return vectors[has_words]


def fit_prompt_head(model, ts: TrainingSet, train_idx: torch.Tensor, val_idx: torch.Tensor, pooling: str,
                    indirect: torch.Tensor | None = None, extra_unsafe: torch.Tensor | None = None,
                    nuisance: torch.Tensor | None = None) -> dict:
    """Fit the whole-prompt detector on the training split, store it in ``model`` and return its validation
    figures.

    One chunk per prompt: an unsafe prompt's first chunk that carries a concept, a benign prompt's first
    chunk. Later chunks of long benign prompts are mostly style tags; counting them as "benign" made the
    direction mean "not a tag list" (AUROC 0.75 instead of 0.97 on held-out real prompts).
    ``indirect`` (per example) marks unsafe prompts whose term is not a plain core word (euphemisms, slang,
    suggestive terms, synonyms, other languages, character tricks, custom concepts). The word scores
    already catch the plain words; the detector is for prompts that say it indirectly, so when there are
    any it is fitted on those (on a development split of real prompts, I2P sexual with 30-50% nudity vs
    COCO captions 4000-5999: AUROC 0.987 against 0.971 with every unsafe prompt). ``extra_unsafe`` adds
    pooled vectors of more unsafe prompts (``detector_extra_vectors``) to the fitting set. ``nuisance``
    (``junk_nuisance``) is projected out of the direction.
    """
    def split(idx):
        unsafe = ts.erase[idx] & ts.lead[idx]
        if indirect is not None and bool((unsafe & indirect[idx]).any()):
            unsafe &= indirect[idx]
        return (chunk_vectors_of(ts, idx[unsafe], pooling),
                chunk_vectors_of(ts, idx[ts.benign[idx] & ts.lead[idx]], pooling))

    u, b = split(train_idx)
    if extra_unsafe is not None and len(extra_unsafe):
        u = torch.cat([u, extra_unsafe.to(u.dtype)])
    fit = fit_prompt_detector(u, b, nuisance=nuisance)
    model.prompt_direction.copy_(fit["direction"].to(model.prompt_direction.device))
    model.prompt_platt.copy_(torch.tensor([fit["slope"], fit["bias"]], device=model.prompt_platt.device))
    model.config.prompt_pooling = pooling
    vu, vb = split(val_idx)
    out = {"prompt_train_unsafe_chunks": len(u), "prompt_train_benign_chunks": len(b),
           "prompt_nuisance_removed": round(fit["nuisance_removed"], 4)}
    if len(vu) and len(vb):
        pu = prompt_probability(vu, fit["direction"], fit["slope"], fit["bias"])
        pb = prompt_probability(vb, fit["direction"], fit["slope"], fit["bias"])
        out.update({"prompt_auroc": auroc(pu, pb), "prompt_unsafe_at_0.5": float((pu >= 0.5).float().mean()),
                    "prompt_benign_at_0.5": float((pb >= 0.5).float().mean())})
    return out


def deletion_text(sample) -> str:
    """The sample with its concept segments deleted (the concept-free counterpart of an unsafe prompt)."""
    return join_segments([seg.text for seg in sample.segments if not seg.concept])


POOLED_HEAD_PROMPTS = 1600  # unsafe prompts re-encoded without their concept for the pooled head (one pass each)


def fit_pooled_stage(model, encoder, samples, ts: TrainingSet, is_val_sample: torch.Tensor, pooling: str,
                     progress: Progress = _noop, batch_size: int = 64, max_prompts: int = POOLED_HEAD_PROMPTS) -> dict:
    """Fit the pooled-erasure head (``pooled_erasure``) and store it in ``model``; return its figures.

    Examples: the first chunk of every unsafe prompt that fits in one chunk. Inputs: the trained model's own
    edit decisions on that chunk at intensity 1 (so the head sees the rows it will see in use); target: the
    pooled vector of the same prompt with the concept segments deleted, encoded with the encoder.
    """
    length = encoder.layout.chunk_length
    lead = torch.nonzero(ts.erase & ts.lead).flatten()
    if len(lead) > max_prompts:  # an even spread over the corpus (its prompts are in random order)
        lead = lead[torch.linspace(0, len(lead) - 1, max_prompts).long()]
    if len(lead) == 0:
        return {"pooled_head_examples": 0}
    texts = [deletion_text(samples[int(ts.sample[e])]) for e in lead.tolist()]
    feats, bases, cleans, keep = [], [], [], []
    total = math.ceil(len(lead) / batch_size)
    for b, start in enumerate(range(0, len(lead), batch_size)):
        part = lead[start:start + batch_size]
        rows = ts.rows[ts.in_idx[part]].float()
        roles = ts.roles[part]
        full = torch.full((len(part), length), ROLE_PAD, dtype=roles.dtype)
        full[:, :roles.shape[1]] = roles
        padded = torch.zeros(len(part), length, rows.shape[-1])
        padded[:, :rows.shape[1]] = rows
        out = apply_es(model, padded, full, 1.0, length)
        words = edited_words(full, out.weights)
        f, base = pooled_features(padded, full, words, pooling)
        batch = encoder.tokenize(texts[start:start + batch_size])
        ids = batch.ids[:, :length]
        whole = encoder.tokenize([samples[int(ts.sample[e])].text for e in part.tolist()]).ids
        single = ~(token_roles(whole, encoder.layout)[:, length:] == ROLE_WORD).any(-1)  # the prompt is one chunk
        enc = encoder.encode_chunks(ids).tokens.to("cpu", torch.float32)
        c_roles = token_roles(ids, encoder.layout, rows_are_chunks=True)
        clean = pooled_features(enc, c_roles, torch.zeros_like(c_roles, dtype=torch.bool), pooling)[1]
        ok = words.any(-1) & single & chunk_has_words(c_roles)
        feats.append(f[ok]), bases.append(base[ok]), cleans.append(clean[ok]), keep.append(part[ok])
        progress(b + 1, total, f"fitting the pooled-erasure head ({len(lead)} prompts)")
    idx = torch.cat(keep)
    if len(idx) < 50:
        return {"pooled_head_examples": int(len(idx))}
    val = is_val_sample[ts.sample[idx]]
    head, figures = fit_pooled_head(torch.cat(feats), torch.cat(bases), torch.cat(cleans), val)
    figures["pooled_head_used"] = figures["pooled_head_val_closed"] > 0
    if not figures["pooled_head_used"]:  # no better than the training-free target on held-out prompts
        return figures
    model.pooled_weight.copy_(head["weight"])
    model.pooled_bias.copy_(head["bias"])
    model.pooled_mean.copy_(head["mean"])
    model.config.pooled_head = True
    return figures


# -- entry ----------------------------------------------------------------------------------------
def calibrate(encoder, concepts, out_path, progress: Progress | None = None, time_budget_s: float | None = None,
              seed: int = 0, *, n_unsafe: int | None = None, n_benign: int | None = None, epochs: int = 10,
              batch_size: int = 128, lr: float = 3e-3, hidden: int = 128, layers: int = 2, heads: int = 4,
              pad_rows: int = 3, val_fraction: float = 0.1, patience: int = 3, device: str | None = None,
              cache_dir: str | Path | None = "default", loss_weights: dict | None = None,
              pos_weight: float = 2.0, threads: int | None = None, vocab_words: int = VOCAB_WORDS,
              should_stop: StopCheck | None = None, log_line: LogLine | None = None,
              cache_max_bytes: int = CACHE_MAX_BYTES,
              init_weights: str | Path | None = None, keep_better: bool = True,
              detector_junk_directions: int = 0) -> dict:
    """Calibrate ES weights for ``encoder`` and ``concepts``; save them to ``out_path``; return a summary.

    ``progress(done, total, message)`` is called as each phase advances (corpus, encoding, training).
    ``time_budget_s`` bounds the whole run (see ``calibration_run.Budget``): when the default corpus would
    not fit, it is made smaller (timed on a probe of the encoder first; sizes given explicitly are kept),
    training stops early (keeping the best state) when its share is spent, and the detector's extra prompts
    stop at the reserve. ``concepts`` may name built-in packs (nudity, violence and their aliases) and any
    custom concepts; ``"concept=anchor"`` sets the safe replacement of a custom concept.
    ``threads`` sets torch's CPU thread count for the run (on a shared machine, fewer threads than
    cores avoids oversubscription). ``vocab_words`` > 0 sprinkles that many whole words of the encoder's
    own tokenizer vocabulary (filtered, ``corpus.vocab``) into contexts as benign filler.
    ``init_weights``: start from an earlier calibration for the same encoder and architecture (its network
    weights; the whole-prompt detector and the pooled head are fitted anew), so fewer epochs are needed;
    with ``epochs=0`` only the detector and the head are fitted. ``detector_junk_directions`` > 0 projects
    that many junk nuisance directions out of the whole-prompt detector (``junk_nuisance``; off by default:
    on the bundled encoder one direction lowers the detector's flag rate on junk-laden benign captions from
    about a quarter to a few percent, and its I2P nudity AUROC against COCO from 0.9885 to 0.9843).
    ``should_stop()`` (the host's interrupt) is polled between batches; when it answers true, ``Cancelled``
    is raised and no weights file is written. ``log_line(text)`` gets one console line per phase and per
    epoch, with an estimate of the time left (default: this module's logger at INFO).
    ``cache_dir`` holds encoded corpora (``"default"``: ``default_cache_dir()``, ``None``: no cache), kept
    under ``cache_max_bytes`` by evicting the oldest files.

    Training leaves the caller's inference mode and enables gradients itself (hosts call this from inside
    ``torch.inference_mode()`` or ``torch.no_grad()``); the caller's grad and inference modes and torch's
    thread count are exactly as before when it returns or raises. The weights file is written atomically.
    ``keep_better``: when ``out_path`` already holds a calibration for the same encoder and concept list whose
    validation token AUROC is higher than this run's (by more than ``KEEP_BETTER_MARGIN``; a short budget
    gives a weaker file), that file is kept, nothing is written, and the summary's ``kept_earlier`` says why
    (its ``out`` is the kept file); a WARNING is logged. False overwrites whatever is there.
    """
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        with training_mode():
            return _calibrate(encoder, concepts, out_path, progress, time_budget_s, seed, n_unsafe, n_benign, epochs,
                              batch_size, lr, hidden, layers, heads, pad_rows, val_fraction, patience, device,
                              cache_dir, loss_weights, pos_weight, vocab_words, should_stop,
                              log_line or log.info, cache_max_bytes, init_weights, keep_better,
                              detector_junk_directions)
    finally:
        torch.set_num_threads(previous_threads)


def _calibrate(encoder, concepts, out_path, progress, time_budget_s, seed, n_unsafe, n_benign, epochs, batch_size,
               lr, hidden, layers, heads, pad_rows, val_fraction, patience, device, cache_dir, loss_weights,
               pos_weight, vocab_words, should_stop, log_line, cache_max_bytes, init_weights=None,
               keep_better=True, detector_junk_directions=0) -> dict:
    t0 = time.perf_counter()
    budget = Budget(time_budget_s)
    progress = progress or _noop
    check_cancel(should_stop)
    concepts = [str(c).strip() for c in concepts if str(c).strip()]
    if not concepts:
        raise ValueError("the concept list is empty: pass at least one concept (e.g. nudity,violence)")
    random.seed(seed)
    torch.manual_seed(seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cache = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)

    # 1. corpus
    progress(0, 1, "generating the synthetic corpus")
    extra_words = vocabulary_words(encoder, limit=vocab_words, seed=seed) if vocab_words > 0 else []
    gen = CorpusGenerator(concepts, seed=seed, extra_words=extra_words)
    n_u, n_b = corpus_sizes(gen, n_unsafe, n_benign)
    samples = gen.generate(n_u, n_b)
    cs = tokenize_samples(samples, encoder, pad_rows=pad_rows)

    def settings_for(n_u, n_b):
        out = {"n_unsafe": n_u, "n_benign": n_b, "seed": seed, "pad_rows": pad_rows}
        if extra_words:  # only then: the default corpus keeps its cache key
            out["vocab_words"] = len(extra_words)
        return out

    corpus_settings = settings_for(n_u, n_b)
    budget_scale, probe_s_per_prompt = 1.0, None
    cached_file = cache_path(encoder, concepts, corpus_settings, cs.chunks, cache)
    if (budget.seconds is not None and (n_unsafe is None or n_benign is None)
            and not (cached_file is not None and cached_file.is_file())):
        progress(0, 1, "timing the encoder to fit the corpus to the time budget")
        probe_s_per_prompt = seconds_per_prompt(encoder, cs.chunks, n_u + n_b)
        budget_scale = budget.corpus_scale(probe_s_per_prompt, n_u + n_b)
        if budget_scale < 1.0:
            full = (n_u, n_b)
            n_u, n_b = scaled_sizes(n_u if n_unsafe is None else n_unsafe, n_b if n_benign is None else n_benign,
                                    budget_scale)
            gen = CorpusGenerator(concepts, seed=seed, extra_words=extra_words)
            samples = gen.generate(n_u, n_b)
            cs = tokenize_samples(samples, encoder, pad_rows=pad_rows)
            corpus_settings = settings_for(n_u, n_b)
            log_line(f"Embedding Sanitizer calibration: encoding takes about {probe_s_per_prompt * 1000:.0f} s per "
                     f"1,000 prompts here; the {budget.seconds:.0f} s budget fits {n_u} + {n_b} of the default "
                     f"{full[0]} + {full[1]} corpus prompts")
            needed = probe_s_per_prompt * (n_u + n_b)
            if needed > ENCODE_SHARE * budget.seconds:
                log_line(f"Embedding Sanitizer calibration: the {budget.seconds:.0f} s budget is too small for this "
                         f"machine: even the smallest corpus ({n_u} + {n_b} prompts) needs about {needed:.0f} s to "
                         "encode; the run will take longer than the budget")
    t_corpus = time.perf_counter() - t0
    progress(1, 1, f"corpus: {n_u} unsafe + {n_b} benign prompts, {len(cs.chunks)} unique chunks")
    log_line(f"Embedding Sanitizer calibration: corpus of {n_u} unsafe + {n_b} benign prompts "
             f"({len(cs.chunks)} chunks) for {encoder.name}"
             + (f", time budget {format_duration(budget.seconds)}" if budget.seconds is not None else ""))

    # 2. encode once (cached)
    t1 = time.perf_counter()
    (rows, offsets), cached = encode_cached(encoder, concepts, corpus_settings, cs.chunks, cache, progress,
                                            should_stop, cache_max_bytes)
    rows, offsets = trainable(rows), trainable(offsets)
    t_encode = time.perf_counter() - t1
    log_line(f"Embedding Sanitizer calibration: corpus {'loaded from the cache' if cached else 'encoded'} in "
             f"{t_encode:.0f} s")
    ts = TrainingSet(cs, rows, offsets, encoder.layout, encoder.layout.chunk_length)

    # split by prompt
    g = torch.Generator().manual_seed(seed)
    n_samples = len(samples)
    is_val_sample = torch.rand(n_samples, generator=g) < val_fraction
    val_mask = is_val_sample[ts.sample]
    train_idx = torch.nonzero(~val_mask).flatten()
    val_idx = torch.nonzero(val_mask).flatten()

    # scales: per-element RMS of the rows, and the identity's erase loss
    body = rows[ts.in_idx[ts.valid & (ts.roles != ROLE_BOS)]].float()
    rms = float(body.pow(2).mean().sqrt())
    er = ts.valid & (ts.roles != ROLE_BOS) & ts.erase.unsqueeze(1)
    diff = (rows[ts.in_idx[er]].float() - rows[ts.tgt_idx[er]].float()).pow(2).sum(-1)
    gap_scale = float(diff.mean()) if diff.numel() else 1.0
    gap_scale = max(gap_scale, 1e-6 * rms * rms * encoder.width)

    # 3. train
    config = ESConfig(width=encoder.width, hidden=hidden, layers=layers, heads=heads,
                      max_length=encoder.layout.chunk_length)
    model = EmbeddingSanitizerNet(config).to(dev)
    model.row_scale.fill_(rms)
    if init_weights:
        from .weights_io import load_es

        start, _ = load_es(init_weights, encoder_name=encoder.name, encoder_fingerprint=encoder.fingerprint,
                           width=encoder.width)
        if (start.config.hidden, start.config.layers, start.config.heads) != (hidden, layers, heads):
            raise ValueError(f"{Path(init_weights).name} has another architecture (hidden {start.config.hidden}, "
                             f"{start.config.layers} layers, {start.config.heads} heads)")
        network = {k: v for k, v in start.state_dict().items() if not k.startswith(("prompt_", "pooled_"))}
        model.load_state_dict(network, strict=False)
        model.row_scale.fill_(rms)
    weights = {"erase": 1.0, "keep": 1.0, "bce": 1.0, "chunk_bce": 0.5, **(loss_weights or {})}
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    total_steps = max(1, steps_per_epoch * epochs)
    warmup = min(100, total_steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total_steps))))
    # length buckets: sort by length inside shuffled blocks so batches are nearly rectangular
    best, best_state, bad, history, step = float("inf"), None, 0, [], 0
    t2 = time.perf_counter()
    stopped = "epochs"
    rng = torch.Generator().manual_seed(seed + 1)
    model.train()
    for epoch in range(epochs):
        perm = train_idx[torch.randperm(len(train_idx), generator=rng)]
        blocks = [perm[i:i + batch_size * 16] for i in range(0, len(perm), batch_size * 16)]
        batches = []
        for blk in blocks:
            blk = blk[ts.length[blk].argsort()]
            batches += [blk[i:i + batch_size] for i in range(0, len(blk), batch_size)]
        order = torch.randperm(len(batches), generator=rng).tolist()
        for k, bi in enumerate(order):
            check_cancel(should_stop)
            b = ts.batch(batches[bi], dev)
            _, parts = compute_losses(model, b, gap_scale, pos_weight)
            loss = sum(weights[name] * parts[name] for name in weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if k % 10 == 0:
                progress(step, total_steps, f"training epoch {epoch + 1}/{epochs}: loss {loss.item():.4f} "
                         f"(erase {parts['erase'].item():.3f}, score {parts['bce'].item():.3f})")
            if budget.training_deadline_left() <= 0:
                break
        check_cancel(should_stop)
        metrics = evaluate(model, ts, val_idx, dev, gap_scale, pos_weight, weights)
        metrics["epoch"] = epoch + 1
        history.append(metrics)
        log.info("epoch %d: %s", epoch + 1, json.dumps({k: round(v, 4) for k, v in metrics.items()}))
        progress(step, total_steps, f"epoch {epoch + 1}: val loss {metrics['loss']:.4f}, token AUROC "
                 f"{metrics['token_auroc']:.4f}, gap left {metrics['erase']:.3f}")
        per_epoch = (time.perf_counter() - t2) / (epoch + 1)
        left = min((epochs - epoch - 1) * per_epoch, max(0.0, budget.training_deadline_left()))
        if budget.seconds is not None:  # plus the detector's share and the reserve
            left += max(0.0, budget.left() - max(0.0, budget.training_deadline_left()))
        log_line(f"Embedding Sanitizer calibration: epoch {epoch + 1}/{epochs} in {per_epoch:.0f} s, validation "
                 f"token AUROC {metrics['token_auroc']:.3f}, loss {metrics['loss']:.4f}; about "
                 f"{format_duration(left)} left")
        if metrics["loss"] < best - 1e-4:
            best, bad = metrics["loss"], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                stopped = "early stopping"
                break
        if budget.training_deadline_left() <= 0:
            stopped = "time budget"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    if not history:  # epochs 0 (with --init: refit the detector and the head only): validate the network as given
        model.eval()
        history.append({**evaluate(model, ts, val_idx, dev, gap_scale, pos_weight, weights), "epoch": 0})
        stopped = "no training (epochs 0)"
    model.eval().to("cpu")
    t_train = time.perf_counter() - t2
    final = min(history, key=lambda m: m["loss"]) if history else {}
    progress(1, 1, "fitting the whole-prompt detector")
    indirect = torch.tensor([samples[int(i)].term_kind not in ("", "core") for i in ts.sample])
    pooling = pooling_for(encoder.layout)
    t3 = time.perf_counter()
    reserve = RESERVE_SHARE * budget.seconds if budget.seconds is not None else 0.0
    out_of_time = lambda: budget.left() <= reserve  # noqa: E731
    extra = detector_extra_vectors(encoder, concepts, seed, 0 if out_of_time() else DETECTOR_EXTRA_FACTOR * n_u,
                                   pooling, progress, should_stop=should_stop, out_of_time=out_of_time)
    extra = trainable(extra)
    nuisance, junk_pairs = None, 0
    if detector_junk_directions > 0 and not out_of_time():
        nuisance, junk_pairs = junk_nuisance(encoder, concepts, seed, pooling, JUNK_PAIRS, progress,
                                             directions=detector_junk_directions, should_stop=should_stop,
                                             out_of_time=out_of_time)
    final = {**final, **fit_prompt_head(model, ts, train_idx, val_idx, pooling, indirect, extra, nuisance)}
    final["preservation_share"] = validation_preservation(model, ts, val_idx, encoder.layout.chunk_length)
    t_detector = time.perf_counter() - t3
    check_cancel(should_stop)
    t4 = time.perf_counter()
    pooled_figures = fit_pooled_stage(model, encoder, samples, ts, is_val_sample, pooling, progress,
                                      max_prompts=0 if out_of_time() else POOLED_HEAD_PROMPTS)
    final.update({k: v for k, v in pooled_figures.items() if isinstance(v, (int, float))})
    t_pooled = time.perf_counter() - t4

    # 4. save
    epochs_run = sum(1 for m in history if m.get("epoch", 0) > 0)
    training = {"seed": seed, "epochs_run": epochs_run, "stopped_by": stopped, "steps": step, "lr": lr,
                "batch_size": batch_size, "loss_weights": weights, "pos_weight": pos_weight,
                "corpus": {**corpus_settings, **cs.stats, "packs": gen.packs, "custom_concepts": len(gen.custom),
                           "terms": len(gen.terms), "corpus_version": CORPUS_VERSION},
                "device": str(dev), "time_s": {"corpus": round(t_corpus, 1), "encode": round(t_encode, 1),
                                               "train": round(t_train, 1), "detector": round(t_detector, 1)},
                "encode_cached": cached, "detector_extra_prompts": len(extra), "detector_junk_pairs": junk_pairs,
                "detector_junk_directions": int(detector_junk_directions) if junk_pairs else 0,
                "time_budget_s": budget.seconds, "budget_corpus_scale": round(budget_scale, 4),
                "encode_s_per_prompt_probe": None if probe_s_per_prompt is None else round(probe_s_per_prompt, 4),
                "pooled_head": pooled_figures, "pooled_head_s": round(t_pooled, 1)}
    val = {k: round(float(v), 5) for k, v in final.items()}
    kept = better_earlier_file(out_path, encoder, concepts, val) if keep_better else None
    if kept is None:
        out_path = write_atomically(out_path, lambda temp: save_es(
            temp, model, encoder_name=encoder.name, encoder_fingerprint=encoder.fingerprint,
            layout=encoder.layout.to_dict(), concepts=concepts, training=training, metrics={"validation": val}))
    total = time.perf_counter() - t0
    summary = {"out": str(out_path), "kept_earlier": kept, "encoder": encoder.name, "width": encoder.width,
               "concepts": len(concepts), "packs": gen.packs, "custom_concepts": len(gen.custom), "prompts": n_u + n_b,
               "chunks_encoded": len(cs.chunks), "examples": len(cs), "encode_cached": cached,
               "epochs": epochs_run, "stopped_by": stopped, "validation": val,
               "time_s": {"corpus": round(t_corpus, 1), "encode": round(t_encode, 1), "train": round(t_train, 1),
                          "detector": round(t_detector, 1), "pooled_head": round(t_pooled, 1),
                          "total": round(total, 1)},
               "encode_s_per_1000_prompts": round(1000 * t_encode / max(1, n_u + n_b), 2) if not cached else None,
               "history": history}
    if kept is not None:
        progress(1, 1, f"kept the earlier {Path(out_path).name}")
        log.warning("Embedding Sanitizer calibration: %s", kept["reason"])
        log_line(f"Embedding Sanitizer calibration: {kept['reason']} ({format_duration(total)})")
        return summary
    progress(1, 1, f"saved {Path(out_path).name} in {total:.0f} s")
    log_line(f"Embedding Sanitizer calibration: saved {Path(out_path).name} in {format_duration(total)} "
             f"({quality_line(val)})")
    return summary


def better_earlier_file(out_path, encoder, concepts, validation: dict) -> dict | None:
    """``{"reason", "validation"}`` when ``out_path`` holds a calibration for this encoder and concept list that
    validated better than ``validation`` (token AUROC higher by more than ``KEEP_BETTER_MARGIN``); else None
    (no file, another kind of file, another encoder or concept list, or no better figure to compare)."""
    path = Path(out_path)
    if not path.is_file():
        return None
    try:
        meta = read_metadata(path)
    except Exception:  # noqa: BLE001 - not a readable ES file: it is replaced as before
        return None
    earlier = (meta.get("metrics") or {}).get("validation") or {}
    if (not fingerprints_match(str(meta.get("encoder_fingerprint", "")), encoder.fingerprint)
            or sorted(meta.get("concepts") or []) != sorted(concepts)):
        return None
    try:
        old, new = float(earlier["token_auroc"]), float(validation["token_auroc"])
    except (KeyError, TypeError, ValueError):
        return None
    if not old > new + KEEP_BETTER_MARGIN:  # NaN on either side: not better
        return None
    return {"reason": f"kept the earlier {path.name}: its validation token AUROC {old:.3f} is higher than this "
                      f"run's {new:.3f} (a longer time budget gives a better file; pass keep_better=False, or "
                      f"--overwrite to the train command, to replace it anyway)",
            "validation": earlier}


def quality_line(validation: dict) -> str:
    """One line of calibration quality for the UI: held-out synthetic prompts of the run's own corpus."""
    def num(key):
        value = validation.get(key)
        return "n/a" if value is None or value != value else f"{value:.3f}"

    return (f"validation token AUROC {num('token_auroc')}, whole-prompt AUROC {num('prompt_auroc')}, "
            f"preservation share {num('preservation_share')}")


@torch.no_grad()
def validation_preservation(model, ts: TrainingSet, idx: torch.Tensor, chunk_length: int | None,
                            batch_size: int = 256) -> float:
    """Share of held-out benign prompts (their first chunk) that ES at intensity 1 leaves with no row edited
    by more than ``EDIT_TOLERANCE`` (relative L2), as the evaluation's preservation share counts it."""
    from .es_model import apply_es
    from .evaluation.metrics import EDIT_TOLERANCE

    chosen = idx[ts.benign[idx] & ts.lead[idx]]
    if not len(chosen):
        return float("nan")
    kept = 0
    for start in range(0, len(chosen), batch_size):
        part = chosen[start:start + batch_size]
        length = int(ts.length[part].max())
        rows = ts.rows[ts.in_idx[part, :length]].float()
        roles = ts.roles[part, :length]
        out = apply_es(model, rows, roles, 1.0, length).rows
        rel = (out - rows).norm(dim=-1) / rows.norm(dim=-1).clamp_min(1e-12)
        rel = torch.where(ts.valid[part, :length], rel, torch.zeros_like(rel))
        kept += int((rel.amax(-1) <= EDIT_TOLERANCE).sum())
    return kept / len(chosen)
