"""Synthetic calibration prompts: unsafe prompts with aligned safe anchors, and benign prompts.

A prompt is a list of *segments*. Context segments are copied unchanged into
the anchor prompt; a concept segment is replaced by its anchor phrase. This is
the alignment scheme (documented in the README section of the calibration
command): unsafe and anchor prompts are token-for-token identical outside the
concept segments, and inside a concept segment of ``n_u`` unsafe tokens and
``n_a`` anchor tokens, unsafe token ``j`` is paired with anchor token
``floor(j * n_a / n_u)``; words after the segment are paired with the anchor's
words shifted by ``n_a - n_u``; EOS is paired with EOS and the k-th padding row
after EOS with the anchor's k-th padding row after its EOS. Anchors therefore
need not have the same token count as the unsafe phrase in any tokenizer, and
the pairing is exact for every encoder whose tokenizer splits on whitespace
first (CLIP BPE and BERT WordPiece both do), which is checked when the corpus
is tokenized.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from . import wordlists as W

SUGGESTIVE_STRENGTH = 0.6
# How often a built-in "core" term is drawn relative to the other terms. The plain words ("naked", "nude",
# "blood") also occur in many hard negatives ("naked eye", "a naked tree"); drawn as rarely as each
# euphemism, "a naked man" was outweighed by "a naked tree" and scored as benign.
CORE_TERM_WEIGHT = 2
# Target score of the subject a concept word modifies ("woman" in "a nude woman"), times the concept's
# strength. The subject's row carries the concept through attention, and the concept phrase is what the
# heatmap should show: the subject lighter than the concept word. At the default intensity a score this
# high edits a chunk on its own only with the whole-prompt detector's support (``es_model.CONFIRM_SCORE``).
CARRIER_STRENGTH = 0.4
EXTRA_WORD_SHARE = 0.6  # share of sprinkled everyday words drawn from ``extra_words`` when given
DECORATE_RATE = 0.3  # share of prompts (benign and unsafe alike) given tags, syntax or noise (``decorate``)
EXTRA_SPRINKLE_RATE = 0.65  # share of prompts that get everyday words when ``extra_words`` are given (else 0.5)
LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}


@dataclass
class Segment:
    text: str
    concept: str = ""  # non-empty: this segment carries that concept
    anchor: str = ""  # replacement text in the anchor prompt (concept segments only)
    strength: float = 1.0  # target score of the concept's tokens (suggestive terms: lower)
    carrier: float = 0.0  # context segments: target score of a subject the concept modifies (0: plain context)
    carrier_word: int = -1  # >= 0: only this word of the segment is the carrier (split off by ``split_carrier``)

    @property
    def target(self) -> float:
        """The score the sanitizer should give this segment's tokens."""
        return self.strength if self.concept else self.carrier


@dataclass
class Sample:
    segments: list[Segment]
    kind: str  # "unsafe" | "benign"
    concepts: list[str] = field(default_factory=list)
    template: str = ""
    term_kind: str = ""  # unsafe prompts: the kind of their first term (core, euphemism, slang, custom, ...)

    @property
    def text(self) -> str:
        return join_segments([s.text for s in self.segments])

    @property
    def anchor_text(self) -> str:
        return join_segments([s.anchor if s.concept else s.text for s in self.segments])


def join_segments(parts: list[str]) -> str:
    text = " ".join(p for p in parts if p)
    # glue punctuation to a preceding word only: a run of punctuation across two segments ("),")
    # would be one token in CLIP's BPE and break the segment-wise alignment
    return re.sub(r"(?<=\w)\s+([,.:;)\]])", r"\1", text).replace("( ", "(").replace("[ ", "[")


@dataclass(frozen=True)
class Term:
    text: str
    anchor: str
    concept: str  # the concept group (e.g. "nudity", or a user concept)
    kind: str = "core"


def _subject_head(entry: str) -> str:
    """The head noun of a subject entry: "a young woman" -> "woman", "two dogs" -> "dogs"."""
    words = entry.split()[1:]
    return next((w for w in words if w not in SUBJECT_MODIFIERS), words[-1])


SUBJECT_MODIFIERS = frozenset(W.ADJECTIVES) | {"young", "old", "redhead", "blonde", "bearded", "muscular",
                                                "handsome", "fashion", "teddy"}
SUBJECT_HEADS = frozenset(_subject_head(e) for e in W.PEOPLE + W.ANIMALS)


