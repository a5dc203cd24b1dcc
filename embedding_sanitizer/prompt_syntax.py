"""Prompt weight syntax as A1111/Forge and ComfyUI read it: plain text plus a weight per stretch.

The hosts do not give the text encoder ``"a (nude:1.4) woman"``: they encode
``"a nude woman"`` and scale the rows of ``nude`` by 1.4. :func:`parse_prompt`
gives that plain text and the weights, so that the demo shows one chip ``nude``
(weight 1.4) instead of ``( : 1 . 4 )``.

``a1111`` (also Forge), the semantics of A1111's ``parse_prompt_attention``:

* ``(text)`` multiplies by 1.1, ``[text]`` by 1/1.1, nested brackets multiply;
* ``(text:1.4)`` multiplies by 1.4 (also inside other brackets: ``((a:1.2))`` is 1.32);
  whitespace is allowed around the number; a number that is not one (``(a:1.2.3)``)
  is an error, as it is in A1111;
* ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are literal characters; any other backslash is dropped;
* brackets left open at the end apply their multiplier to the rest of the prompt;
  a closing bracket without an opener is literal text; ``:`` not followed by
  ``number)`` is literal;
* ``BREAK`` (a whole word, outside brackets) ends a 75-token chunk; inside brackets it is
  the word ``BREAK`` with that weight (A1111 tests the weight);
* extra networks (``<lora:name:0.8>``, ``<hypernet:...>``) are taken out of the text before
  parsing, as A1111 does; they are listed in ``extra_networks``.

``comfyui``, the semantics of ComfyUI's ``token_weights``:

* ``(text)`` multiplies by 1.1; ``(text:1.4)`` sets the weight to 1.4 whatever the outer
  brackets (``((a:1.2))`` is 1.2); a suffix after the last ``:`` that is not a number
  leaves the colon in the text;
* ``\\(`` and ``\\)`` are literal parentheses; square brackets and ``BREAK`` are plain text,
  and so is ``<lora:...>`` (ComfyUI loads LoRAs with nodes);
* an unclosed ``(`` is kept as text.

``none``: the prompt as written, weight 1 everywhere.

Prompt editing and alternation (``[a:b:10]``, ``[a|b]``) are A1111 step schedules, not
weights; they are left as written and noted.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

SYNTAXES = ("a1111", "comfyui", "none")
ROUND, SQUARE = 1.1, 1 / 1.1
_WEIGHT_CLOSE = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_SCHEDULE = re.compile(r"\[[^\[\]]*(:[^\[\]]*:|\|)[^\[\]]*\]")
_A1111_SPECIAL = "\\()[]:"


class PromptSyntaxError(ValueError):
    """The prompt cannot be parsed as the host would (the host would refuse it too)."""


@dataclass(frozen=True)
class Span:
    text: str
    weight: float


@dataclass
class ParsedPrompt:
    """``text`` is what the text encoder reads; ``spans`` cover it in order (``"".join``)."""
    syntax: str
    source: str
    spans: list[Span]
    breaks: list[int] = field(default_factory=list)  # character offsets in ``text`` where A1111 starts a chunk
    extra_networks: list[str] = field(default_factory=list)  # e.g. "<lora:name:0.8>", taken out (A1111)
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.spans)

    @property
    def weighted(self) -> bool:
        return any(s.weight != 1.0 for s in self.spans if s.text.strip())

    def char_weights(self) -> list[float]:
        return [s.weight for s in self.spans for _ in s.text]

    def word_weights(self, words: list[str]) -> list[float]:
        """The weight of each displayed word (tokenizer words, in order) of :attr:`text`.

        Words are found in the text in order, ignoring case and accents (as uncased
        tokenizers do); a word over stretches of different weights takes the one
        farthest from 1. A word not found takes the weight where the search stands.
        """
        text = self.text
        weights = self.char_weights()
        folded, origin = _fold_with_map(text)
        out, cursor = [], 0
        for word in words:
            key, _ = _fold_with_map(word)
            at = folded.find(key, cursor) if key else -1
            if at < 0:
                here = origin[cursor] if cursor < len(origin) else len(text) - 1
                out.append(weights[here] if 0 <= here < len(weights) else 1.0)
                continue
            chars = {origin[j] for j in range(at, at + len(key))}
            out.append(max((weights[c] for c in chars), key=lambda w: abs(w - 1.0)))
            cursor = at + len(key)
        return out


    def annotate(self, records: list) -> list:
        """``heatmap.word_records`` output with each word's ``emphasis`` set from :meth:`word_weights`."""
        weights = self.word_weights([r.word for r in records])
        return [r._replace(emphasis=w) for r, w in zip(records, weights)]


def _fold_with_map(text: str) -> tuple[str, list[int]]:
    """Case- and accent-folded ``text`` and, for each folded character, its index in ``text``."""
    chars, origin = [], []
    for i, ch in enumerate(text):
        for f in unicodedata.normalize("NFKD", ch).casefold():
            if not unicodedata.combining(f):
                chars.append(f)
                origin.append(i)
    return "".join(chars), origin


