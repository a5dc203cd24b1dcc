"""Heatmap words, the JSON report and the IMAGE heatmap of one sanitized encode."""
from __future__ import annotations

import json

import numpy as np
import torch

from embedding_sanitizer.heatmap import group_words, render_png


def _as_list(values) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def heatmap_words(pieces: list[str], scores, flagged) -> list[list]:
    """``[[word, score, flagged], ...]`` for the front end (scores rounded, JSON-safe); ``flagged`` is the
    detector's verdict, whatever the intensity (the edit is in ``edit_weights``)."""
    flags = _as_list(flagged)
    out = []
    for word, score, positions in group_words(pieces, scores):
        score = 0.0 if score != score else float(score)
        out.append([word, round(score, 4), bool(any(flags[p] for p in positions))])
    return out


def edit_weights(pieces: list[str], scores, weights) -> list[float]:
    """The edit weight of each word of ``heatmap_words`` (the largest of its pieces'; 0 = not edited), in the
    same order: at intensity 0 every word is 0."""
    values = _as_list(weights)
    out = []
    for _, _, positions in group_words(pieces, scores):
        weight = max((float(values[p]) for p in positions), default=0.0)
        out.append(round(weight, 4) if weight == weight and weight > 0 else 0.0)
    return out


def stream_view(stream: str, pieces: list[str], scores, flagged, weights) -> dict:
    """One stream of the heatmap: ``words`` (``[word, score, flagged]``) and ``edits`` (edit weight per word)."""
    return {"stream": stream, "words": heatmap_words(pieces, scores, flagged),
            "edits": edit_weights(pieces, scores, weights)}


def summary(record: dict) -> str:
    parts = []
    for stream in record.get("heatmap", []):
        flagged = [w for w, _, f in stream["words"] if f]
        text = f"{stream['stream']}: {len(flagged)} flagged" + (f" ({', '.join(flagged[:6])})" if flagged else "")
        if "edits" in stream:
            edited = [w for (w, _, _), e in zip(stream["words"], stream["edits"]) if e > 0]
            text += f", {len(edited)} edited" + (f" ({', '.join(edited[:6])})" if edited else "")
        if stream.get("prompt_score") is not None:
            text += f", whole prompt {stream['prompt_score']:.2f}"
        parts.append(text)
    for stream, pooled in (record.get("pooled") or {}).items():
        if pooled.get("changed"):
            parts.append(f"{stream} pooled: sanitized (weight {pooled['weight']:.2f})")
    return "; ".join(parts) or "nothing sanitized"


def widget_payload(node_id, entries: list[dict]) -> dict:
    """What a sanitizer node's widget shows for one run: the heatmap of every stream of every encode, the
    summary, the notes (policy overrides, weights, fallbacks) and what was not covered (passed through)."""
    notes, not_covered = [], []
    for entry in entries:
        notes += [n for n in entry.get("notes", []) if n not in notes]
        not_covered += [n for n in entry.get("not_covered", []) if n not in not_covered]
    ends = [e["schedule_end"] for e in entries if e.get("schedule_end") is not None]
    settings = entries[0].get("settings", {}) if entries else {}
    return {"node": node_id, "heatmap": [h for e in entries for h in e.get("heatmap", [])],
            "summary": " | ".join(e.get("summary", "") for e in entries if e.get("summary")),
            "notes": notes, "not_covered": not_covered, "schedule_end": max(ends) if ends else None,
            "intensity": settings.get("effective_intensity", settings.get("intensity"))}


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
