"""Embedding Sanitizer core: score and sanitize CLIP prompt embeddings (pure torch, no host imports)."""
from .layout import SD1_CLIP_L, SD2_CLIP_H, SDXL_CLIP_G, SDXL_CLIP_L, T5, ChunkLayout, token_roles
from .sanitize import SanitizeResult, Sanitizer, SanitizerInputError
from .policy import AuditConfig, Policy
from .settings import FIELDS, MODES, PRESETS, Settings, SettingsError

__version__ = "0.1.0"

__all__ = [
    "AuditConfig", "ChunkLayout", "FIELDS", "MODES", "PRESETS", "Policy", "SD1_CLIP_L", "SD2_CLIP_H", "SDXL_CLIP_G",
    "SDXL_CLIP_L", "SanitizeResult", "Sanitizer", "SanitizerInputError", "Settings", "SettingsError", "T5",
    "token_roles", "__version__",
]
