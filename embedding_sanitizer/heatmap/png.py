"""The PNG heatmap: rounded word chips coloured by score, a ring on edited words, a legend.

:func:`render_png` draws it (README, ComfyUI IMAGE, ``demo --png``);
:func:`layout_words` gives the chip boxes without drawing. Chips are filled with
:func:`~.colors.score_color` (scores under the label threshold stay grey and show no
number), and a word the sanitizer edits at the current intensity gets a violet ring
whose thickness and depth follow its edit weight. The legend says both. Words with
characters Pillow's font lacks are drawn with a system font that has them
(:mod:`.fonts`); when there is none, the picture says so.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from . import fonts
from .colors import EDIT_COLOR, edit_strength, mix, score_color, text_color
from .words import SCORE_LABEL_THRESHOLD, fmt_emphasis, fmt_score, normalize

log = logging.getLogger(__name__)


@dataclass
class WordBox:
    """One word chip in final image pixels: ``(x0, y0, x1, y1)`` and its wrapped line."""
    word: str
    score: float
    box: tuple[int, int, int, int]
    line: int
    label: str | None  # the score text shown in the chip, if any
    shown: str  # the word as drawn (may be cut with an ellipsis)
    edit: float = 0.0  # edit weight (0 = not edited: no ring)


@dataclass
class Layout:
    width: int
    height: int
    boxes: list[WordBox] = field(default_factory=list)
    lines: int = 0
    missing_glyphs: str = ""  # characters no font found here can draw (shown as boxes, noted in the image)
    legend_lines: list[str] = field(default_factory=list)  # the legend's text lines under the colour bar


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
_RING_MIN, _RING_MAX = 1.5, 4.0  # ring width in px at the smallest and the full edit weight
_BG = (255, 255, 255)
_INK = (38, 38, 42)
_MUTED = (120, 120, 128)
NO_FONT_HINT = "on Debian/Ubuntu: apt-get install fonts-noto-cjk"


def chip_fill(score: float, score_threshold: float) -> tuple[int, int, int]:
    """Chip colour: the score's, or the neutral grey of 0 for scores under the label threshold."""
    return score_color(score if score >= score_threshold else 0.0)


def ring_width(edit: float) -> float:
    """Ring width in final-image px for an edit weight; 0 when the word is not edited."""
    s = edit_strength(edit)
    return 0.0 if s <= 0 else _RING_MIN + (_RING_MAX - _RING_MIN) * s


_RING_LIGHT = (168, 140, 222)  # the ring of the weakest edit; full weight: EDIT_COLOR


def ring_color(edit: float) -> tuple[int, int, int]:
    return mix(_RING_LIGHT, EDIT_COLOR, edit_strength(edit))


def _label(word, score_threshold: float) -> str | None:
    """The small text under a word: its score (when at least the threshold) and its prompt weight."""
    parts = [fmt_score(word.score)] if word.score >= score_threshold else []
    if word.emphasis != 1.0:
        parts.append(fmt_emphasis(word.emphasis))
    return " ".join(parts) or None


def legend_text(score_threshold: float, any_edit: bool, missing: str) -> list[str]:
    lines = [f"scores under {score_threshold:g} are not coloured or labelled"
             + ("; ring: edited at this intensity (thicker = stronger edit)" if any_edit
                else "; no word is edited at this intensity")]
    if missing:
        points = " ".join(f"U+{ord(ch):04X}" for ch in missing[:8]) + (" ..." if len(missing) > 8 else "")
        lines.append(f"no font here has the glyphs for {points} ({NO_FONT_HINT})")
    return lines


