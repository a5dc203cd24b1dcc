"""Embedding Sanitizer (CLIP): CLIP -> CLIP patch that sanitizes every encode downstream."""
from __future__ import annotations

import logging

from . import audit_hook, policy, preview, weights
from .prepare import comfy_progress, prepare
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
        "this node after each run. The 'svf' schedule needs a Sanitize Conditioning node after the encode. "
        "Settings, weights and the concept list are checked when this node runs (a problem marks this node); "
        "a new concept list is encoded here, with a progress bar, and cached for this CLIP.")
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

    @classmethod
    def VALIDATE_INPUTS(cls, weights):
        # a dropdown label, or the bare file name an older version saved in a workflow
        return validate_weights(weights)

    def patch(self, clip, unique_id=None, **kwargs):
        return (patched_clip(clip, unique_id, kwargs, progress_factory=comfy_progress),)


def validate_weights(choice) -> bool | str:
    return weights.validate_choice(str(choice))


def patched_clip(clip, unique_id, kwargs: dict, progress_factory=None):
    """The node's work (shared by the V1 and V3 classes): the patched clone, checked (``nodes/prepare.py``)."""
    preview.remember_clip(unique_id, clip)  # the widget's live preview re-scores with it
    settings, choice, notes, in_force = node_settings(kwargs, "Embedding Sanitizer (CLIP)")
    if settings is None:  # on_error: open, logged
        return clip
    if settings.schedule == "svf":
        notes.append("schedule 'svf': a CLIP patch returns one embedding; pass the conditioning through "
                     "'Sanitize Conditioning' to use it for the early steps only")
    patch = Patch(settings, choice, str(unique_id) if unique_id is not None else None, notes, policy=in_force)
    clone = patch_clip(clip, patch)
    try:
        preparation = prepare(clone, patch, progress_factory)
    except Exception as exc:
        if not policy.fails_open(in_force):
            raise
        # as at encode time under on_error: open: logged, and the encodes pass through
        log.warning("Embedding Sanitizer (CLIP): the check failed (%s: %s); the encodes pass through "
                    "unsanitized because the admin policy (%s) says on_error: open", type(exc).__name__, exc,
                    policy.LABEL)
    else:
        if settings.uses_es:
            patch.notes += [n for n in preparation.notes if n not in patch.notes]
    patch.on_encode = audit_hook.recorder(in_force, settings, patch.notes)
    return clone


log = logging.getLogger("embedding_sanitizer.comfyui")
