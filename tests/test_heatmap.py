"""Tests for embedding_sanitizer.heatmap (word grouping, colours, PNG / terminal / HTML renderers)."""
import io
import math

import numpy as np
import pytest
from PIL import Image

from embedding_sanitizer import heatmap as hm
from tests.support.require import require
from embedding_sanitizer.heatmap import (
    group_words, heatmap_html, layout_words, render_png, render_terminal, score_color, should_color,
    text_color,
)

CLIP_PIECES = ["<|startoftext|>", "a</w>", "nak", "ed</w>", "woman</w>", "on</w>", "the</w>", "beach</w>",
               "<|endoftext|>", "<|endoftext|>"]
CLIP_SCORES = [0.0, 0.01, 0.4, 0.97, 0.3, 0.0, 0.0, 0.02, 0.0, 0.0]


def redness(rgb):
    r, g, b = rgb[:3]
    return r - (g + b) / 2


# ----------------------------------------------------------------------------- grouping

def test_group_clip_end_marker():
    words = group_words(CLIP_PIECES, CLIP_SCORES)
    assert [w for w, _, _ in words] == ["a", "naked", "woman", "on", "the", "beach"]
    naked = words[1]
    assert naked[2] == [2, 3]
    assert naked[1] == pytest.approx(0.97)  # max of the pieces
    assert words[2] == ("woman", pytest.approx(0.3), [4])


def test_group_max_rule_uses_highest_piece_anywhere_in_word():
    words = group_words(["un", "sa", "fe</w>"], [0.2, 0.9, 0.1])
    assert words == [("unsafe", pytest.approx(0.9), [0, 1, 2])]


def test_group_wordpiece_continuations():
    pieces = ["[CLS]", "a", "na", "##ked", "woman", "[SEP]", "[PAD]", "[PAD]"]
    scores = [0.0, 0.0, 0.8, 0.6, 0.2, 0.0, 0.0, 0.0]
    words = group_words(pieces, scores)
    assert [(w, round(s, 3), p) for w, s, p in words] == [
        ("a", 0.0, [1]), ("naked", 0.8, [2, 3]), ("woman", 0.2, [4])]


def test_group_clean_pieces_are_words_and_specials_dropped():
    pieces = ["<bos>", "a", "naked", "woman", "<eos>", "<pad>"]
    words = group_words(pieces, [0.5, 0.1, 0.9, 0.2, 0.7, 0.7])
    assert [(w, p) for w, _, p in words] == [("a", [1]), ("naked", [2]), ("woman", [3])]


def test_group_special_closes_open_clip_word_and_truncated_tail_kept():
    # a word cut by truncation (no </w> before EOS) is still emitted
    words = group_words(["nak", "<|endoftext|>"], [0.9, 0.0])
    assert words == [("nak", pytest.approx(0.9), [0])]
    words = group_words(["top", "<eos>", "less</w>"], [0.1, 0.0, 0.2])
    assert [w for w, _, _ in words] == ["top", "less"]


def test_group_clip_byte_level_decoding():
    # CLIP's byte-level BPE spells "café" as "cafÃ©"
    words = group_words(["caf\u00c3\u00a9</w>", "latte</w>"], [0.0, 0.0])
    assert [w for w, _, _ in words] == ["café", "latte"]
    # already clean non-ASCII text is left untouched
    assert group_words(["über</w>"], [0.0])[0][0] == "über"


def test_group_sentencepiece():
    words = group_words(["\u2581a", "\u2581na", "ked", "\u2581woman", "</s>"], [0, 0.3, 0.9, 0.1, 0])
    assert [(w, p) for w, _, p in words] == [("a", [0]), ("naked", [1, 2]), ("woman", [3])]


