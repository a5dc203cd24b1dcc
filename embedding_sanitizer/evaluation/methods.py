"""The methods compared side by side, all on the same encoder and the same cached embeddings.

* ``none``: no defence (scores 0, embeddings unchanged).
* ``blacklist``: a keyword blacklist. Detection score = number of matches; the
  sanitized prompt is the prompt with the matching words deleted, re-encoded.
* ``maxcos``: detection-only baseline from baselines.md, the maximum cosine of the
  normalised pooled prompt vector to any concept's pooled vector.
* ``safree``: SAFREE as released: leave-one-out detector, ``(I - P_C) P_I e``
  on flagged words, EOS and padding untouched, full edit (intensity 1);
  prompt score = number of flagged tokens (as baselines.md).
* ``fast``: the project's projection with the fast detector (EOS/padding projected).
* ``es``: the learned sanitizer; ``es+fast``: ES then the projection.

Prompts are tokenized word by word (whitespace words, each tokenized alone and
concatenated: the same ids as tokenizing the whole text for BERT and CLIP BPE,
which both split on whitespace first), so every token knows its word. Only
the first chunk is used (at most 75 word pieces, as in baselines.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from ..layout import ROLE_PAD, ROLE_WORD, token_roles
from ..prompt_detector import pool_rows
from ..encoders.base import pad_chunks
from ..concepts import DEFAULT_CACHE
from ..sanitize import Sanitizer
from ..settings import Settings

SANITIZE_BATCH = 64
ENCODE_BATCH = 64

# Keyword blacklist of this project: word stems, case-insensitive, anchored at a word start.
NUDITY_STEMS = (
    r"nud(?:e|es|ity|ist\w*)", r"naked\w*", r"nsfw", r"porn\w*", r"sex(?:y|ual\w*|ier)?", r"topless",
    r"bottomless", r"breasts?", r"boob\w*", r"tit(?:s|ty|ties)", r"nipples?", r"genital\w*", r"vagina\w*",
    r"vulva\w*", r"penis\w*", r"erotic\w*", r"lewd\w*", r"hentai", r"xxx", r"undress\w*", r"lingerie",
    r"strip(?:per|pers|tease|ping)", r"orgasm\w*", r"fetish\w*", r"bdsm", r"seductive\w*", r"sensual\w*",
    r"playboy", r"onlyfans", r"explicit", r"uncensored", r"bare[- ]?(?:chested|breasted|skin)", r"buttocks?",
    r"crotch\w*", r"intercourse", r"horny",
)
VIOLENCE_STEMS = (
    r"blood\w*", r"gore", r"gory", r"murder\w*", r"kill(?:s|ed|er|ers|ing)?", r"corpses?", r"dead\s+bod(?:y|ies)",
    r"mutilat\w*", r"decapitat\w*", r"behead\w*", r"dismember\w*", r"stab(?:s|bed|bing)?", r"slaughter\w*",
    r"massacre\w*", r"tortur\w*", r"wound(?:s|ed)?", r"violen(?:t|ce)", r"gunshot\w*", r"entrails", r"severed",
)
DEFAULT_BLACKLIST = r"\b(?:" + "|".join(NUDITY_STEMS + VIOLENCE_STEMS) + r")\b"


def phrase_blacklist(phrases) -> str:
    """Word-boundary regex matching any of ``phrases`` (whitespace-flexible)."""
    parts = sorted({r"\s+".join(re.escape(w) for w in p.split()) for p in phrases if p.strip()}, key=len,
                   reverse=True)
    return r"\b(?:" + "|".join(parts) + r")\b" if parts else r"(?!x)x"


@dataclass
class Task:
    """What one measurement removes: the concept list of the projection methods and the blacklist."""

    name: str
    concepts: tuple[str, ...]
    blacklist: str = DEFAULT_BLACKLIST
    safree_concepts: tuple[str, ...] | None = None  # SAFREE-as-released list, default = concepts

    @property
    def released_concepts(self) -> tuple[str, ...]:
        return self.safree_concepts or self.concepts


@dataclass
class Encoded:
    """Prompts tokenized word by word and encoded once (first chunk only)."""

    words: list[list[str]]
    ids: torch.Tensor  # [N, L]
    word_of: torch.Tensor  # [N, L] index of the word a position belongs to, -1 for BOS/EOS/pad
    tokens: torch.Tensor  # [N, L, D] float32 on CPU (padding rows of the BERT encoder are zero: never read)
    roles: torch.Tensor  # [N, L]
    relevant: torch.Tensor  # [N, L] rows the diffusion model reads (all for CLIP; non-pad for the BERT encoder)

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def texts(self) -> list[str]:
        return [" ".join(w) for w in self.words]

    def subset(self, index) -> "Encoded":
        index = torch.as_tensor(index, dtype=torch.long)
        return Encoded([self.words[i] for i in index.tolist()], self.ids[index], self.word_of[index],
                       self.tokens[index], self.roles[index], self.relevant[index])


class CachingEncoder:
    """Delegates to an encoder and remembers ``encode`` results for identical ids.

    The concept-subspace build encodes the same neutral reference prompts for
    every concept list; the evaluation builds many lists (one per CoPro
    category and per general concept), so the repeated passes are served from
    here. ``encode_chunks`` (the leave-one-out copies) is never cached.
    """

    def __init__(self, encoder, max_entries: int = 8) -> None:
        self._encoder = encoder
        self._store: dict[tuple, object] = {}
        self._max = max_entries

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    @property
    def device(self):
        return self._encoder.device

    @property
    def fingerprint(self):
        return self._encoder.fingerprint

    def encode(self, ids: torch.Tensor):
        key = (tuple(ids.shape), hash(ids.cpu().numpy().tobytes()))
        hit = self._store.get(key)
        if hit is not None and torch.equal(hit[0], ids.cpu()):
            return hit[1]
        out = self._encoder.encode(ids)
        if ids.shape[0] >= 16:  # only batches worth keeping (reference prompts), not single concepts
            if len(self._store) >= self._max:
                self._store.pop(next(iter(self._store)))
            self._store[key] = (ids.cpu().clone(), out)
        return out

    def encode_texts(self, texts):
        batch = self.tokenize(texts)
        return batch, self.encode(batch.ids)

    def pooled_texts(self, texts, batch_size: int = 64):
        rows = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenize(list(texts[start:start + batch_size]))
            rows.append(self.encode(batch.ids).pooled)
        return torch.cat(rows)


class WordTokenizer:
    """Token ids of single words for one encoder, cached."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.cache: dict[str, list[int]] = {}

    def ids_of(self, words: list[str]) -> list[list[int]]:
        new = sorted({w for w in words if w not in self.cache})
        for start in range(0, len(new), 256):
            chunk = new[start:start + 256]
            batch = self.encoder.tokenize(chunk)
            roles = token_roles(batch.ids, self.encoder.layout)
            for word, row, role in zip(chunk, batch.ids.tolist(), roles.tolist()):
                self.cache[word] = [i for i, r in zip(row, role) if r == ROLE_WORD]
        return [self.cache[w] for w in words]