def parse_prompt(prompt: str, syntax: str = "a1111") -> ParsedPrompt:
    """Plain text and weights of ``prompt`` read as ``syntax`` (``a1111``, ``comfyui`` or ``none``)."""
    if syntax not in SYNTAXES:
        raise ValueError(f"unknown prompt syntax {syntax!r}; choose one of {', '.join(SYNTAXES)}")
    if syntax == "none":
        return ParsedPrompt(syntax, prompt, [Span(prompt, 1.0)])
    parsed = _parse_a1111(prompt) if syntax == "a1111" else _parse_comfyui(prompt)
    if syntax == "a1111" and _SCHEDULE.search(prompt):
        parsed.notes.append("prompt editing / alternation ([a:b:N], [a|b]) is an A1111 step schedule; "
                            "it is shown as written, not expanded")
    return parsed


# --------------------------------------------------------------------------- A1111

def _parse_a1111(prompt: str) -> ParsedPrompt:
    networks = [m.group(0) for m in _EXTRA_NETWORK.finditer(prompt)]
    text = _EXTRA_NETWORK.sub("", prompt)
    items: list[list] = []  # [text, weight, is_break]
    rounds: list[int] = []
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for item in items[start:]:
            item[1] *= factor

    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1] if i + 1 < n else ""
            if nxt and nxt in "()[]\\":
                items.append([nxt, 1.0, False])
                i += 2
            else:  # a backslash before anything else is dropped
                i += 1
        elif ch == "(":
            rounds.append(len(items))
            i += 1
        elif ch == "[":
            squares.append(len(items))
            i += 1
        elif ch == ":":
            m = _WEIGHT_CLOSE.match(text, i)
            if m and rounds:
                try:
                    factor = float(m.group(1))
                except ValueError:
                    raise PromptSyntaxError(f"prompt weight {m.group(0)!r} is not a number "
                                            "(A1111 refuses this prompt too)") from None
                scale(rounds.pop(), factor)
                i = m.end()
            elif m:  # "word:1.2)" with no "(" open: text
                items.append([m.group(0), 1.0, False])
                i = m.end()
            else:
                items.append([":", 1.0, False])
                i += 1
        elif ch in ")]":  # closes the innermost bracket of its kind; unmatched, it is text
            opened, factor = (rounds, ROUND) if ch == ")" else (squares, SQUARE)
            if opened:
                scale(opened.pop(), factor)
            else:
                items.append([ch, 1.0, False])
            i += 1
        else:
            j = i
            while j < n and text[j] not in _A1111_SPECIAL:
                j += 1
            for k, part in enumerate(_BREAK.split(text[i:j])):
                if k:
                    items.append(["BREAK", -1.0, True])
                items.append([part, 1.0, False])
            i = j
    for start in rounds:
        scale(start, ROUND)
    for start in squares:
        scale(start, SQUARE)

    # A BREAK counts only with its weight untouched (outside brackets); else it is the word itself.
    merged: list[list] = []
    for t, w, is_break in items:
        if is_break and w != -1.0:
            t, is_break = " BREAK ", False  # the word, with the brackets' (negative) weight, as A1111 encodes it
        if merged and not is_break and not merged[-1][2] and merged[-1][1] == w:
            merged[-1][0] += t
        else:
            merged.append([t, w, is_break])
    spans: list[Span] = []
    breaks: list[int] = []
    pos = 0
    for t, w, is_break in merged:
        if is_break:
            breaks.append(pos)
            t, w = " ", 1.0  # the chunk boundary: the demo encodes one text
        if t:
            spans.append(Span(t, w))
            pos += len(t)
    parsed = ParsedPrompt("a1111", prompt, spans or [Span("", 1.0)], breaks, networks)
    if networks:
        parsed.notes.append(f"extra networks taken out of the text as A1111 does: {', '.join(networks)}")
    if breaks:
        parsed.notes.append(f"BREAK: A1111 starts a new 75-token chunk there ({len(breaks)} time(s)); "
                            "the heatmap shows one text")
    return parsed


# --------------------------------------------------------------------------- ComfyUI

_ESC_CLOSE, _ESC_OPEN = "\0\1", "\0\2"


def _comfy_groups(text: str) -> list[str]:
    """Top-level pieces: text between groups, and each outermost ``(...)`` group."""
    groups, cur, depth = [], "", 0
    for ch in text:
        if ch == "(":
            if depth == 0 and cur:
                groups.append(cur)
                cur = ""
            cur += ch
            depth += 1
        elif ch == ")":
            depth -= 1
            cur += ch
            if depth == 0:
                groups.append(cur)
                cur = ""
        else:
            cur += ch
    if cur:
        groups.append(cur)
    return groups


def _comfy_weights(text: str, weight: float) -> list[Span]:
    out: list[Span] = []
    for group in _comfy_groups(text):
        if len(group) >= 2 and group[0] == "(" and group[-1] == ")":
            inner, inner_weight = group[1:-1], weight * ROUND
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass
            out.extend(_comfy_weights(inner, inner_weight))
        else:
            out.append(Span(group, weight))
    return out


def _parse_comfyui(prompt: str) -> ParsedPrompt:
    escaped = prompt.replace("\\)", _ESC_CLOSE).replace("\\(", _ESC_OPEN)
    spans = []
    for span in _comfy_weights(escaped, 1.0):
        text = span.text.replace(_ESC_CLOSE, ")").replace(_ESC_OPEN, "(")
        if not text:
            continue
        if spans and spans[-1].weight == span.weight:
            spans[-1] = Span(spans[-1].text + text, span.weight)
        else:
            spans.append(Span(text, span.weight))
    return ParsedPrompt("comfyui", prompt, spans or [Span("", 1.0)])
