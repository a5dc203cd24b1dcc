"""A fuzzer for the core API: random inputs, and what counts as a failure.

Each case is drawn from a ``random.Random`` seeded by (seed, case number), so a failure
is replayed by its number. Case kinds:

* ``tensor``: ``Sanitizer.sanitize`` on random shapes, dtypes, values (normal, huge,
  tiny, NaN/inf), token ids (valid layouts, random, out of the vocabulary, negative,
  textual-inversion sentinels), settings and concept lists, with tiny random encoders
  and random tiny ES models;
* ``prompt``: random prompt texts (words, punctuation, Unicode oddities, lone surrogates)
  through the bundled MiniLM encoder with its shipped ES weights, with ``texts=``;
* ``obfuscated``: an unsafe plain prompt and an obfuscated spelling of it (look-alike
  letters, control or zero-width characters, full-width forms); the obfuscated one must be
  edited whenever the plain one is, or carry a note saying why not;
* ``weights``: mutated weights files (truncated, bytes flipped, config fields and tensor
  values changed) through ``load_es`` and ``scan_weight_files`` beside a good file;
* ``heatmap``: the demo and heatmap text paths on random pieces, scores and prompts.

Failures: *crashes* (an exception other than the documented clear errors in
``CLEAR_ERRORS``), *silent no-ops* (an obfuscated prompt left unedited without a note
while its plain form is edited) and *invariant violations* (intensity 0 not the identity,
BOS changed, an unedited row changed, shape/dtype/device changed, scores outside [0, 1],
a report that is not strict JSON, a good weights file not listed beside a broken one).
"""
from __future__ import annotations

import io
import json
import random
import tempfile
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .concepts import ConceptListTooLong, EmptyConceptList
from .encoders.base import EncoderOutput, TextEncoder, TokenBatch, pad_chunks, tensor_fingerprint
from .es_model import ESConfig, EmbeddingSanitizerNet
from .layout import ROLE_BOS, SD1_CLIP_L, SD2_CLIP_H, T5, ChunkLayout, token_roles
from .sanitize import Sanitizer, SanitizerInputError
from .settings import DETECTORS, EOS_POLICIES, MODES, PRESET_CHOICES, SCHEDULES, Settings, SettingsError
from .weights_io import WeightsFileError, WeightsMismatch, load_es, save_es, scan_weight_files

#: The documented clear errors: anything else raised by the core is a crash.
CLEAR_ERRORS = (SanitizerInputError, SettingsError, WeightsFileError, WeightsMismatch, EmptyConceptList,
                ConceptListTooLong, FileNotFoundError)
KINDS = ("tensor", "prompt", "obfuscated", "weights", "heatmap")
DEFAULT_MIX = {"tensor": 0.55, "prompt": 0.12, "obfuscated": 0.12, "weights": 0.11, "heatmap": 0.1}

WORDS = ("a", "photo", "of", "woman", "man", "beach", "cat", "chair", "sunset", "red", "car", "forest", "city",
         "dog", "portrait", "painting", "by", "in", "the", "style", "oil", "castle", "river", "night")
UNSAFE = ("nude", "naked", "topless", "porn", "erotic", "blood", "gore", "corpse", "murder", "genitals")
CONCEPT_LISTS = ("nudity, violence", "nudity, naked body, gore", "blood", "Van Gogh, church", "",
                 "nudity, gore, \ud800, ⛔, 猫")
ODD = ("\ud800", "\udfff", "\x00", "\x1b", "\u200b", "\u200d", "\ufeff", "\u202e", "😀", "猫", "ｎ", "\t", "\n",
       "(", ")", ":", "1.5", "BREAK", "<|endoftext|>", "[SEP]", "##", "é", "ß", "\u0301")
HOMOGLYPHS = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441", "x": "\u0445",
              "i": "\u0456", "y": "\u0443", "n": "\u03b7", "t": "\u03c4", "k": "\u03ba"}