def test_group_empty_and_mismatch():
    assert group_words([], []) == []
    assert group_words(["<bos>", "<eos>"], [0.0, 0.0]) == []
    with pytest.raises(ValueError, match="3 pieces but 2 scores"):
        group_words(["a</w>", "b</w>", "c</w>"], [0.1, 0.2])
    with pytest.raises(TypeError):
        group_words("a naked woman", [0.1])
    with pytest.raises(ValueError, match="flat"):
        group_words(["a"], [[0.1]])


def test_group_accepts_arrays_and_tensor_like():
    words = group_words(np.array(["a</w>", "nak", "ed</w>"]), np.array([0.1, 0.5, 0.25], dtype=np.float32))
    assert [(w, round(s, 3)) for w, s, _ in words] == [("a", 0.1), ("naked", 0.5)]
    assert all(isinstance(s, float) for _, s, _ in words)

    class FakeTensor:  # duck-typed like a torch tensor
        def tolist(self):
            return [0.2, 0.7]

    assert group_words(["x", "y"], FakeTensor())[1][1] == pytest.approx(0.7)


def test_group_nan_scores_ignored_unless_all_nan():
    words = group_words(["nak", "ed</w>", "x</w>"], [float("nan"), 0.4, float("nan")])
    assert words[0][1] == pytest.approx(0.4)
    assert math.isnan(words[1][1])


# ----------------------------------------------------------------------------- colour

def test_score_color_endpoints_and_clamp():
    lo, hi = score_color(0.0), score_color(1.0)
    assert min(lo) >= 220 and max(lo) - min(lo) <= 10  # light neutral grey
    assert hi[0] > 180 and hi[1] < 80 and hi[2] < 80  # red
    assert score_color(-3) == lo and score_color(7.5) == hi
    nan = score_color(float("nan"))
    assert max(nan) - min(nan) <= 10 and nan != lo  # grey, distinguishable from a zero score
    assert all(isinstance(c, int) and 0 <= c <= 255 for c in score_color(0.37))


def test_score_color_monotonic_redness_and_darkening():
    steps = [score_color(i / 100) for i in range(101)]
    red = [redness(c) for c in steps]
    assert all(b >= a - 1 for a, b in zip(red, red[1:]))  # up to integer rounding
    coarse = red[::10]
    assert all(b > a for a, b in zip(coarse, coarse[1:]))
    # the middle of the ramp is yellow/orange: red > green > blue
    r, g, b = score_color(0.5)
    assert r > g > b
    assert sum(steps[-1]) < sum(steps[0])


def test_text_color_contrast():
    assert text_color(score_color(1.0)) == (255, 255, 255)
    assert text_color(score_color(0.0)) != (255, 255, 255)
    assert text_color(score_color(0.4)) != (255, 255, 255)


# ----------------------------------------------------------------------------- PNG

