"""Tokenizer pieces back into words, each with its score and its edit weight.

:func:`group_words` gives ``(word, score, positions)`` triples (the long-standing
form); :func:`word_records` gives :class:`WordRecord` tuples that also carry the
word's edit weight at the current intensity (0 when none of its rows was edited)
and whether the sanitizer flagged it. The renderers accept either form, plain
``(word, score)`` pairs, or ``{"word":, "score":, "edit":}`` dicts (:func:`normalize`).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Iterable, NamedTuple, Sequence

#: Pieces that are not prompt text (dropped by :func:`group_words`).
SPECIAL_PIECES = frozenset({
    "<bos>", "<eos>", "<pad>", "<unk>", "<s>", "</s>", "<mask>",
    "<|startoftext|>", "<|endoftext|>", "<start_of_text>", "<end_of_text>",
    "[CLS]", "[SEP]", "[PAD]", "[MASK]", "[BOS]", "[EOS]",
})

#: Scores at or above this are printed next to the word (and coloured); lower ones are shown grey.
SCORE_LABEL_THRESHOLD = 0.05


class WordRecord(NamedTuple):
    """One word as shown: its text, score (max of its pieces), piece positions, edit weight, flag."""
    word: str
    score: float
    positions: list
    edit: float = 0.0  # max edit weight of the word's rows at the current intensity; 0 = not edited
    flagged: bool = False
    emphasis: float = 1.0  # the prompt's weight syntax on the word, e.g. 1.4 for "(nude:1.4)" (prompt_syntax)


class Word(NamedTuple):
    """What the renderers draw: text, score, edit weight (0 = not edited), prompt weight (1 = none)."""
    text: str
    score: float
    edit: float = 0.0
    emphasis: float = 1.0


def as_list(x: Any, what: str) -> list:
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{what} must be a sequence, not a single {type(x).__name__}")
    if hasattr(x, "tolist") and not isinstance(x, list):  # numpy array / torch tensor
        x = x.tolist()
    try:
        return list(x)
    except TypeError:
        raise TypeError(f"{what} must be a sequence, got {type(x).__name__}") from None


def to_float(v: Any, i: int, what: str = "scores") -> float:
    if hasattr(v, "item") and not isinstance(v, (int, float)):  # 0-d array / tensor element
        v = v.item()
    if isinstance(v, (list, tuple)):
        raise ValueError(f"{what} must be a flat sequence of numbers; element {i} is a {type(v).__name__} "
                         "(squeeze the batch dimension first)")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{what}[{i}] is not a number: {v!r}") from None


def _nanmax(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else float("nan")


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of the GPT-2/CLIP ``bytes_to_unicode`` table (printable ASCII maps to itself)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _decode_bpe_bytes(text: str) -> str:
    """Undo CLIP's byte-level encoding (``"cafÃ©"`` -> ``"café"``); leave clean text as it is."""
    if text.isascii():
        return text
    dec = _byte_decoder()
    try:
        return bytes(dec[ch] for ch in text).decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return text


def group_words(
    pieces: Sequence[str],
    scores: Sequence[float],
    *,
    word_end_marker: str = "</w>",
    continuation_prefix: str = "##",
    word_start_prefix: str = "\u2581",
) -> list[tuple[str, float, list[int]]]:
    """Join tokenizer pieces back into words.

    Returns ``[(word, score, positions), ...]`` where ``score`` is the max of the
    word's piece scores (NaN scores are ignored unless all are NaN) and
    ``positions`` are the indices of its pieces in ``pieces``.

    The piece style is detected from the pieces themselves:

    * CLIP BPE: ``word_end_marker`` closes a word (``["nak", "ed</w>"]`` -> ``"naked"``);
      byte-level characters are decoded back to UTF-8 where possible;
    * BERT WordPiece: ``continuation_prefix`` continues the previous word
      (``["na", "##ked"]`` -> ``"naked"``);
    * SentencePiece (T5): ``word_start_prefix`` (``"▁"``) starts a new word;
    * otherwise every piece is already a word.

    Special pieces (``<bos>``, ``<|endoftext|>``, ``[CLS]``, ``[PAD]``, ...) are
    dropped and end any open word. Raises ``ValueError`` if the lengths differ.
    """
    pieces = as_list(pieces, "pieces")
    scores = as_list(scores, "scores")
    if len(pieces) != len(scores):
        raise ValueError(f"group_words: got {len(pieces)} pieces but {len(scores)} scores; "
                         "they must be the same length (one score per token piece)")
    pieces = [p if isinstance(p, str) else str(p) for p in pieces]
    vals = [to_float(s, i) for i, s in enumerate(scores)]

    def real(p: str) -> bool:
        return p not in SPECIAL_PIECES

    clip = bool(word_end_marker) and any(p.endswith(word_end_marker) and real(p) for p in pieces)
    wordpiece = (not clip and bool(continuation_prefix)
                 and any(p.startswith(continuation_prefix) and len(p) > len(continuation_prefix) for p in pieces))
    spm = (not clip and not wordpiece and bool(word_start_prefix)
           and any(p.startswith(word_start_prefix) for p in pieces))

    words: list[list] = []  # [text, [scores], [positions]]
    open_word = False  # may the next piece extend words[-1]?
    for i, (p, s) in enumerate(zip(pieces, vals)):
        if not real(p):
            open_word = False
            continue
        extend = False
        if clip:
            ends = p.endswith(word_end_marker)
            text = p[: -len(word_end_marker)] if ends else p
            extend = open_word
            next_open = not ends
        elif wordpiece:
            cont = p.startswith(continuation_prefix) and len(p) > len(continuation_prefix)
            text = p[len(continuation_prefix):] if cont else p
            extend = cont and open_word
            next_open = True
        elif spm:
            start = p.startswith(word_start_prefix)
            text = p[len(word_start_prefix):] if start else p
            extend = open_word and not start
            next_open = True
        else:
            text, next_open = p, False
        if extend and words:
            words[-1][0] += text
            words[-1][1].append(s)
            words[-1][2].append(i)
        else:
            words.append([text, [s], [i]])
        open_word = next_open

    out = []
    for text, ss, pos in words:
        if clip:
            text = _decode_bpe_bytes(text)
        text = text.strip()
        if text:
            out.append((text, _nanmax(ss), pos))
    return out