OBFUSCATIONS = ("homoglyph", "control", "zero_width", "fullwidth", "mixed")


class TinyEncoder(TextEncoder):
    """A small random 'text encoder': whitespace vocabulary, random table, causal running mean."""

    def __init__(self, width: int = 32, layout: ChunkLayout = SD1_CLIP_L, seed: int = 0, vocab: int = 49408):
        self.layout = layout
        self.width = width
        self.name = f"tiny-{width}-{layout.name}-{seed}"
        gen = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab, width, generator=gen)

    @property
    def vocab_size(self) -> int:
        return int(self.table.shape[0])

    def word_id(self, word: str) -> int:
        return 1000 + (sum(ord(c) * 31 ** i for i, c in enumerate(word)) % (self.vocab_size - 2000))

    def tokenize(self, texts):
        words = [[self.word_id(w) for w in str(t).lower().split()] for t in texts]
        if self.layout.chunk_length is None:  # T5-like: words, EOS, padding to the longest
            rows = [w + [self.layout.eos_id] for w in words]
            width = max(len(r) for r in rows)
            rows = [r + [self.layout.pad_id] * (width - len(r)) for r in rows]
        else:
            rows = [[i for c in pad_chunks(w, self.layout) for i in c] for w in words]
            width = max(len(r) for r in rows)
            for r in rows:
                while len(r) < width:
                    r.extend(pad_chunks([], self.layout)[0])
        ids = torch.tensor(rows, dtype=torch.long)
        return TokenBatch(ids, [[str(i) for i in r] for r in rows], self.layout, list(texts))

    def encode_chunks(self, ids):
        if bool((ids < 0).any()) or bool((ids >= self.vocab_size).any()):
            raise ValueError("ids outside the tiny encoder's vocabulary")
        x = self.table[ids]
        steps = torch.arange(1, ids.shape[1] + 1, dtype=torch.float32).view(1, -1, 1)
        rows = 0.5 * x + 0.5 * x.cumsum(1) / steps
        roles = token_roles(ids, self.layout, rows_are_chunks=True)
        eos = (roles == 2).float().argmax(1)
        return EncoderOutput(rows, rows[torch.arange(ids.shape[0]), eos])

    def compute_fingerprint(self):
        return tensor_fingerprint(self.table)


def tiny_es(width: int, seed: int, edit: bool = True) -> EmbeddingSanitizerNet:
    torch.manual_seed(seed)
    model = EmbeddingSanitizerNet(ESConfig(width=width, hidden=16, layers=1, heads=2))
    if edit:
        for p in model.delta_head.parameters():
            torch.nn.init.normal_(p, std=0.1)
        with torch.no_grad():
            model.score_head[-1].bias.fill_(1.5)
    return model.eval()


@dataclass
class Finding:
    case: int
    kind: str
    category: str  # crash | silent_noop | invariant
    message: str
    detail: str = ""


@dataclass
class Tally:
    cases: int = 0
    inputs: int = 0  # core calls made (a case may make several)
    clear_errors: int = 0
    by_kind: dict = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def count(self, category: str) -> int:
        return sum(1 for f in self.findings if f.category == category)

    def summary(self) -> dict:
        return {"cases": self.cases, "inputs": self.inputs, "clear_errors": self.clear_errors,
                "by_kind": dict(self.by_kind), "crashes": self.count("crash"),
                "silent_noops": self.count("silent_noop"), "invariant_violations": self.count("invariant")}


class Violation(AssertionError):
    """An invariant does not hold."""


class SilentNoop(AssertionError):
    """An obfuscated unsafe prompt passed unedited and unexplained."""


