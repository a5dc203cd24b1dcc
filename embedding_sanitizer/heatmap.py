"""Per-word harm heatmaps: PNG (README / ComfyUI IMAGE), ANSI terminal, HTML.

The sanitizer scores every prompt token (BPE piece). This module turns the
pieces back into words (:func:`group_words`) and renders the word scores in
three forms:

* :func:`render_png` -- a clean PIL image of rounded word "chips" coloured by
  score, wrapped like text, with an optional title line and a colour legend;
* :func:`render_terminal` -- ANSI 24-bit colours, or plain ``word[0.97]`` text
  for logs (see :func:`should_color` for the ``NO_COLOR`` convention);
* :func:`heatmap_html` -- small self-contained ``<span>`` markup for web UIs.

Only Pillow is needed (for the PNG); torch and numpy are not imported. Scores
may be lists, numpy arrays or torch tensors: anything with ``.tolist()``.
"""
from __future__ import annotations

import functools
import html
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

__all__ = [
    "SPECIAL_PIECES", "group_words", "score_color", "text_color", "render_png", "layout_words",
    "render_terminal", "should_color", "heatmap_html",
]

#: Pieces that are not prompt text (dropped by :func:`group_words`).
SPECIAL_PIECES = frozenset({
    "<bos>", "<eos>", "<pad>", "<unk>", "<s>", "</s>", "<mask>",
    "<|startoftext|>", "<|endoftext|>", "<start_of_text>", "<end_of_text>",
    "[CLS]", "[SEP]", "[PAD]", "[MASK]", "[BOS]", "[EOS]",
})

#: Scores at or above this are printed next to the word.
SCORE_LABEL_THRESHOLD = 0.05


# --------------------------------------------------------------------------- grouping

def _as_list(x: Any, what: str) -> list:
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{what} must be a sequence, not a single {type(x).__name__}")
    if hasattr(x, "tolist") and not isinstance(x, list):  # numpy array / torch tensor
        x = x.tolist()
    try:
        return list(x)
    except TypeError:
        raise TypeError(f"{what} must be a sequence, got {type(x).__name__}") from None


def _to_float(v: Any, i: int) -> float:
    if hasattr(v, "item") and not isinstance(v, (int, float)):  # 0-d array / tensor element
        v = v.item()
    if isinstance(v, (list, tuple)):
        raise ValueError(f"scores must be a flat sequence of numbers; element {i} is a {type(v).__name__} "
                         "(squeeze the batch dimension first)")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"scores[{i}] is not a number: {v!r}") from None


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
    pieces = _as_list(pieces, "pieces")
    scores = _as_list(scores, "scores")
    if len(pieces) != len(scores):
        raise ValueError(f"group_words: got {len(pieces)} pieces but {len(scores)} scores; "
                         "they must be the same length (one score per token piece)")
    pieces = [p if isinstance(p, str) else str(p) for p in pieces]
    vals = [_to_float(s, i) for i, s in enumerate(scores)]

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


def _normalize(words: Any) -> list[tuple[str, float]]:
    """Accept group_words output, ``(word, score)`` pairs or ``{"word":, "score":}`` dicts."""
    out = []
    for i, w in enumerate(_as_list(words, "words")):
        if isinstance(w, dict):
            text, score = w.get("word", w.get("text")), w.get("score")
        else:
            try:
                text, score = w[0], w[1]
            except (TypeError, IndexError, KeyError):
                raise ValueError(f"words[{i}] must be (word, score[, positions]), got {w!r}") from None
        out.append((str(text), _to_float(score, i)))
    return out


# --------------------------------------------------------------------------- colour

# Colour stops: neutral light grey -> pale yellow -> amber -> orange -> red.
# Lightness falls and "redness" (R - (G+B)/2) rises monotonically along the ramp.
_STOPS = (
    (0.00, (236, 236, 236)),
    (0.25, (255, 232, 150)),
    (0.50, (253, 184, 76)),
    (0.75, (241, 112, 46)),
    (1.00, (211, 36, 40)),
)
_NAN_GREY = (200, 200, 200)


