"""Fonts for the PNG heatmap: Pillow's scalable default, and fonts that have a word's glyphs.

Pillow's bundled font covers Latin text only. For a word with other characters
(é, ß, Ελλάδα, 中文, 한국어) :func:`pick_font` tries common system fonts by name,
then asks fontconfig (``fc-match``) for a font of the word's script
(``:lang=ja``, ``:lang=zh-cn``, ``:lang=ko``, ...) and for one that covers its
characters (``:charset=...``). When none has them it says so (``ok`` False) and the
PNG notes it; on Debian, ``fonts-noto-cjk`` provides CJK glyphs.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess

FALLBACK_FONTS = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "arial.ttf", "Arial.ttf", "Helvetica.ttc",
                  "LiberationSans-Regular.ttf")

# (first, last code point, fontconfig language) for scripts Pillow's default font lacks.
_SCRIPT_LANGS = (
    (0x3040, 0x30FF, "ja"),  # Hiragana, Katakana
    (0x31F0, 0x31FF, "ja"),
    (0xFF66, 0xFF9F, "ja"),  # half-width Katakana
    (0x1100, 0x11FF, "ko"), (0x3130, 0x318F, "ko"), (0xAC00, 0xD7AF, "ko"),  # Hangul
    (0x3400, 0x4DBF, "zh-cn"), (0x4E00, 0x9FFF, "zh-cn"), (0xF900, 0xFAFF, "zh-cn"),  # Han
    (0x20000, 0x2FFFF, "zh-cn"),
    (0x3000, 0x303F, "ja"),  # CJK punctuation
    (0x0E00, 0x0E7F, "th"), (0x0600, 0x06FF, "ar"), (0x0590, 0x05FF, "he"), (0x0900, 0x097F, "hi"),
    (0x0400, 0x04FF, "ru"), (0x0370, 0x03FF, "el"),
)


@functools.lru_cache(maxsize=32)
def base_font(size: int):
    """``(font, scalable)``: a scalable font of ``size`` px; Pillow's small bitmap font on old Pillow."""
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


def text_bbox(font, text: str) -> tuple[int, int, int, int]:
    if hasattr(font, "getbbox"):
        return tuple(int(v) for v in font.getbbox(text))  # type: ignore[return-value]
    w, h = font.getsize(text)  # Pillow < 9.2
    return 0, 0, w, h


def text_w(font, text: str) -> int:
    l, _, r, _ = text_bbox(font, text)
    return max(0, r - l) if text else 0


def text_extent(font) -> tuple[int, int]:
    """(top, bottom) of typical text relative to the draw origin, for vertical centring."""
    _, t, _, b = text_bbox(font, "Hgy")
    return t, b


def fit(font, text: str, max_w: int) -> str:
    """``text`` cut with an ellipsis so that it is at most ``max_w`` wide."""
    if text_w(font, text) <= max_w:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text_w(font, text[:mid] + "\u2026") <= max_w:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "\u2026"


def wrap_text(font, text: str, max_w: int) -> list[str]:
    lines: list[str] = []
    cur = ""
    for word in text.split():
        cand = f"{cur} {word}" if cur else word
        if cur and text_w(font, cand) > max_w:
            lines.append(cur)
            cur = word
        else:
            cur = cand
    if cur:
        lines.append(cur)
    return [fit(font, ln, max_w) for ln in lines]


# --------------------------------------------------------------------------- glyph coverage

def _glyph_sig(font, ch: str) -> tuple:
    from PIL import Image, ImageDraw
    l, t, r, b = text_bbox(font, ch)
    w, h = max(1, r - l), max(1, b - t)
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((-l, -t), ch, font=font, fill=255)
    return (w, h, im.tobytes())


_GLYPHS: dict = {}


def has_glyphs(font, text: str) -> bool:
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


def script_langs(text: str) -> list[str]:
    """fontconfig languages of the scripts in ``text`` that need a font of their own, in order."""
    langs: list[str] = []
    for ch in text:
        cp = ord(ch)
        for lo, hi, lang in _SCRIPT_LANGS:
            if lo <= cp <= hi:
                if lang not in langs:
                    langs.append(lang)
                break
    return langs


@functools.lru_cache(maxsize=64)
def fontconfig_file(pattern: str) -> str | None:
    """The font file ``fc-match`` gives for ``pattern`` (e.g. ``:lang=ja``); None without fontconfig."""
    exe = shutil.which("fc-match")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "-f", "%{file}", pattern], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    path = done.stdout.strip()
    return path if done.returncode == 0 and path and os.path.isfile(path) else None


def _fontconfig_patterns(text: str) -> list[str]:
    patterns = [f":lang={lang}" for lang in script_langs(text)]
    odd = sorted({ord(ch) for ch in text if not ch.isascii() and not ch.isspace()})[:16]
    if odd:
        patterns.append(":charset=" + " ".join(f"{cp:x}" for cp in odd))
    return patterns


@functools.lru_cache(maxsize=128)
def _truetype(name: str, size: int):
    from PIL import ImageFont
    try:
        return ImageFont.truetype(name, size)
    except Exception:
        return None


def _candidates(size: int, text: str):
    for name in FALLBACK_FONTS:
        yield _truetype(name, size)
    for pattern in _fontconfig_patterns(text):
        path = fontconfig_file(pattern)
        if path:
            yield _truetype(path, size)


def pick_font(font, size: int, text: str, scalable: bool):
    """``(font to draw text with, ok)``: ``font``, or a system font that has the glyphs of ``text``.

    ``ok`` is False when no font found has them all (the text is drawn with ``font``'s boxes).
    """
    if text.isascii():
        return font, True
    if not scalable:  # old Pillow's bitmap font: Latin-1 only, nothing to fall back to
        return font, all(ord(ch) < 256 or ch.isspace() for ch in text)
    if has_glyphs(font, text):
        return font, True
    for fb in _candidates(max(6, round(size * 0.92)), text):
        if fb is not None and has_glyphs(fb, text):
            return fb, True
    return font, False


def missing_chars(font, text: str) -> str:
    """The characters of ``text`` that ``font`` draws as boxes, in order, once each."""
    out = []
    for ch in text:
        if ch in out or ch.isspace() or ch.isascii():
            continue
        if not has_glyphs(font, ch):
            out.append(ch)
    return "".join(out)