class _Plan:
    """Layout computed at supersampled scale ``k``; shared by layout_words and render_png."""

    def __init__(self, words, *, title, legend, width, show_scores, score_threshold, font_size):
        word_font, scalable = fonts.base_font(font_size * 2)
        k = 2 if scalable else 1  # supersample only when fonts scale
        if not scalable:
            word_font = fonts.base_font(font_size)[0]
        self.k = k
        self.scalable = scalable
        self.threshold = score_threshold
        self.f_word = word_font
        self.score_size = max(8, round(font_size * _SCORE_SIZE / _WORD_SIZE)) * k
        self.f_score = fonts.base_font(self.score_size)[0]
        self.f_title = fonts.base_font(max(8, round(font_size * _TITLE_SIZE / _WORD_SIZE)) * k)[0]
        self.f_legend = fonts.base_font(max(8, round(font_size * _LEGEND_SIZE / _WORD_SIZE)) * k)[0]
        width = int(width)
        if width < 160:
            raise ValueError(f"render_png: width must be at least 160 px, got {width}")
        self.width = width
        W = width * k
        pad, gx, gy, px, py = (v * k for v in (_PAD, _GAP_X, _GAP_Y, _BOX_PX, _BOX_PY))
        inner = W - 2 * pad
        self.pad = pad
        missing: list[str] = []

        def note_missing(font, text):
            for ch in fonts.missing_chars(font, text):
                if ch not in missing:
                    missing.append(ch)

        y = pad
        # title
        self.title_lines: list[tuple] = []
        if title:
            tsize = max(8, round(font_size * _TITLE_SIZE / _WORD_SIZE)) * k
            ft, ok = fonts.pick_font(self.f_title, tsize, str(title), scalable)
            if not ok:
                note_missing(ft, str(title))
            tt, tb = fonts.text_extent(ft)
            for ln in fonts.wrap_text(ft, str(title), inner):
                self.title_lines.append((y - tt, ln, ft))
                y += (tb - tt) + 5 * k
            y += 9 * k

        # word chips
        wt, wb = fonts.text_extent(self.f_word)
        st, sb = fonts.text_extent(self.f_score)
        self.word_h = wb - wt
        labels = [_label(w, score_threshold) if show_scores else None for w in words]
        self.score_row = (sb - st + 3 * k) if any(labels) else 0
        box_h = 2 * py + self.word_h + self.score_row
        self.box_h, self.px, self.py, self.wt, self.st = box_h, px, py, wt, st
        self.chips: list[tuple] = []
        x, line = pad, 0
        top = y
        for (text, score, edit, _), label in zip(words, labels):
            fw, ok = fonts.pick_font(self.f_word, font_size * k, text, scalable)
            if not ok:
                note_missing(fw, text)
            shown = fonts.fit(fw, text, inner - 2 * px)
            fs = fonts.pick_font(self.f_score, self.score_size, label, scalable)[0] if label else self.f_score
            w = max(fonts.text_w(fw, shown), fonts.text_w(fs, label) if label else 0) + 2 * px
            if x > pad and x + w > W - pad:
                x, line = pad, line + 1
                y += box_h + gy
            self.chips.append((text, score, edit, shown, label, x, y, x + w, y + box_h, fw, fs))
            x += w + gx
        self.n_lines = line + 1 if words else 0
        if words:
            y += box_h
        else:
            self.empty_y = y
            y += self.word_h + 2 * py
        self.words_top = top
        self.missing = "".join(missing)
        if self.missing:
            log.warning("heatmap PNG: no font found has the glyphs for %r; they are drawn as boxes (%s)",
                        self.missing, NO_FONT_HINT)

        # legend: colour bar, then what the picture hides and what the ring means
        self.legend = bool(legend)
        self.legend_lines: list[str] = []
        self.legend_text: list[tuple] = []
        if legend:
            y += 16 * k
            lt, lb = fonts.text_extent(self.f_legend)
            caption = "harm score"
            cw = fonts.text_w(self.f_legend, caption)
            bar_h = 10 * k
            bar_w = min(260 * k, inner - cw - 12 * k)
            _, ct, _, cb = fonts.text_bbox(self.f_legend, caption)
            self.leg_caption = (pad, y + bar_h // 2 - (ct + cb) // 2, caption)
            bx0 = pad + cw + 12 * k
            self.leg_bar = (bx0, y, bx0 + max(bar_w, 20 * k), y + bar_h)
            self.leg_ticks_y = y + bar_h + 4 * k - lt
            y += bar_h + 4 * k + (lb - lt)
            self.legend_lines = legend_text(score_threshold, any(w.edit > 0 for w in words), self.missing)
            y += 6 * k
            for text in self.legend_lines:
                for ln in fonts.wrap_text(self.f_legend, text, inner):
                    self.legend_text.append((pad, y - lt, ln))
                    y += (lb - lt) + 4 * k
        y += pad
        # make the canvas height an exact multiple of k so downsampling is exact
        self.H = -(-y // k) * k
        self.height = self.H // k

    def layout(self) -> Layout:
        k = self.k
        boxes = [WordBox(t, s, (x0 // k, y0 // k, -(-x1 // k), -(-y1 // k)), 0, lab, shown, e)
                 for t, s, e, shown, lab, x0, y0, x1, y1, _, _ in self.chips]
        line, prev_y = -1, None
        for b in boxes:
            if b.box[1] != prev_y:
                line, prev_y = line + 1, b.box[1]
            b.line = line
        return Layout(self.width, self.height, boxes, self.n_lines, self.missing, list(self.legend_lines))

    def draw(self):
        from PIL import Image, ImageDraw
        k = self.k
        W = self.width * k
        img = Image.new("RGB", (W, self.H), _BG)
        d = ImageDraw.Draw(img)
        for ty, ln, ft in self.title_lines:
            d.text((self.pad, ty), ln, font=ft, fill=_INK)
        for text, score, edit, shown, label, x0, y0, x1, y1, fw, fs in self.chips:
            fill = chip_fill(score, self.threshold)
            ink = text_color(fill)
            ring = ring_width(edit)
            if ring > 0:
                _rounded(d, (x0, y0, x1 - 1, y1 - 1), _RADIUS * k, fill, ring_color(edit),
                         max(1, round(ring * k)))
            else:
                _rounded(d, (x0, y0, x1 - 1, y1 - 1), _RADIUS * k, fill, mix(fill, (0, 0, 0), 0.10), k)
            ww = fonts.text_w(fw, shown)
            l0 = fonts.text_bbox(fw, shown)[0]
            # centre the word's typical text extent (cap top to descender) on its slot
            wt, wb = fonts.text_extent(fw)
            cx = (x0 + x1) // 2
            if label:
                ty = y0 + self.py + (self.word_h - (wb - wt)) // 2
                d.text((cx - ww // 2 - l0, ty - wt), shown, font=fw, fill=ink)
                sw = fonts.text_w(fs, label)
                sl = fonts.text_bbox(fs, label)[0]
                sy = ty + self.word_h + 3 * k
                d.text((cx - sw // 2 - sl, sy - self.st), label, font=fs,
                       fill=mix(ink, fill, 0.22))
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
                tw = fonts.text_w(self.f_legend, t)
                tx = bx0 + round(v * (bx1 - bx0)) - tw // 2
                tx = min(max(tx, bx0), bx1 - tw)
                d.text((tx, self.leg_ticks_y), t, font=self.f_legend, fill=_MUTED)
            for tx, ty, ln in self.legend_text:
                d.text((tx, ty), ln, font=self.f_legend, fill=_MUTED)
        if k > 1:
            img = img.resize((self.width, self.height), Image.LANCZOS)
        return img


def _rounded(d, xy, radius, fill, outline, width):
    if hasattr(d, "rounded_rectangle"):  # Pillow >= 8.2
        d.rounded_rectangle(xy, radius=radius, fill=fill, outline=outline, width=width)
    else:
        d.rectangle(xy, fill=fill, outline=outline, width=width)


def _plan(words, title, legend, width, show_scores, score_threshold, font_size) -> _Plan:
    return _Plan(normalize(words), title=title, legend=legend, width=width, show_scores=show_scores,
                 score_threshold=score_threshold, font_size=int(font_size))


def layout_words(words, *, title=None, legend=True, width=768, show_scores=True,
                 score_threshold=SCORE_LABEL_THRESHOLD, font_size=_WORD_SIZE) -> Layout:
    """Where :func:`render_png` puts every word chip (final-image pixel boxes), without drawing."""
    return _plan(words, title, legend, width, show_scores, score_threshold, font_size).layout()


def render_png(words, *, title: str | None = None, legend: bool = True, width: int = 768,
               path: str | os.PathLike | None = None, show_scores: bool = True,
               score_threshold: float = SCORE_LABEL_THRESHOLD, font_size: int = _WORD_SIZE):
    """Draw the word heatmap as an RGB ``PIL.Image.Image`` of the given ``width``.

    ``words`` is :func:`~.words.word_records` or :func:`~.words.group_words` output, or
    ``(word, score)`` pairs. Each word is a rounded chip filled with its score colour
    (grey under ``score_threshold``), wrapped over lines like text; words scoring at
    least ``score_threshold`` show their score under the word, and words with an edit
    weight get a ring that follows it. ``title`` adds a heading line (wrapped if long);
    ``legend`` adds a 0..1 colour bar and a line saying what is not coloured and what the
    ring means. The height follows from the content. Saved as PNG to ``path`` when given.
    """
    img = _plan(words, title, legend, width, show_scores, score_threshold, font_size).draw()
    if path is not None:
        img.save(os.fspath(path), format="PNG")
    return img
