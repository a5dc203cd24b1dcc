"""Embedding Sanitizer (CLIP): CLIP -> CLIP patch that sanitizes every encode downstream."""
from __future__ import annotations

from . import audit_hook, policy, preview, weights
from .proxy import Patch, patch_clip
from .schema import CATEGORY, node_settings, settings_inputs


class EmbeddingSanitizerCLIP:
    DESCRIPTION = (
        "Sanitizes every prompt encoded with the returned CLIP: each token gets a harm score, and the unsafe "
        "concepts are removed from the prompt embedding with the chosen intensity. Connect CLIPTextEncode "
        "(or any encode node) to this node's output; the input CLIP and other branches stay untouched, so "
        "wire the negative prompt to the original CLIP to leave it alone. Covers SD1.x, SD2.x, SDXL (CLIP-L "
        "and CLIP-G separately), SD3 and Flux (CLIP streams; T5 through the training-free projection); "
        "the pooled vectors that SDXL, SD3 and Flux condition on are cleaned too. An admin policy file "
        "(models/embedding_sanitizer/policy.json) overrides these settings. The token heatmap is drawn in "
        "this node after each run. The 'svf' schedule needs a Sanitize Conditioning node after the encode.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CLIP",)
    RETURN_NAMES = ("clip",)
    OUTPUT_TOOLTIPS = ("A clone of the CLIP whose encodes are sanitized.",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"clip": ("CLIP", {"tooltip": "The CLIP to sanitize (from a checkpoint or CLIP loader)."}),
                         **settings_inputs()},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        # re-run when the admin policy file changes, or a weights file appears (a calibration finished)
        return policy.state_key() + "|" + weights.folder_state()

    def patch(self, clip, unique_id=None, **kwargs):
        preview.remember_clip(unique_id, clip)  # the widget's live preview re-scores with it
        settings, choice, notes, in_force = node_settings(kwargs, "Embedding Sanitizer (CLIP)")
        if settings is None:  # on_error: open, logged
            return (clip,)
        if settings.schedule == "svf":
            notes.append("schedule 'svf': a CLIP patch returns one embedding; pass the conditioning through "
                         "'Sanitize Conditioning' to use it for the early steps only")
        patch = Patch(settings, choice, str(unique_id) if unique_id is not None else None, notes, policy=in_force)
        patch.on_encode = audit_hook.recorder(in_force, settings, notes)
        return (patch_clip(clip, patch),)