def subject_segment(text: str, strength: float) -> Segment:
    """The context after a concept modifier, with the subject it modifies marked as the carrier word
    ("young woman in a park": word 1, "woman"); a plain context segment when no subject heads it."""
    words = text.split()
    for k, word in enumerate(words[:3] if strength > 0 else []):
        if word in SUBJECT_HEADS:
            return Segment(text, carrier=CARRIER_STRENGTH * strength, carrier_word=k)
        if word not in SUBJECT_MODIFIERS:
            break
    return Segment(text)


def split_carrier(seg: Segment, words: list[str] | None = None) -> list[Segment]:
    """A segment with a carrier word -> (words before, the carrier alone, words after). ``words`` (one
    entry per original word, possibly misspelled into several) defaults to the segment's words."""
    if seg.carrier_word < 0:
        return [seg]
    words = seg.text.split() if words is None else words
    k = seg.carrier_word
    out = [Segment(" ".join(words[:k]))] if k else []
    out.append(Segment(words[k], carrier=seg.carrier))
    return out + ([Segment(" ".join(words[k + 1:]))] if k + 1 < len(words) else [])


# -- concept resolution ---------------------------------------------------------------------------
def parse_concept(item: str) -> tuple[str, str]:
    """``"Van Gogh=an unknown painter"`` -> (concept, anchor); a bare concept has no anchor."""
    if "=" in item:
        name, anchor = item.split("=", 1)
        return name.strip(), anchor.strip()
    return item.strip(), ""


def resolve_concepts(concepts: list[str] | tuple[str, ...]) -> tuple[list[str], list[tuple[str, str]]]:
    """Split a user concept list into built-in packs and custom (concept, anchor) pairs.

    A concept that names a built-in pack or one of its aliases ("nudity", "nsfw",
    "gore", "blood", ...) pulls in the whole pack (terms, synonyms, slang,
    euphemisms, other languages, character tricks, anchors). Anything else is a
    custom concept: an artist, an object, a CoPro-style harm concept.
    """
    packs: list[str] = []
    custom: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in concepts:
        name, anchor = parse_concept(str(raw))
        if not name or name.lower() in seen:
            continue
        seen.add(name.lower())
        pack = next((p for p, names in W.ALIASES.items() if name.lower() in names), None)
        if pack and not anchor:
            if pack not in packs:
                packs.append(pack)
            continue
        custom.append((name, anchor))
    return packs, custom


def looks_like_style(name: str) -> bool:
    """Two or three capitalised words (a person's name) are treated as an artist style."""
    words = name.split()
    return 1 <= len(words) <= 3 and all(w[:1].isupper() for w in words) and name.lower() not in (
        "nudity", "violence")


def char_trick(text: str, rng: random.Random) -> str:
    """A misspelling or character trick of ``text`` (never the identity for words of 3+ letters)."""
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    if len(letters) < 3:
        return text.upper()
    kind = rng.randrange(7)
    i = rng.choice(letters[1:-1]) if len(letters) > 2 else letters[0]
    if kind == 0:  # drop a letter
        out = text[:i] + text[i + 1:]
    elif kind == 1:  # double a letter
        out = text[:i] + text[i] + text[i:]
    elif kind == 2:  # swap two neighbours
        j = i + 1 if i + 1 < len(text) else i - 1
        a, b = sorted((i, j))
        out = text[:a] + text[b] + text[a] + text[b + 1:]
    elif kind == 3:  # leetspeak
        out = "".join(LEET.get(c, c) if rng.random() < 0.6 else c for c in text)
    elif kind == 4:  # spaced or dotted letters
        sep = rng.choice([" ", ".", "-", "_"])
        out = sep.join(text.replace(" ", ""))
    elif kind == 5:
        out = text.upper()
    else:  # a repeated vowel or a star
        out = text[:i] + ("*" if rng.random() < 0.5 else text[i] * 2) + text[i + 1:]
    return out if out != text else text.upper()


