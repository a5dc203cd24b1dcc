"""The heatmap as small self-contained HTML (``<span>`` chips) for web UIs."""
from __future__ import annotations

import html
import math

from .colors import EDIT_COLOR, edit_strength, hex_color, score_color, text_color
from .words import SCORE_LABEL_THRESHOLD, fmt_emphasis, fmt_score, normalize


def heatmap_html(words, *, score_threshold: float = SCORE_LABEL_THRESHOLD) -> str:
    """Self-contained HTML: one ``<span>`` per word with an inline background colour.

    Word text is HTML-escaped; each span carries ``data-score`` and a ``title``
    tooltip, and words scoring >= ``score_threshold`` show a small superscript score.
    A word with an edit weight gets ``data-edit``, the class ``es-edited`` and a ring
    whose opacity follows the weight; a prompt weight other than 1 gives ``data-emphasis``.
    """
    spans = []
    for text, score, edit, emphasis in normalize(words):
        bg = score_color(score)
        fg = text_color(bg)
        sc = "nan" if math.isnan(score) else fmt_score(score)
        sup = (f'<sup style="font-size:0.7em;opacity:0.8;margin-left:2px">{sc}</sup>'
               if score >= score_threshold else "")
        classes, extra, ring, tip = "es-word", "", "", f"harm score {sc}"
        strength = edit_strength(edit)
        if strength > 0:
            classes += " es-edited"
            extra = f' data-edit="{fmt_score(edit)}"'
            ring = f"box-shadow:0 0 0 2px rgba({EDIT_COLOR[0]},{EDIT_COLOR[1]},{EDIT_COLOR[2]},{0.35 + 0.65 * strength:.2f});"
            tip += f", edited (weight {fmt_score(edit)})"
        if emphasis != 1.0:
            extra += f' data-emphasis="{emphasis:.4g}"'
            tip += f", prompt weight {fmt_emphasis(emphasis)}"
        spans.append(
            f'<span class="{classes}" data-score="{sc}"{extra} title="{tip}" '
            f'style="background:{hex_color(bg)};color:{hex_color(fg)};padding:1px 5px;border-radius:5px;'
            f'margin:0 2px;white-space:nowrap;{ring}">{html.escape(text, quote=True)}{sup}</span>'
        )
    return ('<div class="es-heatmap" style="line-height:2;font-family:system-ui,sans-serif">'
            + " ".join(spans) + "</div>")