def score_color(score: float) -> tuple[int, int, int]:
    """RGB colour for a harm score: 0 light grey, through yellow and orange, to 1 red.

    Scores are clamped to [0, 1]; NaN (or a non-number) gives a mid grey.
    """
    try:
        s = float(score)
    except (TypeError, ValueError):
        return _NAN_GREY
    if math.isnan(s):
        return _NAN_GREY
    s = min(1.0, max(0.0, s))
    for (t0, c0), (t1, c1) in zip(_STOPS, _STOPS[1:]):
        if s <= t1:
            f = (s - t0) / (t1 - t0)
            return tuple(int(round(a + (b - a) * f)) for a, b in zip(c0, c1))  # type: ignore[return-value]
    return _STOPS[-1][1]


def _luminance(rgb: Sequence[int]) -> float:
    def lin(c: float) -> float:
        c /= 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (lin(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


_DARK = (30, 30, 34)
_LIGHT = (255, 255, 255)


def text_color(background: Sequence[int]) -> tuple[int, int, int]:
    """White text where it reaches WCAG 3:1 contrast on ``background`` (reds), else dark text."""
    lb = _luminance(background)
    c_dark = (lb + 0.05) / (_luminance(_DARK) + 0.05)
    c_light = 1.05 / (lb + 0.05)
    return _LIGHT if c_light >= 3.0 or c_light > c_dark else _DARK


def _hex(rgb: Sequence[int]) -> str:
    return "#%02x%02x%02x" % tuple(rgb[:3])


def _mix(a: Sequence[int], b: Sequence[int], f: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * f)) for x, y in zip(a, b))  # type: ignore[return-value]


def _fmt(score: float) -> str:
    return f"{score:.2f}"


# --------------------------------------------------------------------------- PNG

@functools.lru_cache(maxsize=32)
def _font(size: int):
    """A scalable font of ``size`` px; falls back to Pillow's small bitmap font (old Pillow)."""
    from PIL import ImageFont
    try:  # Pillow >= 10.1: bundled scalable font
        return ImageFont.load_default(size=size), True
    except Exception:  # TypeError on old Pillow, OSError without FreeType
        pass
    for name in ("DejaVuSans.ttf", "Arial.ttf", "arial.ttf", "Helvetica.ttc"):
        try:
            return ImageFont.truetype(name, size), True
        except Exception:
            continue
    return ImageFont.load_default(), False


_FALLBACK_FONTS = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "arial.ttf", "Arial.ttf", "Helvetica.ttc",
                   "LiberationSans-Regular.ttf")


@functools.lru_cache(maxsize=32)
def _fallback_font(size: int):
    """A system font with wider Unicode coverage than Pillow's bundled one (None if none found)."""
    from PIL import ImageFont
    for name in _FALLBACK_FONTS:
        try:
            return ImageFont.truetype(name, size)
        except Exception:
            continue
    return None


def _glyph_sig(font, ch: str) -> tuple:
    from PIL import Image, ImageDraw
    l, t, r, b = _text_bbox(font, ch)
    w, h = max(1, r - l), max(1, b - t)
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((-l, -t), ch, font=font, fill=255)
    return (w, h, im.tobytes())


_GLYPHS: dict = {}


def _has_glyphs(font, text: str) -> bool:
    """False if ``font`` would draw any character of ``text`` as its 'missing glyph' box."""
    key = id(font)
    if key not in _GLYPHS:
        _GLYPHS[key] = (font, _glyph_sig(font, "\U0010fffd"), {})  # keep font alive: id stays unique
    _, notdef, seen = _GLYPHS[key]
    for ch in set(text):
        if ch.isspace() or ch.isascii():
            continue
        if ch not in seen:
            seen[ch] = _glyph_sig(font, ch) != notdef
        if not seen[ch]:
            return False
    return True


def _font_for(font, size: int, text: str, scalable: bool):
    """``font``, or a fallback system font when ``font`` lacks glyphs of ``text`` (e.g. é, ß, 中)."""
    if not scalable or text.isascii() or _has_glyphs(font, text):
        return font
    fb = _fallback_font(max(6, round(size * 0.92)))
    if fb is not None and _has_glyphs(fb, text):
        return fb
    return font


def _text_bbox(font, text: str) -> tuple[int, int, int, int]:
    if hasattr(font, "getbbox"):
        return tuple(int(v) for v in font.getbbox(text))  # type: ignore[return-value]
    w, h = font.getsize(text)  # Pillow < 9.2
    return 0, 0, w, h


def _text_w(font, text: str) -> int:
    l, _, r, _ = _text_bbox(font, text)
    return max(0, r - l) if text else 0