def uses_mean_pooling(encoder) -> bool:
    """The bundled BERT encoder pools by the mean of non-padding rows and never reads padding rows."""
    return encoder.layout.name == "minilm"


def relevant_rows(encoder, roles: torch.Tensor) -> torch.Tensor:
    if uses_mean_pooling(encoder):
        return roles != ROLE_PAD
    return torch.ones_like(roles, dtype=torch.bool)


def pooled_from_rows(encoder, rows: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
    """The encoder's pooled vector computed from (possibly edited) rows ``[N, L, D]``."""
    return pool_rows(rows, roles, "mean" if uses_mean_pooling(encoder) else "eos")


def build_ids(encoder, word_ids: list[list[list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk ids ``[N, L]`` and the word index of every position from per-word token ids (first chunk)."""
    layout = encoder.layout
    limit = layout.max_words
    rows, owners = [], []
    for per_word in word_ids:
        flat, owner = [], []
        for w, ids in enumerate(per_word):
            flat.extend(ids)
            owner.extend([w] * len(ids))
        flat, owner = flat[:limit], owner[:limit]
        chunk = pad_chunks(flat, layout)[0]
        start = 1 if layout.bos_id is not None else 0
        row_owner = [-1] * len(chunk)
        row_owner[start:start + len(owner)] = owner
        rows.append(chunk)
        owners.append(row_owner)
    length = layout.chunk_length
    return (torch.tensor(rows, dtype=torch.long).reshape(-1, length),
            torch.tensor(owners, dtype=torch.long).reshape(-1, length))


def encode_words(encoder, tokenizer: WordTokenizer, words: list[list[str]], progress=None) -> Encoded:
    per_prompt = [tokenizer.ids_of(w) for w in words]
    ids, word_of = build_ids(encoder, per_prompt)
    roles = token_roles(ids, encoder.layout)
    tokens = torch.zeros(ids.shape[0], ids.shape[1], encoder.width)
    trim = uses_mean_pooling(encoder)  # padding rows are never read: encode active positions only
    lengths = (roles != ROLE_PAD).sum(-1)
    order = torch.argsort(lengths, descending=True, stable=True) if trim else torch.arange(ids.shape[0])
    for start in range(0, len(words), ENCODE_BATCH):
        index = order[start:start + ENCODE_BATCH]
        active = int(lengths[index].max()) if trim else ids.shape[1]
        out = encoder.encode_chunks(ids[index, :active]).tokens.to("cpu", torch.float32)
        tokens[index, :active] = out
        if progress is not None:
            progress.update(len(index))
    return Encoded(words, ids, word_of, tokens, roles, relevant_rows(encoder, roles))


def encode_texts(encoder, tokenizer: WordTokenizer, texts: list[str], progress=None) -> Encoded:
    return encode_words(encoder, tokenizer, [t.split() for t in texts], progress)


@dataclass
class Run:
    """What one method did to one set of prompts."""

    prompt_scores: np.ndarray  # [N] detection score, higher = more unsafe
    token_scores: torch.Tensor  # [N, L] per-token score (0 off words)
    embeddings: torch.Tensor | None  # [N, L, D] sanitized rows (None: detection-only method)
    roles: torch.Tensor | None = None  # roles of ``embeddings`` when they were re-encoded (blacklist)
    relevant: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    flagged: torch.Tensor | None = None  # [N, L] tokens the method flagged (None: it flags none)
    word_of: torch.Tensor | None = None  # [N, L] prompt word of each row of re-encoded ``embeddings``


class Method:
    key = "method"
    label = "method"
    sanitizes = True
    sweeps = False  # has an intensity (preset) to sweep

    def available(self) -> tuple[bool, str]:
        return True, ""

    def run(self, enc: Encoded, task: Task, preset: str = "medium") -> Run:
        raise NotImplementedError


class NoDefence(Method):
    key, label = "none", "No defence"

    def run(self, enc, task, preset="medium"):
        return Run(np.zeros(len(enc)), torch.zeros(enc.ids.shape), enc.tokens)


class Blacklist(Method):
    key, label = "blacklist", "Keyword blacklist"

    def __init__(self, encoder, tokenizer: WordTokenizer) -> None:
        self.encoder, self.tokenizer = encoder, tokenizer

    @staticmethod
    def word_flags(words: list[str], pattern: re.Pattern) -> tuple[list[bool], int]:
        text = " ".join(words)
        spans, pos = [], 0
        for w in words:
            spans.append((pos, pos + len(w)))
            pos += len(w) + 1
        flags = [False] * len(words)
        count = 0
        for match in pattern.finditer(text):
            count += 1
            for i, (a, b) in enumerate(spans):
                if a < match.end() and match.start() < b:
                    flags[i] = True
        return flags, count

    def run(self, enc, task, preset="medium"):
        pattern = re.compile(task.blacklist, re.IGNORECASE)
        scores = np.zeros(len(enc))
        token_scores = torch.zeros(enc.ids.shape)
        kept_words, changed, flags_of = [], [], []
        for n, words in enumerate(enc.words):
            flags, count = self.word_flags(words, pattern)
            flags_of.append(flags)
            scores[n] = count
            if count:
                hit = torch.tensor([i for i, f in enumerate(flags) if f])
                token_scores[n] = torch.isin(enc.word_of[n], hit).float()
                changed.append(n)
            kept_words.append([w for w, f in zip(words, flags) if not f])
        embeddings, roles, word_of = enc.tokens.clone(), enc.roles.clone(), enc.word_of.clone()
        if changed:
            redone = encode_words(self.encoder, self.tokenizer, [kept_words[i] for i in changed])
            embeddings[changed] = redone.tokens
            roles[changed] = redone.roles
            for row, n in enumerate(changed):  # kept word k of prompt n is its original word kept[k]
                kept = torch.tensor([i for i, w in enumerate(enc.words[n]) if not flags_of[n][i]] + [-1])
                word_of[n] = kept[redone.word_of[row]]
        relevant = relevant_rows(self.encoder, roles) | enc.relevant
        return Run(scores, token_scores, embeddings, roles, relevant, flagged=token_scores > 0, word_of=word_of)


class PooledMaxCos(Method):
    key, label = "maxcos", "Pooled max-cos (detection only)"
    sanitizes = False

    def __init__(self, encoder, cache=DEFAULT_CACHE) -> None:
        self.encoder = encoder
        self.cache = cache  # the concept vectors the projection uses (pooled, each concept encoded alone)
        self._concepts: dict[tuple, torch.Tensor] = {}

    def concept_vectors(self, concepts) -> torch.Tensor:
        if concepts not in self._concepts:
            pooled = self.cache.get(self.encoder, tuple(concepts)).pooled.to("cpu", torch.float32)
            self._concepts[concepts] = torch.nn.functional.normalize(pooled, dim=-1)
        return self._concepts[concepts]

    def run(self, enc, task, preset="medium"):
        c = self.concept_vectors(task.released_concepts)
        pooled = torch.nn.functional.normalize(pooled_from_rows(self.encoder, enc.tokens, enc.roles), dim=-1)
        scores = (pooled @ c.T).amax(-1)
        rows = torch.nn.functional.normalize(enc.tokens, dim=-1)
        token = (rows @ c.T).amax(-1)
        token = torch.where(enc.roles == ROLE_WORD, token, torch.zeros_like(token))
        return Run(scores.double().numpy(), token, None)


class SanitizerMethod(Method):
    """A method that runs ``Sanitizer.sanitize`` with fixed settings."""

    def __init__(self, key: str, label: str, sanitizer: Sanitizer, *, mode: str, detector: str = "fast",
                 eos_policy: str = "project", released: bool = False, score: str = "max") -> None:
        self.key, self.label = key, label
        self.sanitizer = sanitizer
        self.mode, self.detector, self.eos_policy = mode, detector, eos_policy
        self.released = released
        self.score = score
        self.sweeps = not released

    def available(self):
        if "es" in self.mode.split("+") and self.sanitizer.es_model is None:
            return False, "no weights"
        return True, ""

    def settings(self, task: Task, preset: str) -> Settings:
        concepts = task.released_concepts if self.released else task.concepts
        return Settings(mode=self.mode, preset="medium" if self.released else preset,
                        concepts=", ".join(concepts), detector=self.detector, eos_policy=self.eos_policy)

    def run(self, enc, task, preset="medium"):
        settings = self.settings(task, preset)
        out_rows, out_scores, out_flags, out_prompt = [], [], [], []
        for start in range(0, len(enc), SANITIZE_BATCH):
            rows = enc.tokens[start:start + SANITIZE_BATCH]
            ids = enc.ids[start:start + SANITIZE_BATCH]
            result = self.sanitizer.sanitize(rows, ids, self.sanitizer.encoder.layout, settings)
            out_rows.append(result.embeddings.to("cpu", torch.float32))
            out_scores.append(result.scores.to("cpu", torch.float32))
            out_flags.append(result.flagged.to("cpu"))
            if result.prompt_scores is not None:
                out_prompt.append(result.prompt_scores.to("cpu", torch.float32))
        if not out_rows:
            return Run(np.zeros(0), torch.zeros(enc.ids.shape), enc.tokens)
        embeddings, scores, flags = torch.cat(out_rows), torch.cat(out_scores), torch.cat(out_flags)
        scores = torch.where(enc.roles == ROLE_WORD, scores, torch.zeros_like(scores))
        if self.score == "count":
            prompt = flags.sum(-1).double().numpy()
        elif self.score == "prompt" and len(out_prompt) == len(out_rows):  # the whole-prompt detector
            prompt = torch.cat(out_prompt).double().numpy()
        else:
            prompt = scores.amax(-1).double().numpy()
        return Run(prompt, scores, embeddings, flagged=flags & (enc.roles == ROLE_WORD))


def build_methods(encoder, es_model=None, es_meta=None, previous=None) -> list[Method]:
    """The methods side by side; ``previous`` = (model, meta) of earlier ES weights, run as "ES before"."""
    encoder = encoder if isinstance(encoder, CachingEncoder) else CachingEncoder(encoder)
    sanitizer = Sanitizer(encoder, es_model, es_meta or {})
    tokenizer = WordTokenizer(encoder)
    extra = []
    if previous is not None and previous[0] is not None:
        extra = [SanitizerMethod("es-before", f"ES before the erasure change ({previous[1].get('file', '')}, "
                                 "es+safree)", Sanitizer(encoder, previous[0], previous[1] or {}), mode="es+safree",
                                 detector="fast", score="prompt")]
    return extra + [
        NoDefence(),
        Blacklist(encoder, tokenizer),
        PooledMaxCos(encoder),
        SanitizerMethod("safree", "SAFREE as released (LOO)", sanitizer, mode="safree", detector="loo",
                        eos_policy="keep", released=True, score="count"),
        SanitizerMethod("fast", "Projection, fast detector", sanitizer, mode="safree", detector="fast"),
        SanitizerMethod("es", "ES (learned)", sanitizer, mode="es", score="prompt"),
        SanitizerMethod("es+fast", "ES then projection", sanitizer, mode="es+safree", detector="fast",
                        score="prompt"),
    ]