class Fuzzer:
    """Holds the encoders, models and scratch folder; ``run_case(kind, rng)`` checks one case."""

    def __init__(self, use_minilm: bool = True, scratch: Path | None = None, demo: bool = True) -> None:
        self.demo = demo  # heatmap cases also run the demo command now and then (slow: it loads the encoder)
        self.tiny = [TinyEncoder(32, SD1_CLIP_L, 0), TinyEncoder(48, SD2_CLIP_H, 1), TinyEncoder(24, T5, 2, vocab=3000)]
        self.tiny_es = {enc.width: tiny_es(enc.width, enc.width) for enc in self.tiny}
        self.minilm = None
        self.minilm_es = (None, {})
        if use_minilm:
            from .encoders.minilm import MiniLMEncoder
            from .encoders.select import default_weights_path

            self.minilm = MiniLMEncoder()
            path = default_weights_path(self.minilm)
            if path is not None:
                model, meta = load_es(path, encoder_name=self.minilm.name,
                                      encoder_fingerprint=self.minilm.fingerprint, width=self.minilm.width)
                self.minilm_es = (model, {**meta, "file": path.name})
                self.weights_bytes = path.read_bytes()
        if not hasattr(self, "weights_bytes"):
            enc = self.tiny[0]
            with tempfile.TemporaryDirectory() as tmp:
                good = save_es(Path(tmp) / "g.safetensors", tiny_es(enc.width, 3), encoder_name=enc.name,
                               encoder_fingerprint=enc.fingerprint, layout=enc.layout.to_dict(), concepts=["x"])
                self.weights_bytes = good.read_bytes()
        self._scratch_dir = tempfile.TemporaryDirectory(prefix="es-fuzz-") if scratch is None else None
        self.scratch = Path(scratch or self._scratch_dir.name)
        self.inputs = 0
        self.stats: dict[str, int] = {}  # obfuscated cases: how many plain prompts were edited, and hidden ones

    # -- the checks --------------------------------------------------------------------------
    def sanitize_checked(self, sanitizer: Sanitizer, emb, ids, layout, settings, pieces=None, texts=None):
        self.inputs += 1
        result = sanitizer.sanitize(emb, ids, layout, settings, pieces=pieces, texts=texts)
        check_result(emb, ids, layout, settings, result)
        return result

    def run_case(self, kind: str, rng: random.Random) -> None:
        """One case; raises ``Violation``/``SilentNoop`` or a crash, returns quietly otherwise.

        A documented clear error is caught inside and counted as such by the caller.
        """
        getattr(self, f"case_{kind}")(rng)

    # -- tensor cases ------------------------------------------------------------------------
    def case_tensor(self, rng: random.Random) -> None:
        enc = rng.choice(self.tiny)
        layout = enc.layout
        chunk = layout.chunk_length or rng.choice([8, 20, 77])
        batch = rng.randint(1, 3)
        chunks = rng.randint(1, 3)
        total = chunk * chunks
        if rng.random() < 0.05:
            total += rng.choice([-1, 1, 5])  # not a whole chunk
        total = max(total, 0 if rng.random() < 0.02 else 1)
        width = enc.width if rng.random() < 0.9 else rng.choice([8, enc.width + 1, 384])
        texts = [random_prompt(rng, 0, 40) for _ in range(batch)]
        tokenized = enc.tokenize(texts).ids
        if tokenized.shape[1] >= total:
            ids = tokenized[:, :total].clone()
        else:
            filler = torch.tensor(pad_chunks([], layout)[0] if layout.chunk_length else [layout.pad_id] * chunk)
            reps = (total - tokenized.shape[1] + filler.numel() - 1) // filler.numel()
            ids = torch.cat([tokenized, filler.repeat(batch, reps)], 1)[:, :total].clone()
        roll = rng.random()
        if roll < 0.1:
            ids = torch.randint(-3, enc.vocab_size + 5000, ids.shape)
        elif roll < 0.2:
            ids[:, rng.randrange(max(total, 1))] = rng.choice([layout.ti_id, enc.vocab_size + 7, -5, 10 ** 9]) \
                if total else 0
        if rng.random() < 0.03:
            ids = ids[:, :max(total - 1, 0)]  # ids that do not match the embeddings
        emb = random_embeddings(rng, batch, total, width, enc)
        if emb is not None and rng.random() < 0.5 and emb.shape[-1] == enc.width and ids.shape[1] == total \
                and total and total % chunk == 0 and bool((ids >= 0).all()) and bool((ids < enc.vocab_size).all()):
            emb = enc.encode(ids).tokens.to(emb.dtype) * rng.choice([1.0, 1.0, 1e-6, 1e3])
        settings = random_settings(rng)
        if settings is None:
            return
        es = self.tiny_es.get(enc.width) if rng.random() < 0.8 else tiny_es(enc.width, rng.randrange(100),
                                                                             edit=rng.random() < 0.5)
        sanitizer = Sanitizer(enc, es if rng.random() < 0.85 else None, {"encoder_name": enc.name})
        if rng.random() < 0.03:
            sanitizer = Sanitizer(None, es)
        pieces = None
        if rng.random() < 0.5 and ids.dim() == 2:
            pieces = [[str(int(i)) for i in row] for row in ids]
        use_texts = texts if rng.random() < 0.3 else None
        if emb is None:
            emb = rng.choice([[[1.0]], None, torch.zeros(3, dtype=torch.long), torch.zeros(2, 2)])
        self.sanitize_checked(sanitizer, emb, ids, layout, settings, pieces=pieces, texts=use_texts)

    # -- prompt cases (bundled encoder) ------------------------------------------------------
    def _minilm(self):
        if self.minilm is None:
            enc = self.tiny[0]
            return enc, Sanitizer(enc, self.tiny_es[enc.width], {"encoder_name": enc.name})
        model, meta = self.minilm_es
        return self.minilm, Sanitizer(self.minilm, model, meta)

    def case_prompt(self, rng: random.Random) -> None:
        enc, sanitizer = self._minilm()
        texts = [random_prompt(rng, 0, 20, odd=0.3) for _ in range(rng.randint(1, 2))]
        settings = random_settings(rng, short=True)
        if settings is None:
            return
        if rng.random() < 0.2:
            settings = settings.replace(concepts=random_prompt(rng, 0, 4, odd=0.5))
        batch, out = enc.encode_texts(texts)
        dtype = rng.choice([torch.float32, torch.float32, torch.float16, torch.bfloat16])
        self.sanitize_checked(sanitizer, out.tokens.to(dtype), batch.ids, enc.layout, settings,
                              pieces=batch.pieces, texts=texts if rng.random() < 0.8 else None)

    def case_obfuscated(self, rng: random.Random) -> None:
        enc, sanitizer = self._minilm()
        plain = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 4)))
        plain = f"{plain} {rng.choice(UNSAFE)} {rng.choice(WORDS)}".strip()
        how = rng.choice(OBFUSCATIONS)
        hidden = obfuscate(plain, how, rng)
        settings = Settings(mode=rng.choice(["safree", "es+safree", "es"]) if self.minilm_es[0] is not None
                            else "safree", preset=rng.choice(["custom", "medium", "high"]),
                            detector=rng.choice(["fast", "fast", "loo"]))
        batch, out = enc.encode_texts([plain])
        plain_result = self.sanitize_checked(sanitizer, out.tokens, batch.ids, enc.layout, settings,
                                             pieces=batch.pieces)
        batch, out = enc.encode_texts([hidden])
        result = self.sanitize_checked(sanitizer, out.tokens, batch.ids, enc.layout, settings,
                                       pieces=batch.pieces, texts=[hidden])
        plain_edited = plain_result.report["prompts"][0]["rows_edited"] > 0
        edited = result.report["prompts"][0]["rows_edited"] > 0
        explained = any(("normalised-text check" in n and ("failed" in n or "unavailable" in n))
                        or "own scores kept" in n for n in result.report["notes"])
        if plain_edited:
            self.stats["obfuscated_plain_edited"] = self.stats.get("obfuscated_plain_edited", 0) + 1
            if edited:
                self.stats["obfuscated_edited_too"] = self.stats.get("obfuscated_edited_too", 0) + 1
        if plain_edited and not edited and not explained:
            raise SilentNoop(f"{how}: {hidden!r} (plain {plain!r}) passed unedited without a note")

    # -- weights files -----------------------------------------------------------------------
    def case_weights(self, rng: random.Random) -> None:
        folder = Path(tempfile.mkdtemp(dir=self.scratch))
        good = folder / "a-good.safetensors"
        good.write_bytes(self.weights_bytes)
        bad = folder / "b-mutated.safetensors"
        bad.write_bytes(mutate_weights(self.weights_bytes, rng))
        self.inputs += 2
        scan = scan_weight_files(folder)
        if good not in scan.good:
            raise Violation(f"the good file is not listed beside a mutated one (broken: {scan.broken_labels()})")
        listed = {p for p in scan.good} | {p for p, _ in scan.broken}
        try:
            load_es(bad)
        except CLEAR_ERRORS as exc:
            if bad in scan.good:
                raise Violation(f"listed as good but load_es refuses it: {exc}") from None
            if str(bad.name) not in str(exc):
                raise Violation(f"the error does not name the file: {exc}") from None
        else:
            if bad not in listed:
                raise Violation("load_es accepts a file the scan did not list")
        for path in (good, bad):
            path.unlink()
        folder.rmdir()

    # -- demo and heatmap text paths ---------------------------------------------------------
    def case_heatmap(self, rng: random.Random) -> None:
        from .heatmap import group_words, heatmap_html, records_json, render_terminal, word_records

        pieces = [random_piece(rng) for _ in range(rng.randint(0, 30))]
        scores = [rng.choice([rng.random(), 0.0, 1.0, float("nan"), -0.5, 2.0]) for _ in pieces]
        edits = [rng.choice([0.0, rng.random(), 3.0, float("nan")]) for _ in pieces]
        self.inputs += 1
        words = group_words(pieces, scores)
        render_terminal(words, color=rng.random() < 0.5)
        heatmap_html(words)
        records = word_records(pieces, scores, edits)
        if [(r.word, r.positions) for r in records] != [(w, p) for w, _, p in words]:
            raise Violation("word_records and group_words group the pieces differently")
        if any(not (r.edit >= 0) for r in records):
            raise Violation(f"a word's edit weight is negative or NaN: {[r.edit for r in records]}")
        render_terminal(records, color=False)
        heatmap_html(records)
        json.dumps(records_json(records), allow_nan=False)
        if rng.random() < 0.02 and self.minilm is not None and self.demo:
            self.inputs += 1
            check_demo(random_prompt(rng, 1, 12, odd=0.4))


