"""Embedding Sanitizer core: score and sanitize CLIP prompt embeddings (pure torch, no host imports).

The public names below are imported on first use (PEP 562), so that ``python -m
embedding_sanitizer`` and the light modules (``heatmap``, ``prompt_syntax``, ``settings``)
start without importing torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "SD1_CLIP_L": "layout", "SD2_CLIP_H": "layout", "SDXL_CLIP_G": "layout", "SDXL_CLIP_L": "layout", "T5": "layout",
    "ChunkLayout": "layout", "token_roles": "layout",
    "SanitizeResult": "sanitize", "Sanitizer": "sanitize", "SanitizerInputError": "sanitize",
    "AuditConfig": "policy", "Policy": "policy",
    "FIELDS": "settings", "MODES": "settings", "PRESETS": "settings", "Settings": "settings",
    "SettingsError": "settings",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
