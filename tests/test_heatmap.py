"""Tests for embedding_sanitizer.heatmap (word grouping, colours, PNG / terminal / HTML renderers)."""
import io
import math

import numpy as np
import pytest
from PIL import Image

from embedding_sanitizer import heatmap as hm
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
    monkeypatch.setattr(hm, "_font", lambda size: (ImageFont.load_default_imagefont(), False)
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