def check_result(emb, ids, layout, settings, result) -> None:
    """The core's invariants on one result; raises ``Violation``."""
    out = result.embeddings
    if out.shape != emb.shape or out.dtype != emb.dtype or out.device != emb.device:
        raise Violation(f"output {tuple(out.shape)} {out.dtype} {out.device} for input {tuple(emb.shape)} "
                        f"{emb.dtype} {emb.device}")
    if settings.effective_intensity == 0 and not torch.equal(out, emb):
        raise Violation("intensity 0 changed the embeddings")
    roles = result.roles
    bos = roles == ROLE_BOS
    if bool(bos.any()) and not torch.equal(out[bos], emb[bos]):
        raise Violation("a BOS row changed")
    untouched = result.weights <= 0
    if bool(untouched.any()) and not torch.equal(out[untouched], emb[untouched]):
        raise Violation("a row with edit weight 0 changed")
    scores = result.scores
    if not bool(torch.isfinite(scores).all()) or bool((scores < 0).any()) or bool((scores > 1).any()):
        raise Violation(f"scores outside [0, 1]: min {float(scores.min())}, max {float(scores.max())}")
    if not bool(torch.isfinite(result.weights).all()):
        raise Violation("edit weights are not finite")
    if not bool(torch.isfinite(out.float()).all()):
        raise Violation("the sanitized embeddings are not finite")
    try:
        json.dumps(result.report, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise Violation(f"the report is not strict JSON: {exc}") from None


def check_demo(prompt: str) -> None:
    """``python -m embedding_sanitizer demo PROMPT``: exit 0, or a one-line error without a traceback."""
    from .cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["demo", prompt, "--no-color"])
    text = err.getvalue()
    if "Traceback" in text or (code != 0 and len(text.strip().splitlines()) != 1):
        raise Violation(f"demo {prompt!r} exited {code} with: {text[-300:]!r}")
    if code not in (0, 2):
        raise Violation(f"demo {prompt!r} exited {code}: {text.strip()!r}")


