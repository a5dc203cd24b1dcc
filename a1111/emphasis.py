"""The webui's per-row emphasis, undone before scoring and put back on the edited rows.

A1111 and Forge apply emphasis after the transformer: with "Original" (or "No norm") the row of
every word in ``(word:1.3)`` is multiplied by its weight (then "Original" rescales the whole chunk
batch, which the core undoes itself: ``embedding_sanitizer.scale``). A detector that read the
weighted row would score ``(naked:1.3)`` lower than ``naked`` -- emphasis would hide the very word it
strengthens. So the rows are divided by the chunk multipliers (``PromptChunk.multipliers``, the same
chunks as ``process_texts``) before the core sees them, and every row the core edits is multiplied
by its weight again: the user's emphasis stays, applied to the sanitized row. Rows the core leaves
alone are the host's own, bit for bit. With "Ignore" (weights parsed, rows not multiplied) and "None"
(no weights) nothing is divided.

A weight of 0 zeroes the host's row; it is scored as the zero row and stays zero.
"""
from __future__ import annotations

import torch

MULTIPLYING = ("Original", "No norm")


def emphasis_name(host) -> str:
    """The emphasis the host's last forward used (``host.emphasis``, set per call by A1111 1.10 and Forge),
    else the webui option."""
    name = getattr(getattr(host, "emphasis", None), "name", None)
    if isinstance(name, str):
        return name
    try:
        from modules import shared

        return str(getattr(shared.opts, "emphasis", "Original"))
    except Exception:  # noqa: BLE001 - outside the webui
        return "Original"


def row_multipliers(host, batch_chunks) -> torch.Tensor | None:
    """``[B, 77 * n]`` emphasis weights of the rows as the host's forward laid them out, or None when the
    host's emphasis does not multiply rows or every weight is 1."""
    if emphasis_name(host) not in MULTIPLYING:
        return None
    count = max((len(chunks) for chunks in batch_chunks), default=1) or 1
    rows = []
    for chunks in batch_chunks:
        row: list[float] = []
        for k in range(count):
            chunk = chunks[k] if k < len(chunks) else host.empty_chunk()
            row.extend(float(m) for m in chunk.multipliers)
        rows.append(row)
    weights = torch.tensor(rows, dtype=torch.float32)
    if bool((weights == 1).all()):
        return None
    return weights


def unweighted(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The rows before emphasis (a weight of 0 leaves its zero row)."""
    w = weights.to(z.device).unsqueeze(-1)
    w = torch.where(w == 0, torch.ones_like(w), w)
    return (z.to(torch.float32) / w).to(z.dtype)


def reweighted(host_z: torch.Tensor, sanitized: torch.Tensor, edited: torch.Tensor,
               weights: torch.Tensor) -> torch.Tensor:
    """The host's rows where nothing was edited; elsewhere the sanitized row times its emphasis weight."""
    w = weights.to(sanitized.device).unsqueeze(-1)
    back = (sanitized.to(torch.float32) * w).to(host_z.dtype)
    return torch.where(edited.to(sanitized.device).unsqueeze(-1), back, host_z)
