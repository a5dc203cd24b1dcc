"""The heatmap as one line of ANSI-coloured (or plain) text for a terminal or a log."""
from __future__ import annotations

import os
import sys
from typing import Any

from .colors import score_color, text_color
from .words import SCORE_LABEL_THRESHOLD, fmt_emphasis, fmt_score, normalize


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
    A word with an edit weight (:func:`~.words.word_records`) is marked edited:
    ``naked[0.97 edit 0.80]`` (underlined in colour as well); a prompt weight other than 1
    (``(nude:1.4)``) follows the word: ``nude×1.4[0.97]``.
    """
    parts = []
    for text, score, edit, emphasis in normalize(words):
        word = text + fmt_emphasis(emphasis)
        if edit > 0:
            tok = f"{word}[{fmt_score(score)} edit {fmt_score(edit)}]"
        elif score >= score_threshold:
            tok = f"{word}[{fmt_score(score)}]"
        else:
            tok = word
        if color:
            bg, fg = score_color(score), text_color(score_color(score))
            underline = "\x1b[4m" if edit > 0 else ""
            tok = "\x1b[48;2;%d;%d;%dm\x1b[38;2;%d;%d;%dm%s%s\x1b[0m" % (*bg, *fg, underline, tok)
        parts.append(tok)
    return " ".join(parts)