# -- random inputs -----------------------------------------------------------------------------
def random_prompt(rng: random.Random, low: int, high: int, odd: float = 0.1) -> str:
    words = []
    for _ in range(rng.randint(low, high)):
        roll = rng.random()
        if roll < odd:
            words.append(rng.choice(ODD) if rng.random() < 0.7 else chr(rng.randint(1, 0x2FFFF)))
        elif roll < odd + 0.1:
            words.append(rng.choice(UNSAFE))
        else:
            words.append(rng.choice(WORDS))
    sep = rng.choice([" ", " ", ", ", "\x00", ""])
    return sep.join(words)


def random_piece(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.2:
        return rng.choice(["<|startoftext|>", "<|endoftext|>", "[CLS]", "[SEP]", "[PAD]", "<pad>"])
    base = rng.choice(WORDS + UNSAFE + ODD)
    return rng.choice([base, base + "</w>", "##" + base, "\u2581" + base, "Ã©", "", "</w>"])


def random_embeddings(rng, batch, total, width, enc):
    roll = rng.random()
    if roll < 0.02:
        return None
    dtype = rng.choice([torch.float32, torch.float32, torch.float16, torch.bfloat16, torch.float64,
                        torch.int64 if rng.random() < 0.1 else torch.float32])
    scale = 10.0 ** rng.choice([0, 0, 0, 1, 2, -3, -30, 6, 11, 13, 19, 30])
    if dtype == torch.int64:
        return torch.randint(-5, 5, (batch, total, width))
    emb = torch.randn(batch, total, width) * scale
    special = rng.random()
    if special < 0.03:
        emb[..., rng.randrange(width)] = float("nan")
    elif special < 0.06:
        emb[0, 0, 0] = rng.choice([float("inf"), float("-inf")])
    elif special < 0.09:
        emb.zero_()
    return emb.to(dtype)


def random_settings(rng: random.Random, short: bool = False) -> Settings | None:
    """Random settings; sometimes invalid ones, which must raise ``SettingsError`` (returns None)."""
    values = {
        "enabled": rng.random() < 0.95,
        "mode": rng.choice(MODES),
        "preset": rng.choice(PRESET_CHOICES),
        "intensity": rng.choice([0.0, 0.0, 0.3, 1.0, 1.0, 2.0, 3.0, rng.uniform(0, 3)]),
        "concepts": rng.choice(CONCEPT_LISTS[:3] if short else CONCEPT_LISTS),
        "detector": rng.choice(DETECTORS) if not short or rng.random() < 0.3 else "fast",
        "eos_policy": rng.choice(EOS_POLICIES),
        "schedule": rng.choice(SCHEDULES),
    }
    if rng.random() < 0.05:
        key = rng.choice(list(values) + ["bogus"])
        values[key] = rng.choice([None, "no", 9, -1.0, float("nan"), [1], "off!"])
    try:
        return Settings.from_dict(values)
    except SettingsError:
        return None


def obfuscate(text: str, how: str, rng: random.Random) -> str:
    if how == "homoglyph":
        out = "".join(HOMOGLYPHS[c] if c in HOMOGLYPHS and rng.random() < 0.6 else c for c in text)
        return out if out != text else "".join(HOMOGLYPHS.get(c, c) for c in text)
    if how == "control":
        return text.replace(" ", rng.choice(["\x00", "\x01", "\x1b", "\x7f", "\x0b", "\x1f"]))
    if how == "zero_width":
        words = text.split(" ")
        return " ".join(w[:1] + rng.choice(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]) + w[1:]
                        if len(w) > 1 else w for w in words)
    if how == "fullwidth":
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and rng.random() < 0.7 else c for c in text)
    return obfuscate(obfuscate(text, "homoglyph", rng), rng.choice(["control", "zero_width"]), rng)


