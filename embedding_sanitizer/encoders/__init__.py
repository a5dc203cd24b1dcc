"""Text encoders behind one interface (see ``base.TextEncoder``)."""
from .base import EncoderOutput, TextEncoder, TokenBatch

__all__ = ["EncoderOutput", "TextEncoder", "TokenBatch"]