def word_records(pieces: Sequence[str], scores: Sequence[float], edits: Sequence[float] | None = None,
                 flagged: Sequence[bool] | None = None, **grouping) -> list[WordRecord]:
    """:func:`group_words` with each word's edit weight and flag.

    ``edits`` is the sanitizer's per-row edit weight (``SanitizeResult.weights[b]``, one per
    piece; 0 = the row is left as it is), ``flagged`` its per-row flags. A word's edit weight
    is the largest of its rows' (0 when no row of it was edited, so intensity 0 gives 0 for
    every word); it is flagged when any of its rows is. Both default to "nothing edited".
    """
    n = len(as_list(pieces, "pieces"))
    edit_vals = [0.0] * n if edits is None else [to_float(v, i, "edits") for i, v in enumerate(as_list(edits, "edits"))]
    flag_vals = [False] * n if flagged is None else [bool(f) for f in as_list(flagged, "flagged")]
    for name, values in (("edits", edit_vals), ("flagged", flag_vals)):
        if len(values) != n:
            raise ValueError(f"word_records: got {n} pieces but {len(values)} {name}; one per token piece")
    out = []
    for text, score, positions in group_words(pieces, scores, **grouping):
        edit = max((edit_vals[p] for p in positions if not math.isnan(edit_vals[p])), default=0.0)
        out.append(WordRecord(text, score, positions, max(0.0, edit), any(flag_vals[p] for p in positions)))
    return out


def records_json(records: Sequence[WordRecord], digits: int = 4) -> list[dict]:
    """JSON-safe dicts of :func:`word_records` output (NaN scores become None) for reports and widgets."""
    def num(v: float):
        return None if math.isnan(v) else round(float(v), digits)

    return [{"word": r.word, "score": num(r.score), "edit": num(r.edit), "flagged": bool(r.flagged),
             "emphasis": num(r.emphasis), "positions": list(r.positions)} for r in records]


def normalize(words: Any) -> list[Word]:
    """Accept :func:`word_records` / :func:`group_words` output, ``(word, score)`` pairs or dicts.

    A dict gives ``word`` (or ``text``), ``score`` and optionally ``edit`` (or ``weight``, as the
    A1111 glue names it) and ``emphasis``. Tuples other than :class:`WordRecord` carry no edit
    weight (0) and no prompt weight (1).
    """
    out = []
    for i, w in enumerate(as_list(words, "words")):
        edit: Any = 0.0
        emphasis: Any = 1.0
        if isinstance(w, dict):
            text, score = w.get("word", w.get("text")), w.get("score")
            edit = w.get("edit", w.get("weight", 0.0))
            emphasis = w.get("emphasis", 1.0)
        elif isinstance(w, WordRecord):
            text, score, edit, emphasis = w.word, w.score, w.edit, w.emphasis
        else:
            try:
                text, score = w[0], w[1]
            except (TypeError, IndexError, KeyError):
                raise ValueError(f"words[{i}] must be (word, score[, positions]), got {w!r}") from None
        edit_f = to_float(edit if edit is not None else 0.0, i, "edit")
        emph = to_float(emphasis if emphasis is not None else 1.0, i, "emphasis")
        out.append(Word(str(text), to_float(score, i), 0.0 if math.isnan(edit_f) else max(0.0, edit_f),
                        1.0 if math.isnan(emph) else emph))
    return out


def fmt_emphasis(emphasis: float) -> str:
    """``"×1.4"`` for a prompt weight other than 1; ``""`` for 1."""
    return "" if emphasis == 1.0 else f"\u00d7{emphasis:.3g}"


def fmt_score(score: float) -> str:
    return f"{score:.2f}"
