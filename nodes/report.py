"""Heatmap words, the JSON report and the IMAGE heatmap of one sanitized encode."""
from __future__ import annotations

import json

import numpy as np
import torch

from embedding_sanitizer.heatmap import group_words, render_png


def heatmap_words(pieces: list[str], scores, flagged) -> list[list]:
    """``[[word, score, edited], ...]`` for the front end (scores rounded, JSON-safe)."""
    flags = flagged.tolist() if hasattr(flagged, "tolist") else list(flagged)
    out = []
    for word, score, positions in group_words(pieces, scores):
        score = 0.0 if score != score else float(score)
        out.append([word, round(score, 4), bool(any(flags[p] for p in positions))])
    return out


def summary(record: dict) -> str:
    parts = []
    for stream in record.get("heatmap", []):
        flagged = [w for w, _, f in stream["words"] if f]
        text = f"{stream['stream']}: {len(flagged)} flagged" + (f" ({', '.join(flagged[:6])})" if flagged else "")
        if stream.get("prompt_score") is not None:
            text += f", whole prompt {stream['prompt_score']:.2f}"
        parts.append(text)
    for stream, pooled in (record.get("pooled") or {}).items():
        if pooled.get("changed"):
            parts.append(f"{stream} pooled: sanitized (weight {pooled['weight']:.2f})")
    return "; ".join(parts) or "nothing sanitized"


def to_json(report: dict) -> str:
    return json.dumps(report, indent=1, default=str)


def image_tensor(heatmaps: list[dict], title: str = "") -> torch.Tensor:
    """ComfyUI IMAGE ``[N, H, W, 3]`` float in [0, 1]: one heatmap per stream, stacked vertically."""
    from PIL import Image

    panels = []
    for stream in heatmaps or [{"stream": "", "words": []}]:
        words = [(w, s) for w, s, _ in stream["words"]] or [("(no words)", 0.0)]
        label = f"{title} [{stream['stream']}]" if stream["stream"] else title
        panels.append(render_png(words, title=label or None, width=768).convert("RGB"))
    height = sum(p.height for p in panels)
    canvas = Image.new("RGB", (768, height), (255, 255, 255))
    y = 0
    for panel in panels:
        canvas.paste(panel, (0, y))
        y += panel.height
    array = np.asarray(canvas, dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).unsqueeze(0)
