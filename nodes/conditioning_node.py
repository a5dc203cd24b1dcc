"""Sanitize Conditioning: CONDITIONING (+ CLIP, + prompt text) -> CONDITIONING, IMAGE heatmap, STRING report."""
from __future__ import annotations

import json
import logging

from . import audit_hook, policy, preview, registry, weights
from .clip_node import validate_weights
from .proxy import Patch, is_close, patch_clip, unwrap
from .report import image_tensor, widget_payload
from .schema import CATEGORY, node_settings, settings_inputs

log = logging.getLogger("embedding_sanitizer.comfyui")


def _record_for_text(clip, text: str):
    recording = patch_clip(_plain(clip), None)
    out = recording.encode_from_tokens(clip.tokenize(text), return_pooled=True, return_dict=True)
    return registry.lookup(out["cond"])["record"]


def _plain(clip):
    """A clone of ``clip`` without any sanitizer proxy."""
    clone = clip.clone()
    clone.cond_stage_model = unwrap(clip.cond_stage_model)
    return clone


def _prepare(clip) -> None:
    """Load the text encoder and set its layer as an encode would (concept lists are encoded with it)."""
    model = unwrap(clip.cond_stage_model)
    model.reset_clip_options()
    if clip.layer_idx is not None:
        model.set_clip_options({"layer": clip.layer_idx})
    clip.load_model()


class EmbeddingSanitizerConditioning:
    DESCRIPTION = (
        "Sanitizes a conditioning and shows its token heatmap. Give the prompt text that was encoded (the same "
        "CLIP), or feed conditioning encoded by a CLIP patched with 'Embedding Sanitizer (CLIP)' (then the text "
        "is not needed). This node's settings apply either way. With schedule 'svf' the output uses the "
        "sanitized embedding only for the early part of sampling (start_percent/end_percent) and the original "
        "for the rest. The pooled vector (SDXL, SD3, Flux) is cleaned too. An admin policy file "
        "(models/embedding_sanitizer/policy.json) overrides these settings. Outputs the heatmap as an IMAGE and "
        "the JSON report as a STRING.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CONDITIONING", "IMAGE", "STRING")
    RETURN_NAMES = ("conditioning", "heatmap", "report")
    OUTPUT_TOOLTIPS = ("The sanitized conditioning (new lists and dicts; the input is not modified).",
                       "Per-word harm scores as an image.", "What was scored and changed, as JSON.")
    FUNCTION = "sanitize"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return policy.state_key() + "|" + weights.folder_state()  # the policy file changed, or a weights file

    @classmethod
    def VALIDATE_INPUTS(cls, weights):
        return validate_weights(weights)  # a dropdown label, or a bare file name from an older workflow

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "conditioning": ("CONDITIONING", {"tooltip": "Conditioning from CLIPTextEncode or a similar node."}),
                "clip": ("CLIP", {"tooltip": "The CLIP that encoded the conditioning."}),
                **settings_inputs(),
            },
            "optional": {
                "text": ("STRING", {"multiline": True, "default": "", "tooltip":
                                    "The prompt text that was encoded. Leave empty when the conditioning "
                                    "comes from a CLIP patched by 'Embedding Sanitizer (CLIP)'."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def sanitize(self, conditioning, clip, text="", unique_id=None, **kwargs):
        preview.remember_clip(unique_id, _plain(clip))  # the widget's live preview re-scores with it
        settings, choice, notes, in_force = node_settings(kwargs, "Sanitize Conditioning")
        if settings is None:  # on_error: open, logged
            return self._passed_through(conditioning, notes)
        if not policy.fails_open(in_force):
            return self._sanitize(conditioning, clip, text, unique_id, settings, choice, notes, in_force)
        try:
            return self._sanitize(conditioning, clip, text, unique_id, settings, choice, notes, in_force)
        except Exception as exc:  # noqa: BLE001 - the admin policy asks for on_error: open
            log.warning("Embedding Sanitizer: Sanitize Conditioning failed (%s: %s); passed through unsanitized "
                        "because the admin policy (%s) says on_error: open", type(exc).__name__, exc, policy.LABEL)
            return self._passed_through(conditioning, notes + [f"passed through (on_error: open): {exc}"])

    @staticmethod
    def _passed_through(conditioning, notes):
        report = {"node": "EmbeddingSanitizerConditioning", "entries": [], "notes": notes}
        return {"ui": {"es_heatmap": []},
                "result": (conditioning, image_tensor([], title="Embedding Sanitizer (passed through)"),
                           json.dumps(report, indent=1, default=str))}

    def _sanitize(self, conditioning, clip, text, unique_id, settings, choice, notes, in_force):
        patch = Patch(settings, choice, str(unique_id) if unique_id is not None else None, notes, policy=in_force)
        patch.on_encode = audit_hook.recorder(in_force, settings, notes)
        inner = unwrap(clip.cond_stage_model)
        text = text or ""
        text_record = None
        prepared = False
        out, entries = [], []
        for item in conditioning:
            cond, extras = item[0], item[1]
            found = registry.lookup(cond)
            record = found["record"] if found else None
            original = record.original[0] if found and "patch" in found else cond
            if record is None:
                if not text.strip():
                    raise ValueError("Sanitize Conditioning: this conditioning was not encoded by a CLIP patched "
                                     "with 'Embedding Sanitizer (CLIP)'; connect the prompt text that was encoded")
                if text_record is None:
                    text_record = _record_for_text(clip, text)
                if not is_close(cond, text_record.original[0]):
                    raise ValueError("Sanitize Conditioning: the conditioning does not match the given text encoded "
                                     "with this CLIP (different text, CLIP, weights syntax or clip skip)")
                record = text_record
            elif record.inner is not inner:
                raise ValueError("Sanitize Conditioning: the conditioning was encoded by another CLIP than the one "
                                 "connected")
            if not prepared:
                _prepare(clip)
                prepared = True
            new, entry = patch.apply(record)
            if patch.on_encode is not None:  # the audit line; raises when the log fails under a closed policy
                patch.on_encode(record, entry)
            entries.append(entry)
            out.extend(self._entries(new, record.original, original, extras, entry, settings.schedule == "svf"))
        heatmaps = [h for e in entries for h in e["heatmap"]]
        report = {"node": "EmbeddingSanitizerConditioning", "entries": entries}
        image = image_tensor(heatmaps, title="Embedding Sanitizer")
        ui = {"es_heatmap": [widget_payload(patch.node_id, entries)]}
        return {"ui": ui, "result": (out, image, json.dumps(report, indent=1, default=str))}

    @staticmethod
    def _entries(new, recorded, original, extras, entry, schedule):
        """``new``: the sanitized encode output; ``recorded``: the host's own; ``original``: its cond tensor."""
        sanitized = new[0]
        sanitized_extras, original_extras = dict(extras), dict(extras)
        if entry.get("pooled") and "pooled_output" in extras and len(new) > 1 and len(recorded) > 1:
            sanitized_extras["pooled_output"] = new[1]  # the family's pooled vector, cleaned
            original_extras["pooled_output"] = recorded[1]
        fraction = entry.get("schedule_end")
        if not schedule or not fraction:
            return [[sanitized, sanitized_extras]]
        start = float(extras.get("start_percent", 0.0))
        end = float(extras.get("end_percent", 1.0))
        split = min(end, max(start, start + fraction * (end - start)))
        early = dict(sanitized_extras, start_percent=start, end_percent=split)
        late = dict(original_extras, start_percent=split, end_percent=end)
        return [[sanitized, early], [original, late]]
