"""ComfyUI glue for Embedding Sanitizer (imports ComfyUI modules only lazily, inside functions)."""
from .calibrate_node import EmbeddingSanitizerCalibrate
from .clip_node import EmbeddingSanitizerCLIP
from .conditioning_node import EmbeddingSanitizerConditioning
from .preview_route import install as install_preview_route
from .server_lock import install as install_server_lock
from .weights import register_folder

# Node ids are the class names: stable, and unique without a suffix.
NODE_CLASS_MAPPINGS = {
    "EmbeddingSanitizerCLIP": EmbeddingSanitizerCLIP,
    "EmbeddingSanitizerConditioning": EmbeddingSanitizerConditioning,
    "EmbeddingSanitizerCalibrate": EmbeddingSanitizerCalibrate,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EmbeddingSanitizerCLIP": "Embedding Sanitizer (CLIP)",
    "EmbeddingSanitizerConditioning": "Sanitize Conditioning",
    "EmbeddingSanitizerCalibrate": "Calibrate Embedding Sanitizer",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "install_preview_route", "install_server_lock",
           "register_folder"]