def _text_extent(font) -> tuple[int, int]:
    """(top, bottom) of typical text relative to the draw origin, for vertical centring."""
    _, t, _, b = _text_bbox(font, "Hgy")
    return t, b


def _fit(font, text: str, max_w: int) -> str:
    """``text`` cut with an ellipsis so that it is at most ``max_w`` wide."""
    if _text_w(font, text) <= max_w:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _text_w(font, text[:mid] + "\u2026") <= max_w:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "\u2026"


def _wrap_text(font, text: str, max_w: int) -> list[str]:
    lines: list[str] = []
    cur = ""
    for word in text.split():
        cand = f"{cur} {word}" if cur else word
        if cur and _text_w(font, cand) > max_w:
            lines.append(cur)
            cur = word
        else:
            cur = cand
    if cur:
        lines.append(cur)
    return [_fit(font, ln, max_w) for ln in lines]


@dataclass
class WordBox:
    """One word chip in final image pixels: ``(x0, y0, x1, y1)`` and its wrapped line."""
    word: str
    score: float
    box: tuple[int, int, int, int]
    line: int
    label: str | None  # the score text shown in the chip, if any
    shown: str  # the word as drawn (may be cut with an ellipsis)


@dataclass
class Layout:
    width: int
    height: int
    boxes: list[WordBox] = field(default_factory=list)
    lines: int = 0


# Geometry in final-image pixels (multiplied by the supersampling factor when drawing).
_PAD = 22
_GAP_X = 7
_GAP_Y = 9
_BOX_PX = 10
_BOX_PY = 6
_RADIUS = 8
_WORD_SIZE = 20
_SCORE_SIZE = 12
_TITLE_SIZE = 16
_LEGEND_SIZE = 12
_BG = (255, 255, 255)
_INK = (38, 38, 42)
_MUTED = (120, 120, 128)


