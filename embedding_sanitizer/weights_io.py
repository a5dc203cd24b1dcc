"""Calibrated ES weights in ``.safetensors`` with JSON metadata."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .encoders.base import fingerprints_match, short_fingerprint
from .es_model import OPTIONAL_BUFFERS, PROMPT_BUFFERS, ESConfig, EmbeddingSanitizerNet
from .pooled_erasure import POOLED_BUFFERS

FORMAT_VERSION = "1"
log = logging.getLogger(__name__)


class WeightsMismatch(ValueError):
    """The weights file was made for another text encoder."""


def save_es(path: str | Path, model: EmbeddingSanitizerNet, *, encoder_name: str, encoder_fingerprint: str,
            layout: dict, concepts: list[str], training: dict | None = None, metrics: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "embedding-sanitizer",
        "format_version": FORMAT_VERSION,
        "encoder_name": encoder_name,
        "encoder_fingerprint": encoder_fingerprint,
        "width": str(model.config.width),
        "config": json.dumps(model.config.to_dict()),
        "layout": json.dumps(layout),
        "concepts": json.dumps(list(concepts)),
        "training": json.dumps(training or {}),
        "metrics": json.dumps(metrics or {}),
    }
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    return path


def read_metadata(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata() or {}
    if raw.get("format") != "embedding-sanitizer":
        raise WeightsMismatch(f"{Path(path).name} is not an Embedding Sanitizer weights file")
    meta = dict(raw)
    for key in ("config", "layout", "concepts", "training", "metrics"):
        meta[key] = json.loads(raw.get(key, "{}") or "{}")
    meta["width"] = int(raw.get("width", 0))
    return meta


def load_es(path: str | Path, *, encoder_name: str | None = None, encoder_fingerprint: str | None = None,
            width: int | None = None, device: str | torch.device = "cpu") -> tuple[EmbeddingSanitizerNet, dict]:
    """Load ES weights, refusing a file made for another encoder (the message names both)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ES weights file not found: {path.name} (calibrate one with "
                                "`python -m embedding_sanitizer train`)")
    meta = read_metadata(path)
    made_for = (f"{meta.get('encoder_name', '?')} (width {meta['width']}, "
                f"fingerprint {short_fingerprint(meta.get('encoder_fingerprint', ''))})")
    in_use = (f"{encoder_name or '?'} (width {width}, "
              f"fingerprint {short_fingerprint(encoder_fingerprint or '')})")
    if width is not None and width != meta["width"]:
        raise WeightsMismatch(f"{path.name} was calibrated for {made_for}, but the text encoder in use is "
                              f"{in_use}: calibrate weights for this encoder")
    if (encoder_fingerprint and meta.get("encoder_fingerprint")
            and not fingerprints_match(encoder_fingerprint, meta["encoder_fingerprint"])):
        raise WeightsMismatch(f"{path.name} was calibrated for {made_for}, but the text encoder in use is "
                              f"{in_use}: calibrate weights for this encoder")
    config = ESConfig(**meta["config"])
    model = EmbeddingSanitizerNet(config)
    state = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            state[key] = handle.get_tensor(key)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - set(OPTIONAL_BUFFERS):
        raise WeightsMismatch(f"{path.name} does not match this version's ES model (missing {sorted(missing)}, "
                              f"unexpected {sorted(unexpected)}): calibrate it again")
    if set(missing) & set(PROMPT_BUFFERS):  # calibrated before the whole-prompt detector existed: it stays off
        model.config.prompt_pooling = ""
    if set(missing) & set(POOLED_BUFFERS):  # calibrated before the pooled-erasure head: the stage uses its
        model.config.pooled_head = False  # training-free target
    model.eval().to(device)
    return model, meta


def list_weight_files(*folders: str | Path) -> list[Path]:
    """All ``.safetensors`` files in the given folders that are ES weights files (sorted by name)."""
    found = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.safetensors")):
            try:
                read_metadata(path)
            except Exception:  # noqa: BLE001 - a foreign file is simply not listed
                log.debug("skipping %s: not an Embedding Sanitizer weights file", path.name)
                continue
            found.append(path)
    return found
