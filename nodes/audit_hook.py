"""The audit log in ComfyUI: one line per sanitized encode, when the policy file configures ``audit``.

Each line (``embedding_sanitizer.audit``) has host ``comfyui`` and, as ``request_id``, the id of
the ComfyUI prompt being executed (``comfy_execution.utils.get_executing_context``; null outside a
prompt, e.g. a node called from a script). An encode sees token ids, not the prompt text: the
prompt stored (or hashed) is the text decoded from the first stream's tokens (lower case, the
tokenizer's spacing), the words of the heatmap. Flagged tokens, scores and edit weights are those
of every sanitized stream (SDXL: CLIP-L and CLIP-G) together. The line is written by the core's
background writer; a log that cannot be written makes the next encode fail under a fail-closed
policy and logs a warning under ``on_error: open`` (``AuditError`` from the core).
"""
from __future__ import annotations

from embedding_sanitizer.audit import AuditLog

HOST = "comfyui"


def request_id():
    """The ComfyUI prompt id being executed, or None."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return None
    context = get_executing_context()
    return None if context is None else context.prompt_id


def prompt_text(entry: dict) -> str:
    views = entry.get("heatmap") or []
    if not views:
        return ""
    return " ".join(word for word, _, _ in views[0]["words"])


def merged_report(entry: dict) -> dict:
    """One report row for the encode: the tokens and counts of every sanitized stream."""
    tokens, rows, scores, prompt_scores, streams = [], 0, [], [], []
    for stream, report in (entry.get("streams") or {}).items():
        streams.append(stream)
        for item in (report.get("prompts") or [])[:1]:
            tokens += [dict(t, stream=stream) for t in item.get("tokens") or []]
            rows += int(item.get("rows_edited") or 0)
            scores.append(item.get("max_score") or 0.0)
            if item.get("prompt_score") is not None:
                prompt_scores.append(item["prompt_score"])
    notes = list(entry.get("notes") or [])
    if streams:
        notes.append(f"streams: {', '.join(streams)}")
    notes += [f"not covered: {n}" for n in entry.get("not_covered") or []]
    prompts = [] if not streams else [{"tokens": tokens, "rows_edited": rows, "max_score": max(scores, default=0.0),
                                       "prompt_score": max(prompt_scores) if prompt_scores else None}]
    return {"prompts": prompts, "notes": notes}


def recorder(policy, settings, notes):
    """``on_encode(record, entry)`` writing one line per encode, or None when the policy has no audit log."""
    audit = AuditLog.from_policy(policy)
    if audit is None:
        return None
    policy_notes = list(notes)

    def on_encode(record, entry) -> None:
        audit.record_result(host=HOST, request_id=request_id(), prompts=[prompt_text(entry)],
                            result=merged_report(entry), notes=policy_notes, settings=settings)

    return on_encode
