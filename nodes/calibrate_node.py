"""Calibrate Embedding Sanitizer: train the learned sanitizer for the connected CLIP's streams."""
from __future__ import annotations

import json
import logging
import re

from embedding_sanitizer.encoders.base import short_fingerprint
from embedding_sanitizer.settings import FIELD_BY_NAME, parse_concepts
from embedding_sanitizer.weights_io import list_weight_files, read_metadata

from .encoder import ComfyStreamEncoder
from .proxy import unwrap
from .schema import CATEGORY
from .streams import family_of, layout_for
from .weights import folders, save_folder

log = logging.getLogger("embedding_sanitizer.comfyui")


def _progress_callback(bar):
    def progress(*args, **kwargs):
        numbers = [a for a in args if isinstance(a, (int, float))]
        if bar is None or not numbers:
            return
        if len(numbers) >= 2 and numbers[1]:
            bar.update_absolute(int(numbers[0]), int(numbers[1]))
        else:
            bar.update_absolute(int(numbers[0]))
    return progress


def _existing(encoder, concepts) -> str | None:
    wanted = sorted(c.lower() for c in concepts)
    for path in list_weight_files(*folders()):
        meta = read_metadata(path)
        if (meta.get("encoder_name") == encoder.name and meta["width"] == encoder.width
                and meta.get("encoder_fingerprint") == encoder.fingerprint
                and sorted(c.lower() for c in meta.get("concepts", [])) == wanted):
            return path.name
    return None


class EmbeddingSanitizerCalibrate:
    DESCRIPTION = (
        "Trains the learned sanitizer (ES) for the connected CLIP from synthetic prompts only (no images, no "
        "diffusion model), with ComfyUI's progress bar, and saves it to models/embedding_sanitizer where the "
        "sanitizer nodes list it ('auto' picks it up). A file already calibrated for this encoder and concept "
        "list is reused unless 'retrain' is on. SDXL and SD3 get one file per CLIP stream; T5 is not calibrated.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("weights", "report")
    OUTPUT_TOOLTIPS = ("File name(s) of the calibrated weights, comma-separated.", "Calibration report as JSON.")
    FUNCTION = "calibrate"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        spec = FIELD_BY_NAME["concepts"]
        return {"required": {
            "clip": ("CLIP", {"tooltip": "The CLIP to calibrate for (its text-encoder weights and clip skip)."}),
            "concepts": ("STRING", {"multiline": True, "default": spec.default, "tooltip": spec.tooltip}),
            "stream": (["all", "clip_l", "clip_g", "clip_h"], {"default": "all", "tooltip":
                       "Which CLIP stream to calibrate; 'all' calibrates every CLIP stream of the model."}),
            "retrain": ("BOOLEAN", {"default": False, "tooltip":
                        "Train again even when a file for this encoder and concept list exists."}),
            "file_prefix": ("STRING", {"default": "es-comfyui", "tooltip":
                            "Start of the file name; the stream and an encoder fingerprint are appended."}),
        }}

    def calibrate(self, clip, concepts, stream="all", retrain=False, file_prefix="es-comfyui"):
        try:
            from embedding_sanitizer.train import calibrate as run_calibration
        except ImportError as exc:
            raise RuntimeError("Calibrate Embedding Sanitizer: the calibration module (embedding_sanitizer.train) "
                               f"is not available in this installation ({exc})") from exc
        concept_list = parse_concepts(concepts)
        if not concept_list:
            raise ValueError("Calibrate Embedding Sanitizer: the concept list is empty")
        inner = unwrap(clip.cond_stage_model)
        family, streams = family_of(inner)
        if family is None:
            raise ValueError(f"Calibrate Embedding Sanitizer: text encoder {type(inner).__name__} is not supported")
        streams = [s for s in streams if s != "t5xxl" and stream in ("all", s)]
        if not streams:
            raise ValueError(f"Calibrate Embedding Sanitizer: this {family} CLIP has no stream {stream!r}")
        inner.reset_clip_options()
        if clip.layer_idx is not None:
            inner.set_clip_options({"layer": clip.layer_idx})
        clip.load_model()
        try:
            import comfy.utils

            bar = comfy.utils.ProgressBar(100)
        except Exception:  # noqa: BLE001 - outside ComfyUI
            bar = None
        names, reports = [], {}
        prefix = re.sub(r"[^A-Za-z0-9_.-]+", "-", file_prefix).strip("-") or "es-comfyui"
        for name in streams:
            sub = getattr(inner, name)
            encoder = ComfyStreamEncoder(family, name, sub, getattr(clip.tokenizer, name, None),
                                         layout_for(family, name, sub))
            reuse = None if retrain else _existing(encoder, concept_list)
            if reuse:
                names.append(reuse)
                reports[name] = {"reused": reuse}
                continue
            out_path = save_folder() / f"{prefix}-{family}-{name}-{short_fingerprint(encoder.cache_key)}.safetensors"
            result = run_calibration(encoder, list(concept_list), out_path, progress=_progress_callback(bar))
            names.append(out_path.name)
            reports[name] = {"file": out_path.name, "result": result if isinstance(result, (dict, list, str))
                             else str(result)}
        text = ", ".join(names)
        return {"ui": {"text": [text]}, "result": (text, json.dumps(reports, indent=1, default=str))}