def mutate_weights(data: bytes, rng: random.Random) -> bytes:
    """A damaged copy of a weights file: truncated, flipped, or with a changed header/config/tensor."""
    how = rng.choice(["truncate", "flip", "config", "config", "nan", "header", "empty"])
    if how == "empty":
        return b""
    if how == "truncate":
        return data[:rng.randrange(len(data))]
    if how == "flip":
        buf = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        return bytes(buf)
    from safetensors.torch import load, save

    state = load(data)
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + header_len]).get("__metadata__", {})
    if how == "config":
        config = json.loads(meta.get("config", "{}"))
        key = rng.choice(["hidden", "layers", "heads", "width", "max_length", "dropout", "edit_scope",
                          "prompt_pooling", "bogus"])
        config[key] = rng.choice([2 ** 22, 0, -1, 3, 7, "x", None, 1.5, True, 10 ** 12, 384, 128, "mean"])
        meta = {**meta, "config": json.dumps(config)}
    elif how == "nan":
        key = rng.choice(sorted(state))
        value = state[key].clone()
        value.view(-1)[rng.randrange(value.numel())] = rng.choice([float("nan"), float("inf")])
        state[key] = value if rng.random() < 0.7 else torch.full_like(value, float("nan"))
    else:
        meta = {**meta, rng.choice(["width", "config", "format", "layout"]): rng.choice(["", "{", "null", "7"])}
    return save(state, metadata=meta)


