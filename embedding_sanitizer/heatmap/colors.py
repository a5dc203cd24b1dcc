"""Score colours: a light-grey -> yellow -> orange -> red ramp, and readable text on it."""
from __future__ import annotations

import math
from typing import Sequence

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
#: The colour of an edited word's ring (a deep violet, apart from the score ramp).
EDIT_COLOR = (88, 44, 160)


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


DARK = (30, 30, 34)
LIGHT = (255, 255, 255)


def text_color(background: Sequence[int]) -> tuple[int, int, int]:
    """White text where it reaches WCAG 3:1 contrast on ``background`` (reds), else dark text."""
    lb = _luminance(background)
    c_dark = (lb + 0.05) / (_luminance(DARK) + 0.05)
    c_light = 1.05 / (lb + 0.05)
    return LIGHT if c_light >= 3.0 or c_light > c_dark else DARK


def hex_color(rgb: Sequence[int]) -> str:
    return "#%02x%02x%02x" % tuple(rgb[:3])


def mix(a: Sequence[int], b: Sequence[int], f: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * f)) for x, y in zip(a, b))  # type: ignore[return-value]


def edit_strength(edit: float) -> float:
    """How strongly an edit weight is drawn, in [0, 1] (0 = not edited; weights above 1 saturate)."""
    try:
        e = float(edit)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(e) or e <= 0 else min(1.0, e)
