"""Per-word harm heatmaps: PNG (README / ComfyUI IMAGE), ANSI terminal, HTML.

The sanitizer scores every prompt token (BPE piece). This package turns the
pieces back into words and renders the word scores, one module per concern:

* :mod:`.words` -- :func:`group_words` (pieces -> ``(word, score, positions)``) and
  :func:`word_records` (the same with each word's edit weight and flag);
* :mod:`.colors` -- :func:`score_color`, :func:`text_color`;
* :mod:`.fonts` -- Pillow fonts, and system fonts that have a word's glyphs (CJK);
* :mod:`.png` -- :func:`render_png`, :func:`layout_words`: rounded word chips coloured by
  score, a ring on edited words, a title line and a legend;
* :mod:`.terminal` -- :func:`render_terminal` (ANSI 24-bit colours, or plain
  ``word[0.97]`` text; :func:`should_color` follows ``NO_COLOR``);
* :mod:`.markup` -- :func:`heatmap_html`, small self-contained ``<span>`` markup.

Only Pillow is needed (for the PNG); torch and numpy are not imported. Scores
may be lists, numpy arrays or torch tensors: anything with ``.tolist()``.
"""
from __future__ import annotations

from .colors import EDIT_COLOR, score_color, text_color
from .markup import heatmap_html
from .png import Layout, WordBox, layout_words, render_png
from .terminal import render_terminal, should_color
from .words import (
    SCORE_LABEL_THRESHOLD, SPECIAL_PIECES, Word, WordRecord, group_words, normalize, records_json, word_records,
)

__all__ = [
    "SPECIAL_PIECES", "group_words", "score_color", "text_color", "render_png", "layout_words",
    "render_terminal", "should_color", "heatmap_html", "word_records", "WordRecord", "Word", "Layout", "WordBox",
    "SCORE_LABEL_THRESHOLD", "EDIT_COLOR", "normalize", "records_json",
]