def run(n: int, seed: int = 0, mix: dict | None = None, use_minilm: bool = True, progress=None,
        fuzzer: Fuzzer | None = None) -> Tally:
    """``n`` cases; returns the tally with every finding (case number, kind, category, message)."""
    import logging

    mix = mix or DEFAULT_MIX
    kinds, weights = list(mix), list(mix.values())
    fuzzer = fuzzer or Fuzzer(use_minilm=use_minilm)
    tally = Tally()
    quiet = logging.getLogger("embedding_sanitizer")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the documented fall-backs warn; thousands of times is noise here
    try:
        for case in range(n):
            rng = random.Random(f"{seed}:{case}")
            kind = rng.choices(kinds, weights)[0]
            tally.cases += 1
            tally.by_kind[kind] = tally.by_kind.get(kind, 0) + 1
            before = fuzzer.inputs
            try:
                fuzzer.run_case(kind, rng)
            except CLEAR_ERRORS:
                tally.clear_errors += 1
            except SilentNoop as exc:
                tally.findings.append(Finding(case, kind, "silent_noop", str(exc)))
            except Violation as exc:
                tally.findings.append(Finding(case, kind, "invariant", str(exc)))
            except Exception as exc:  # noqa: BLE001 - a crash is what the fuzzer looks for
                tally.findings.append(Finding(case, kind, "crash", f"{type(exc).__name__}: {exc}",
                                              traceback.format_exc(limit=6)))
            tally.inputs += max(fuzzer.inputs - before, 1)
            if progress is not None:
                progress(case, tally)
    finally:
        quiet.setLevel(level)
    return tally
