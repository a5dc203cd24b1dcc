"""Heatmap words, the JSON report and the IMAGE heatmap of one sanitized encode."""
from __future__ import annotations

import json

import numpy as np
import torch

from embedding_sanitizer.heatmap import render_png, word_records


def stream_view(stream: str, pieces: list[str], scores, flagged, weights) -> dict:
    """One stream of the widget's heatmap (``word_records`` of the core, JSON-safe): ``words`` as
    ``[word, score, flagged]`` (the detector's verdict, whatever the intensity) and ``edits``, each word's edit
    weight at the node's intensity in the same order (0 = not edited: at intensity 0 every word is 0)."""
    words, edits = [], []
    for record in word_records(pieces, scores, weights, flagged):
        score = 0.0 if record.score != record.score else float(record.score)
        words.append([record.word, round(score, 4), bool(record.flagged)])
        edits.append(round(float(record.edit), 4))
    return {"stream": stream, "words": words, "edits": edits}


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
        edits = stream.get("edits") or [0.0] * len(stream["words"])
        words = [{"word": w, "score": s, "edit": e} for (w, s, _), e in zip(stream["words"], edits)] or \
            [("(no words)", 0.0)]
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