class _Plan:
    """Layout computed at supersampled scale ``k``; shared by layout_words and render_png."""

    def __init__(self, words, *, title, legend, width, show_scores, score_threshold, font_size):
        word_font, scalable = _font(font_size * 2)
        k = 2 if scalable else 1  # supersample only when fonts scale
        if not scalable:
            word_font = _font(font_size)[0]
        self.k = k
        self.scalable = scalable
        self.f_word = word_font
        self.f_score = _font(max(8, round(font_size * _SCORE_SIZE / _WORD_SIZE)) * k)[0]
        self.f_title = _font(max(8, round(font_size * _TITLE_SIZE / _WORD_SIZE)) * k)[0]
        self.f_legend = _font(max(8, round(font_size * _LEGEND_SIZE / _WORD_SIZE)) * k)[0]
        width = int(width)
        if width < 160:
            raise ValueError(f"render_png: width must be at least 160 px, got {width}")
        self.width = width
        W = width * k
        pad, gx, gy, px, py = (v * k for v in (_PAD, _GAP_X, _GAP_Y, _BOX_PX, _BOX_PY))
        inner = W - 2 * pad
        self.pad = pad

        y = pad
        # title
        self.title_lines: list[tuple[int, str]] = []
        if title:
            tsize = max(8, round(font_size * _TITLE_SIZE / _WORD_SIZE)) * k
            ft = _font_for(self.f_title, tsize, str(title), scalable)
            tt, tb = _text_extent(ft)
            for ln in _wrap_text(ft, str(title), inner):
                self.title_lines.append((y - tt, ln, ft))
                y += (tb - tt) + 5 * k
            y += 9 * k

        # word chips
        wt, wb = _text_extent(self.f_word)
        st, sb = _text_extent(self.f_score)
        self.word_h = wb - wt
        labels = [(s >= score_threshold) if show_scores else False for _, s in words]
        self.score_row = (sb - st + 3 * k) if any(labels) else 0
        box_h = 2 * py + self.word_h + self.score_row
        self.box_h, self.px, self.py, self.wt, self.st = box_h, px, py, wt, st
        self.chips: list[tuple] = []
        x, line = pad, 0
        top = y
        for (text, score), lab in zip(words, labels):
            label = _fmt(score) if lab else None
            fw = _font_for(self.f_word, font_size * k, text, scalable)
            shown = _fit(fw, text, inner - 2 * px)
            w = max(_text_w(fw, shown), _text_w(self.f_score, label) if label else 0) + 2 * px
            if x > pad and x + w > W - pad:
                x, line = pad, line + 1
                y += box_h + gy
            self.chips.append((text, score, shown, label, x, y, x + w, y + box_h, fw))
            x += w + gx
        self.n_lines = line + 1 if words else 0
        if words:
            y += box_h
        else:
            self.empty_y = y
            y += self.word_h + 2 * py
        self.words_top = top

        # legend
        self.legend = bool(legend)
        if legend:
            y += 16 * k
            lt, lb = _text_extent(self.f_legend)
            caption = "harm score"
            cw = _text_w(self.f_legend, caption)
            bar_h = 10 * k
            bar_w = min(260 * k, inner - cw - 12 * k)
            _, ct, _, cb = _text_bbox(self.f_legend, caption)
            self.leg_caption = (pad, y + bar_h // 2 - (ct + cb) // 2, caption)
            bx0 = pad + cw + 12 * k
            self.leg_bar = (bx0, y, bx0 + max(bar_w, 20 * k), y + bar_h)
            self.leg_ticks_y = y + bar_h + 4 * k - lt
            y += bar_h + 4 * k + (lb - lt)
        y += pad
        # make the canvas height an exact multiple of k so downsampling is exact
        self.H = -(-y // k) * k
        self.height = self.H // k

    def layout(self) -> Layout:
        k = self.k
        boxes = [WordBox(t, s, (x0 // k, y0 // k, -(-x1 // k), -(-y1 // k)), 0, lab, shown)
                 for t, s, shown, lab, x0, y0, x1, y1, _ in self.chips]
        line, prev_y = -1, None
        for b in boxes:
            if b.box[1] != prev_y:
                line, prev_y = line + 1, b.box[1]
            b.line = line
        return Layout(self.width, self.height, boxes, self.n_lines)

    def draw(self):
        from PIL import Image, ImageDraw
        k = self.k
        W = self.width * k
        img = Image.new("RGB", (W, self.H), _BG)
        d = ImageDraw.Draw(img)
        for ty, ln, ft in self.title_lines:
            d.text((self.pad, ty), ln, font=ft, fill=_INK)
        for text, score, shown, label, x0, y0, x1, y1, fw in self.chips:
            fill = score_color(score)
            ink = text_color(fill)
            outline = _mix(fill, (0, 0, 0), 0.10)
            _rounded(d, (x0, y0, x1 - 1, y1 - 1), _RADIUS * k, fill, outline, k)
            ww = _text_w(fw, shown)
            l0 = _text_bbox(fw, shown)[0]
            # centre the word's typical text extent (cap top to descender) on its slot
            wt, wb = _text_extent(fw)
            cx = (x0 + x1) // 2
            if label:
                ty = y0 + self.py + (self.word_h - (wb - wt)) // 2
                d.text((cx - ww // 2 - l0, ty - wt), shown, font=fw, fill=ink)
                sw = _text_w(self.f_score, label)
                sl = _text_bbox(self.f_score, label)[0]
                sy = ty + self.word_h + 3 * k
                d.text((cx - sw // 2 - sl, sy - self.st), label, font=self.f_score,
                       fill=_mix(ink, fill, 0.22))
            else:
                ty = (y0 + y1) // 2 - (wb - wt) // 2
                d.text((cx - ww // 2 - l0, ty - wt), shown, font=fw, fill=ink)
        if not self.chips:
            d.text((self.pad, self.empty_y + self.py - self.wt), "(no prompt tokens)",
                   font=self.f_word, fill=_MUTED)
        if self.legend:
            cx, cy, caption = self.leg_caption
            d.text((cx, cy), caption, font=self.f_legend, fill=_MUTED)
            bx0, by0, bx1, by1 = self.leg_bar
            bar = Image.new("RGB", (bx1 - bx0, by1 - by0))
            bd = ImageDraw.Draw(bar)
            for i in range(bx1 - bx0):
                bd.line([(i, 0), (i, by1 - by0)], fill=score_color(i / max(1, bx1 - bx0 - 1)))
            mask = Image.new("L", bar.size, 0)
            ImageDraw.Draw(mask).rounded_rectangle((0, 0, bar.size[0] - 1, bar.size[1] - 1),
                                                   radius=(by1 - by0) // 2, fill=255)
            img.paste(bar, (bx0, by0), mask)
            for v, t in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
                tw = _text_w(self.f_legend, t)
                tx = bx0 + round(v * (bx1 - bx0)) - tw // 2
                tx = min(max(tx, bx0), bx1 - tw)
                d.text((tx, self.leg_ticks_y), t, font=self.f_legend, fill=_MUTED)
        if k > 1:
            img = img.resize((self.width, self.height), Image.LANCZOS)
        return img


def _rounded(d, xy, radius, fill, outline, k):
    if hasattr(d, "rounded_rectangle"):  # Pillow >= 8.2
        d.rounded_rectangle(xy, radius=radius, fill=fill, outline=outline, width=k)
    else:
        d.rectangle(xy, fill=fill, outline=outline)


def _plan(words, title, legend, width, show_scores, score_threshold, font_size) -> _Plan:
    return _Plan(_normalize(words), title=title, legend=legend, width=width, show_scores=show_scores,
                 score_threshold=score_threshold, font_size=int(font_size))


def layout_words(words, *, title=None, legend=True, width=768, show_scores=True,
                 score_threshold=SCORE_LABEL_THRESHOLD, font_size=_WORD_SIZE) -> Layout:
    """Where :func:`render_png` puts every word chip (final-image pixel boxes), without drawing."""
    return _plan(words, title, legend, width, show_scores, score_threshold, font_size).layout()


def render_png(words, *, title: str | None = None, legend: bool = True, width: int = 768,
               path: str | os.PathLike | None = None, show_scores: bool = True,
               score_threshold: float = SCORE_LABEL_THRESHOLD, font_size: int = _WORD_SIZE):
    """Draw the word heatmap as an RGB ``PIL.Image.Image`` of the given ``width``.

    ``words`` is :func:`group_words` output or ``(word, score)`` pairs. Each word is
    a rounded chip filled with :func:`score_color`, wrapped over lines like text;
    words scoring at least ``score_threshold`` show their score under the word.
    ``title`` adds a heading line (wrapped if long); ``legend`` adds a 0..1 colour
    bar. The height follows from the content. Saved as PNG to ``path`` when given.
    """
    img = _plan(words, title, legend, width, show_scores, score_threshold, font_size).draw()
    if path is not None:
        img.save(os.fspath(path), format="PNG")
    return img


# --------------------------------------------------------------------------- terminal / HTML

def should_color(stream: Any = None) -> bool:
    """Whether to emit ANSI colour on ``stream`` (default stdout).

    Follows https://no-color.org: a non-empty ``NO_COLOR`` disables colour;
    otherwise a non-empty ``FORCE_COLOR`` enables it; otherwise colour only on a TTY.
    """
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def render_terminal(words, *, color: bool = True, score_threshold: float = SCORE_LABEL_THRESHOLD) -> str:
    """One line of words, each followed by ``[score]`` when it scores >= ``score_threshold``.

    With ``color`` every word gets a 24-bit ANSI background of its score colour
    (and contrasting text); without, plain text such as ``a naked[0.97] woman``.
    """
    parts = []
    for text, score in _normalize(words):
        tok = f"{text}[{_fmt(score)}]" if score >= score_threshold else text
        if color:
            bg, fg = score_color(score), text_color(score_color(score))
            tok = "\x1b[48;2;%d;%d;%dm\x1b[38;2;%d;%d;%dm%s\x1b[0m" % (*bg, *fg, tok)
        parts.append(tok)
    return " ".join(parts)


def heatmap_html(words, *, score_threshold: float = SCORE_LABEL_THRESHOLD) -> str:
    """Self-contained HTML: one ``<span>`` per word with an inline background colour.

    Word text is HTML-escaped; each span carries ``data-score`` and a ``title``
    tooltip, and words scoring >= ``score_threshold`` show a small superscript score.
    """
    spans = []
    for text, score in _normalize(words):
        bg = score_color(score)
        fg = text_color(bg)
        sc = "nan" if math.isnan(score) else _fmt(score)
        sup = (f'<sup style="font-size:0.7em;opacity:0.8;margin-left:2px">{sc}</sup>'
               if score >= score_threshold else "")
        spans.append(
            f'<span class="es-word" data-score="{sc}" title="harm score {sc}" '
            f'style="background:{_hex(bg)};color:{_hex(fg)};padding:1px 5px;border-radius:5px;'
            f'margin:0 2px;white-space:nowrap">{html.escape(text, quote=True)}{sup}</span>'
        )
    return ('<div class="es-heatmap" style="line-height:2;font-family:system-ui,sans-serif">'
            + " ".join(spans) + "</div>")