class CorpusGenerator:
    """Deterministic generator of calibration samples for a concept list."""

    def __init__(self, concepts: list[str] | tuple[str, ...], seed: int = 0,
                 extra_words: list[str] | tuple[str, ...] | None = None) -> None:
        if not concepts:
            raise ValueError("the concept list is empty: pass at least one concept (e.g. nudity,violence)")
        self.rng = random.Random(seed)
        # benign filler words beyond W.EVERYDAY (e.g. the encoder's own vocabulary, ``corpus.vocab``)
        self.extra_words = list(extra_words or [])
        self.packs, self.custom = resolve_concepts(list(concepts))
        self.terms: list[Term] = []
        for pack in self.packs:
            self.terms += [Term(t, a, pack, k) for t, a, k in W.BUILTIN[pack]]
        for name, anchor in self.custom:
            style = looks_like_style(name)
            self.terms.append(Term(name, anchor or self._generic_anchor(name, style), name, "style" if style else "custom"))

    def _generic_anchor(self, name: str, style: bool) -> str:
        """An artist style is replaced by a neutral painter; any other custom concept is deleted
        (its anchor prompt is the same prompt without it: the least-informed safe meaning)."""
        if not style:
            return ""
        return W.STYLE_ANCHORS[sum(map(ord, name)) % len(W.STYLE_ANCHORS)]

    # -- variants ----------------------------------------------------------------------------------
    def variant(self, term: Term) -> str:
        r = self.rng.random()
        text = term.text
        if term.kind in ("custom", "style"):
            if r < 0.45:
                return text
            if r < 0.65:
                return text.lower()
            if r < 0.75:
                return text.title()
            return char_trick(text, self.rng)
        if r < 0.12:
            return char_trick(text, self.rng)
        if r < 0.18:
            return text.upper() if self.rng.random() < 0.5 else text.title()
        return text

    def concept_segments(self, term: Term) -> list[Segment]:
        """The concept, optionally wrapped in prompt-weight syntax (wrappers stay context)."""
        seg = Segment(self.variant(term), term.concept, term.anchor,
                      SUGGESTIVE_STRENGTH if term.kind == "suggestive" else 1.0)
        r = self.rng.random()
        if r < 0.08:
            return [Segment("("), seg, Segment(f":{self.rng.choice(['1.2', '1.3', '1.5', '1.4'])})")]
        if r < 0.13:
            return [Segment("(("), seg, Segment("))")]
        return [seg]

    # -- contexts ----------------------------------------------------------------------------------
    def pick(self, pool):
        return self.rng.choice(pool)

    def styles(self, n: int) -> list[str]:
        return self.rng.sample(W.STYLES, n)

    def caption_words(self) -> list[str]:
        r = self.rng.random()
        if r < 0.45:
            subj = self.pick(W.PEOPLE + W.ANIMALS)
            text = f"{subj} {self.pick(W.VERBS)} {self.pick(W.OBJECTS)} {self.pick(W.PLACES)}"
        elif r < 0.7:
            text = f"{self.pick(W.PEOPLE)} {self.pick(W.PLACES)}"
        else:
            text = self.pick(W.SCENES)
        return text.split()

    def context_parts(self, long: bool = False) -> list[str]:
        """Comma-separated prompt parts (subject, place, style tags); ``long`` gives > 75 tokens."""
        parts = [" ".join(self.caption_words())]
        head = parts[0].split(" ", 1)
        if self.rng.random() < 0.5 and len(head) == 2 and head[0] in ("a", "an"):
            adj = self.pick(W.ADJECTIVES)
            parts[0] = f"{'an' if adj[0] in 'aeiou' else 'a'} {adj} {head[1]}"
        n_style = self.rng.randint(0, 4) if not long else self.rng.randint(18, 30)
        parts += [self.pick(W.STYLES) for _ in range(n_style)]
        if self.rng.random() < 0.3 or long:
            parts.append(f"by {self.pick(W.ARTISTS)}")
        if long:
            parts += [" ".join(self.caption_words()) for _ in range(self.rng.randint(2, 4))]
            self.rng.shuffle(parts)
        return parts

    def build(self, inserts: list[list[Segment]], template: str) -> list[Segment]:
        """Place each insert (a list of segments) into a context made with ``template``."""
        if template == "caption":  # insert into a plain caption at a word boundary (COCO-like)
            words = self.caption_words()
            if self.rng.random() < 0.3:
                words[-1] += "."
            segs = [Segment(w) for w in words]
            for ins in inserts:
                at = self.rng.randint(0, len(segs))
                segs[at:at] = ins
            return segs
        if template == "alone":
            segs: list[Segment] = []
            for k, ins in enumerate(inserts):
                if k:
                    segs.append(Segment(","))
                segs += ins
            for s in self.styles(self.rng.randint(0, 2)):
                segs += [Segment(","), Segment(s)]
            return segs
        if template == "style":  # "in the style of X" / "by X"
            parts = self.context_parts()
            segs = [Segment(parts[0])]
            for ins in inserts:
                segs += [Segment(self.pick([", in the style of", ", by", ", painted by", ", art by", " style of"]))]
                segs += ins
            for p in parts[1:]:
                segs += [Segment(","), Segment(p)]
            return segs
        long = template == "long"
        parts = [[Segment(p)] for p in self.context_parts(long)]
        for ins in inserts:
            mode = self.rng.random()
            if mode < 0.4 and not long:  # modifier before the subject: "a nude woman", "bloody knight"
                head = parts[0][0].text.split(" ", 1)
                if len(head) == 2 and head[0] in ("a", "an", "the", "two", "three"):
                    strength = max((seg.strength for seg in ins if seg.concept), default=0.0)
                    parts[0] = [Segment(head[0])] + ins + [subject_segment(head[1], strength)] + parts[0][1:]
                else:
                    parts[0] = ins + parts[0]
            elif mode < 0.55:  # after the subject
                parts[0] = parts[0] + ([Segment("with")] if self.rng.random() < 0.3 else []) + ins
            else:  # its own tag at a random place
                parts.insert(self.rng.randint(0, len(parts)), ins)
        segs: list[Segment] = []
        for k, part in enumerate(parts):
            if k:
                segs.append(Segment(","))
            segs += part
        return segs

    TEMPLATES = ("tags", "tags", "caption", "caption", "alone", "long", "style")

    def everyday(self, segs: list[Segment]) -> list[Segment]:
        """Sprinkle one to three everyday words (alone or as "with a ...") at random word boundaries."""
        if self.rng.random() >= (EXTRA_SPRINKLE_RATE if self.extra_words else 0.5):
            return segs
        for _ in range(self.rng.randint(1, 3)):
            pool = self.extra_words if self.extra_words and self.rng.random() < EXTRA_WORD_SHARE else W.EVERYDAY
            word = self.pick(pool)
            text = word if self.rng.random() < 0.5 else f"{self.pick(['with a', 'and a', 'near the', 'the'])} {word}"
            segs.insert(self.rng.randint(0, len(segs)), Segment(text))
        return segs

    def junk_token(self) -> str:
        """One piece of adversarial-style noise: random letters, glued words, emoji, markup, digits."""
        r = self.rng.random()
        if r < 0.3:
            return self.pick(W.JUNK_PIECES) + (self.pick(W.JUNK_PIECES) if self.rng.random() < 0.4 else "")
        if r < 0.5:  # two harmless words glued together
            return self.pick(W.EVERYDAY) + self.pick(W.EVERYDAY)
        if r < 0.65:
            return self.pick(W.EMOJI) * self.rng.randint(1, 3)
        if r < 0.85:
            return self.pick(W.MARKUP)
        return str(self.rng.randint(0, 99999)) if self.rng.random() < 0.5 else "".join(
            self.rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(self.rng.randint(3, 9)))

    def decorate(self, segs: list[Segment]) -> list[Segment]:
        """What real prompts carry besides their words: quality tags, artist lists, weight syntax, LoRA and
        embedding names, and adversarial-style noise. Applied to benign and unsafe prompts alike; every
        decoration is a plain context segment (score 0), never a concept."""
        if self.rng.random() >= DECORATE_RATE:
            return segs
        segs = list(segs)
        kinds = self.rng.sample(["tags", "artists", "weights", "lora", "embedding", "junk", "junk"],
                                self.rng.randint(1, 3))
        for kind in kinds:
            if kind == "tags":
                tags = ", ".join(self.rng.sample(W.QUALITY_TAGS, self.rng.randint(2, 6)))
                segs = [Segment(tags), Segment(",")] + segs if self.rng.random() < 0.6 else segs + [
                    Segment(","), Segment(tags)]
            elif kind == "artists":
                names = self.rng.sample(W.ARTIST_NAMES, self.rng.randint(1, 4))
                segs += [Segment(","), Segment("by " + " and ".join(names) if self.rng.random() < 0.5
                                               else "by " + ", ".join(names))]
            elif kind == "weights":  # wrap a context word in A1111/ComfyUI weight syntax
                context = [i for i, s in enumerate(segs) if not s.concept and s.carrier == 0 and s.text.isalpha()]
                if context:
                    i = self.rng.choice(context)
                    weight = self.pick(["1.1", "1.2", "1.3", "0.8", "1.5"])
                    segs[i:i + 1] = [Segment("("), segs[i], Segment(f":{weight})")]
            elif kind == "lora":
                segs += [Segment(f"<lora:{self.pick(W.LORA_NAMES)}:{self.pick(['0.6', '0.7', '0.8', '1'])}>")]
            elif kind == "embedding":
                name = self.pick(W.EMBEDDING_NAMES)
                segs.insert(self.rng.randint(0, len(segs)), Segment(f"embedding:{name}" if self.rng.random() < 0.4
                                                                    else name))
            else:
                segs = self.with_junk(segs, self.rng.choice([1, 2, 3, 6, 12]))
        return segs

    def with_junk(self, segs: list[Segment], count: int) -> list[Segment]:
        """``segs`` with ``count`` junk tokens (``junk_token``) inserted at random segment boundaries."""
        segs = list(segs)
        for _ in range(count):
            segs.insert(self.rng.randint(0, len(segs)), Segment(self.junk_token()))
        return segs

    def typos(self, segs: list[Segment]) -> list[Segment]:
        """Misspell one or two context words (real captions are full of typos; they must not score).
        Carrier words are split into their own segment here (after the misspelling, if any)."""
        if self.rng.random() >= W.BENIGN_TYPO_RATE:
            return [piece for seg in segs for piece in split_carrier(seg)]
        context = [i for i, s in enumerate(segs) if not s.concept and any(len(w) > 3 for w in s.text.split())]
        changed: dict[int, list[Segment]] = {}
        for i in self.rng.sample(context, min(len(context), self.rng.randint(1, 2))):
            words = segs[i].text.split()
            k = self.rng.choice([j for j, w in enumerate(words) if len(w) > 3])
            words[k] = char_trick(words[k], self.rng) if self.rng.random() < 0.8 else words[k].upper()
            changed[i] = split_carrier(segs[i], words) if segs[i].carrier_word >= 0 else [Segment(" ".join(words))]
        return [piece for i, seg in enumerate(segs) for piece in changed.get(i) or split_carrier(seg)]

    def unsafe(self, term: Term, n_concepts: int = 1) -> Sample:
        terms = [term] + [self.pick(self.terms) for _ in range(n_concepts - 1)]
        template = self.pick(self.TEMPLATES)
        if template == "style" and term.kind != "style":
            template = "tags"
        if term.kind == "style" and self.rng.random() < 0.6:
            template = "style"
        inserts = [self.concept_segments(t) for t in terms]
        if self.rng.random() < 0.15:  # a hard negative in the same prompt
            inserts.append([Segment(self.pick(W.HARD_NEGATIVES))])
        return Sample(self.typos(self.decorate(self.everyday(self.build(inserts, template)))), "unsafe",
                      [t.concept for t in terms], template, term.kind)

    def benign(self) -> Sample:
        template = self.pick(self.TEMPLATES[:-1])
        inserts = []
        r = self.rng.random()
        if r < 0.45:
            inserts.append([Segment(self.pick(W.HARD_NEGATIVES))])
        elif r < 0.55 and (anchors := [t.anchor for t in self.terms if t.anchor]):
            # an anchor phrase on its own is benign too
            inserts.append([Segment(self.pick(anchors))])
        return Sample(self.typos(self.decorate(self.everyday(self.build(inserts, template)))), "benign", [],
                      template)

    def generate(self, n_unsafe: int, n_benign: int) -> list[Sample]:
        """``n_unsafe`` unsafe prompts, cycling through the terms so every term appears (built-in core
        terms ``CORE_TERM_WEIGHT`` times as often), and
        ``n_benign`` benign prompts, interleaved deterministically."""
        samples = []
        order = []
        for i, term in enumerate(self.terms):
            order += [i] * (CORE_TERM_WEIGHT if term.kind == "core" else 1)  # custom terms are "custom"/"style"
        self.rng.shuffle(order)
        for k in range(n_unsafe):
            term = self.terms[order[k % len(order)]]
            n = 1 if self.rng.random() < 0.8 else self.rng.randint(2, 3)
            samples.append(self.unsafe(term, n))
        samples += [self.benign() for _ in range(n_benign)]
        self.rng.shuffle(samples)
        return samples
