"""ComfyUI's prompt weights (``(word:1.3)``) around the sanitizer.

ComfyUI weights a token after the transformer: its row becomes ``e + w (u - e)``, where ``u`` is the
row the transformer gave and ``e`` the empty prompt's row at that position
(``comfy/sd1_clip.py`` ``ClipTokenWeightEncoder.encode_token_weights``). The detectors were
calibrated on unweighted rows, so a weighted word would be scored on a row it has never seen (a
stronger ``(nude:1.4)`` could read as less unsafe than ``nude``). The recorder therefore also keeps the
stream's unweighted output when a prompt carries weights; the sanitizer scores and edits those rows, and
the edit goes back into the weighted rows scaled by the token's weight:
``z' = e + w (s - e) = z + w (s - u)``. Rows the sanitizer leaves alone stay bit for bit the host's.
"""
from __future__ import annotations

import torch


def has_weights(token_weight_pairs) -> bool:
    """Whether any token of any section carries a weight other than 1 (what makes ComfyUI weight rows)."""
    return any(pair[1] != 1.0 for section in token_weight_pairs for pair in section)


def unit_weights(token_weight_pairs) -> list:
    """The same sections with every weight set to 1 (the rest of each pair, if any, kept)."""
    return [[(pair[0], 1.0) + tuple(pair[2:]) for pair in section] for section in token_weight_pairs]


def row_weights(token_weight_pairs) -> torch.Tensor:
    """``[1, rows]`` float32: each row's weight, the sections one after the other (as the rows are)."""
    return torch.tensor([[float(pair[1]) for section in token_weight_pairs for pair in section]],
                        dtype=torch.float32)


def reweighted(weighted: torch.Tensor, unweighted: torch.Tensor, sanitized: torch.Tensor,
               weights: torch.Tensor) -> torch.Tensor:
    """The host's weighted rows with the sanitizer's edit of the unweighted rows, scaled by each row's weight."""
    w = weights.to(weighted.device, torch.float32).unsqueeze(-1)
    edit = sanitized.to(torch.float32) - unweighted.to(torch.float32)
    changed = (sanitized != unweighted).any(-1, keepdim=True)
    out = weighted.to(torch.float32) + w * edit
    return torch.where(changed, out.to(weighted.dtype), weighted)