def test_render_png_size_mode_and_red_box():
    words = group_words(CLIP_PIECES, CLIP_SCORES)
    img = render_png(words, title="mode safree, intensity 1.0, 2 tokens edited", width=640)
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB" and img.size[0] == 640 and 80 < img.size[1] < 400
    lay = layout_words(words, title="mode safree, intensity 1.0, 2 tokens edited", width=640)
    assert lay.height == img.size[1]
    box = {b.word: b for b in lay.boxes}
    x0, y0, x1, y1 = box["naked"].box
    px = img.getpixel((x0 + 4, (y0 + y1) // 2))  # inside the chip, left of the text
    assert redness(px) > 100, px
    assert box["naked"].label == "0.97"
    x0, y0, x1, y1 = box["the"].box
    grey = img.getpixel((x0 + 4, (y0 + y1) // 2))
    assert redness(grey) < 15 and min(grey) > 200, grey
    assert box["the"].label is None  # scores below 0.05 are not printed
    # background stays white
    assert img.getpixel((1, 1)) == (255, 255, 255)


def test_render_png_accepts_pairs_and_saves(tmp_path):
    path = tmp_path / "hm.png"
    img = render_png([("naked", 0.9), ("woman", 0.1)], legend=False, path=path)
    assert path.exists()
    again = Image.open(path)
    assert again.size == img.size == (768, img.size[1])
    no_legend_h = img.size[1]
    assert render_png([("naked", 0.9), ("woman", 0.1)]).size[1] > no_legend_h


def test_render_png_wraps_long_prompt_without_overflow():
    words = [(f"word{i}", (i % 10) / 9) for i in range(80)]
    width = 512
    lay = layout_words(words, width=width, title="x")
    assert lay.lines >= 4
    assert len(lay.boxes) == 80
    for b in lay.boxes:
        x0, y0, x1, y1 = b.box
        assert 0 < x0 < x1 <= width - 10 and 0 < y0 < y1 < lay.height
    # boxes on one line never overlap, and lines go down the page
    by_line = {}
    for b in lay.boxes:
        by_line.setdefault(b.line, []).append(b.box)
    assert len(by_line) == lay.lines
    for boxes in by_line.values():
        assert all(a[2] <= b[0] for a, b in zip(boxes, boxes[1:]))
    tops = [by_line[i][0][1] for i in range(lay.lines)]
    assert tops == sorted(tops) and len(set(tops)) == len(tops)
    img = render_png(words, width=width, title="x")
    assert img.size == (width, lay.height)


def test_render_png_overlong_word_is_cut_to_fit():
    word = "supercalifragilistic" * 10
    lay = layout_words([(word, 0.9)], width=300)
    b = lay.boxes[0]
    assert b.box[2] <= 300 and b.shown.endswith("\u2026") and len(b.shown) < len(word)


def test_render_png_empty_and_odd_inputs():
    img = render_png([], title="nothing here")
    assert img.size[0] == 768 and img.size[1] > 40
    img = render_png([("<script>", float("nan")), ("café über", 0.5), ("中文", 1.0)], title="a — b")
    assert img.mode == "RGB"
    with pytest.raises(ValueError):
        render_png([("a", 0.1)], width=50)


def test_render_png_with_bitmap_font_fallback(monkeypatch):
    """Old Pillow without load_default(size=...): the small bitmap font still renders cleanly."""
    from PIL import ImageFont
    monkeypatch.setattr(hm.fonts, "base_font", lambda size: (ImageFont.load_default_imagefont(), False)
                        if hasattr(ImageFont, "load_default_imagefont") else (ImageFont.load_default(), False))
    words = [(f"w{i}", i / 30) for i in range(30)]
    img = render_png(words, title="old pillow", width=300)
    lay = layout_words(words, title="old pillow", width=300)
    assert img.size == (300, lay.height) and lay.lines >= 2
    x0, y0, x1, y1 = lay.boxes[-1].box
    assert redness(img.getpixel((x0 + 2, (y0 + y1) // 2))) > 100


# ----------------------------------------------------------------------------- terminal / HTML

def test_render_terminal_plain():
    words = group_words(CLIP_PIECES, CLIP_SCORES)
    out = render_terminal(words, color=False)
    assert out == "a naked[0.97] woman[0.30] on the beach"
    assert "\x1b" not in out


def test_render_terminal_color():
    out = render_terminal([("naked", 0.97), ("woman", 0.0)], color=True)
    r, g, b = score_color(0.97)
    assert f"\x1b[48;2;{r};{g};{b}m" in out
    assert "naked[0.97]" in out and "woman[" not in out
    assert out.endswith("\x1b[0m") and out.count("\x1b[0m") == 2


def test_should_color(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert should_color(Tty()) is True
    assert should_color(io.StringIO()) is False
    assert should_color(object()) is False  # no isatty at all
    monkeypatch.setenv("NO_COLOR", "1")
    assert should_color(Tty()) is False
    monkeypatch.setenv("NO_COLOR", "")  # empty NO_COLOR does not count
    assert should_color(Tty()) is True


def test_heatmap_html_escapes_and_colours():
    out = heatmap_html([("<script>alert('x')</script>", 0.9), ("a&b", 0.0), ('"q"', 0.2)])
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "a&amp;b" in out and "&quot;q&quot;" in out
    assert out.startswith("<div") and out.endswith("</div>")
    assert out.count("<span") == 3
    assert "background:#%02x%02x%02x" % score_color(0.9) in out
    assert 'data-score="0.90"' in out and ">0.90</sup>" in out
    assert heatmap_html([]).startswith("<div")


# ----------------------------------------------------------------------------- edit weights, legend, fonts

def test_word_records_carry_edit_weight_and_flag():
    edits = [0.0, 0.0, 0.2, 0.8, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5]  # EOS rows edited: not a word
    flags = [False, False, False, True, False, False, False, False, False, False]
    recs = hm.word_records(CLIP_PIECES, CLIP_SCORES, edits, flags)
    assert [r.word for r in recs] == ["a", "naked", "woman", "on", "the", "beach"]
    naked = recs[1]
    assert naked.edit == pytest.approx(0.8) and naked.flagged and naked.positions == [2, 3]
    assert all(r.edit == 0.0 and not r.flagged for r in recs if r.word != "naked")
    # the same words and scores as group_words
    assert [(r.word, r.score, r.positions) for r in recs] == group_words(CLIP_PIECES, CLIP_SCORES)
    # no edits given (or intensity 0: all zero) -> nothing edited
    assert all(r.edit == 0.0 for r in hm.word_records(CLIP_PIECES, CLIP_SCORES))
    assert all(r.edit == 0.0 for r in hm.word_records(CLIP_PIECES, CLIP_SCORES, np.zeros(len(CLIP_PIECES))))
    with pytest.raises(ValueError, match="edits"):
        hm.word_records(CLIP_PIECES, CLIP_SCORES, [0.0])


def test_normalize_reads_edit_from_records_and_dicts():
    words = hm.normalize([hm.WordRecord("naked", 0.9, [1], 0.7, True), ("woman", 0.1),
                          {"text": "blood", "score": 0.6, "weight": 0.3}, {"word": "x", "score": 0.2, "edit": None}])
    assert [(w.text, w.edit) for w in words] == [("naked", 0.7), ("woman", 0.0), ("blood", 0.3), ("x", 0.0)]


def _border_violet(img, box):
    """How many pixels just inside the chip's left edge lean violet (the edit ring)."""
    x0, y0, x1, y1 = box
    count = 0
    for x in range(x0, x0 + 5):
        r, g, b = img.getpixel((x, (y0 + y1) // 2))
        count += b > g + 30 and b > r
    return count


def test_png_rings_edited_words_by_edit_weight():
    words = [hm.WordRecord("naked", 0.9, [0], 1.0, True), hm.WordRecord("woman", 0.9, [1], 0.2, False),
             hm.WordRecord("beach", 0.9, [2], 0.0, False)]
    lay = layout_words(words)
    img = render_png(words)
    rings = {b.word: _border_violet(img, b.box) for b in lay.boxes}
    assert rings["beach"] == 0  # not edited: no ring, whatever its score
    assert rings["naked"] > rings["woman"] > 0  # thicker ring for the stronger edit
    assert [b.edit for b in lay.boxes] == [1.0, 0.2, 0.0]
    assert "ring: edited at this intensity" in " ".join(lay.legend_lines)


def test_png_intensity_zero_shows_nothing_edited():
    recs = hm.word_records(CLIP_PIECES, CLIP_SCORES, [0.0] * len(CLIP_PIECES))
    img = render_png(recs)
    lay = layout_words(recs)
    assert all(_border_violet(img, b.box) == 0 for b in lay.boxes)
    assert "no word is edited at this intensity" in lay.legend_lines[0]


def test_png_legend_says_low_scores_are_not_coloured():
    lay = layout_words([("a", 0.04), ("naked", 0.9)])
    assert "scores under 0.05 are not coloured or labelled" in lay.legend_lines[0]
    img = render_png([("a", 0.04), ("naked", 0.9)])
    a = lay.boxes[0].box
    assert img.getpixel(((a[0] + a[2]) // 2, a[1] + 3)) == score_color(0.0)  # 0.04 is drawn as 0
    assert lay.boxes[0].label is None
    assert layout_words([("a", 0.04)], legend=False).legend_lines == []


def test_png_notes_characters_no_font_can_draw(monkeypatch, caplog):
    monkeypatch.setattr(hm.fonts, "FALLBACK_FONTS", ())
    monkeypatch.setattr(hm.fonts, "fontconfig_file", lambda pattern: None)
    lay = layout_words([("中文", 0.5), ("cat", 0.0)])
    assert lay.missing_glyphs == "中文"
    assert any("no font here has the glyphs for U+4E2D U+6587" in ln and "fonts-noto-cjk" in ln for ln in lay.legend_lines)
    assert "no font found has the glyphs" in caplog.text
    assert layout_words([("cat", 0.0)]).missing_glyphs == ""


def test_png_asks_fontconfig_for_the_script(monkeypatch):
    """No named fallback: the font comes from fc-match for the word's language."""
    def dejavu_sans():
        """fontconfig with DejaVu Sans"""
        path = hm.fonts.fontconfig_file(":family=DejaVu Sans")
        return path if path and "DejaVu" in path else None

    dejavu = require(dejavu_sans, "run bash tools/bootstrap.sh --test (installs fontconfig and fonts-dejavu-core)")
    asked = []

    def fake(pattern):
        asked.append(pattern)
        return dejavu if pattern == ":lang=el" else None

    monkeypatch.setattr(hm.fonts, "FALLBACK_FONTS", ())
    monkeypatch.setattr(hm.fonts, "fontconfig_file", fake)
    base, _ = hm.fonts.base_font(40)
    font, ok = hm.fonts.pick_font(base, 40, "Ελλάδα", True)
    assert ok and font is not base and ":lang=el" in asked
    assert layout_words([("Ελλάδα", 0.3)]).missing_glyphs == ""


def test_script_langs():
    assert hm.fonts.script_langs("ひらがな 中文 한국어 abc") == ["ja", "zh-cn", "ko"]
    assert hm.fonts.script_langs("plain") == []


def test_terminal_and_html_mark_edited_words():
    words = [hm.WordRecord("naked", 0.97, [0], 0.8, True), hm.WordRecord("woman", 0.3, [1], 0.0, False)]
    assert render_terminal(words, color=False) == "naked[0.97 edit 0.80] woman[0.30]"
    assert "\x1b[4m" in render_terminal(words, color=True)
    out = heatmap_html(words)
    assert out.count("es-edited") == 1 and 'data-edit="0.80"' in out and "edited (weight 0.80)" in out


def test_png_draws_cjk_with_a_system_font():
    """With a CJK font installed (Debian: fonts-noto-cjk), Japanese, Chinese and Korean words get real glyphs."""
    def cjk_font():
        """a CJK font found by fontconfig (fc-match :lang=ja)"""
        path = hm.fonts.fontconfig_file(":lang=ja")
        return path if path and hm.fonts.has_glyphs(hm.fonts._truetype(path, 20), "中文") else None

    require(cjk_font, "run bash tools/bootstrap.sh --test (installs fonts-noto-cjk)")
    lay = layout_words([("裸の", 0.9), ("女性", 0.4), ("中文", 0.2), ("한국어", 0.1)])
    assert lay.missing_glyphs == "" and not any("no font" in ln for ln in lay.legend_lines)
    assert all(b.box[2] - b.box[0] > 30 for b in lay.boxes)


def test_records_json_is_strict_json():
    import json

    recs = hm.word_records(["na", "##ked", "x"], [float("nan"), 0.5, 0.1], [0.3, float("nan"), 0.0])
    out = hm.records_json(recs)
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert out[0] == {"word": "naked", "score": 0.5, "edit": 0.3, "flagged": False, "emphasis": 1.0,
                      "positions": [0, 1]}
