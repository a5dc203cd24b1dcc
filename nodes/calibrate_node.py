"""Calibrate Embedding Sanitizer: train the learned sanitizer for the connected CLIP's streams."""
from __future__ import annotations

import json
import logging
import re

import torch

from embedding_sanitizer.calibration_run import DEFAULT_TIME_BUDGET_S, Cancelled, overall_fraction
from embedding_sanitizer.encoders.base import short_fingerprint
from embedding_sanitizer.settings import FIELD_BY_NAME, parse_concepts
from embedding_sanitizer.weights_io import list_weight_files, read_metadata

from .encoder import ComfyStreamEncoder
from .proxy import unwrap
from .schema import CATEGORY
from .streams import family_of, layout_for
from .weights import folders, save_folder

log = logging.getLogger("embedding_sanitizer.comfyui")
PROGRESS_STEPS = 1000
CACHE_SUBDIR = "cache"


def _progress_callback(bar, index: int = 0, count: int = 1):
    """``calibrate``'s progress calls onto one ComfyUI ProgressBar (0..PROGRESS_STEPS) over all streams."""
    state = {"fraction": 0.0}

    def progress(done, total, message=""):
        state["fraction"] = overall_fraction(done, total, str(message), state["fraction"])
        if bar is not None:
            bar.update_absolute(int(PROGRESS_STEPS * (index + state["fraction"]) / count), PROGRESS_STEPS)
    return progress


def _interrupted() -> bool:
    """ComfyUI's interrupt flag (the Cancel button); read only, so ComfyUI can still raise on it."""
    try:
        import comfy.model_management

        return bool(comfy.model_management.processing_interrupted())
    except Exception:  # noqa: BLE001 - outside ComfyUI
        return False


def _raise_interrupt(exc: Exception):
    """Hand ComfyUI its own interrupt exception (shown as 'interrupted', not as an error)."""
    try:
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()
    except ImportError:
        pass
    raise exc


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
        "diffusion model), with ComfyUI's progress bar and a console line per epoch, and saves it to "
        "models/embedding_sanitizer where the sanitizer nodes list it ('auto' picks it up). The whole run stays "
        "within the time budget (the corpus is sized to fit). Cancel stops it and writes no file. A file already "
        "calibrated for this encoder and concept list is reused unless 'retrain' is on. SDXL and SD3 get one "
        "file per CLIP stream (the budget is shared); T5 is not calibrated. Encoded corpora are cached in "
        "models/embedding_sanitizer/cache (at most 512 MB, oldest removed first).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("weights", "report", "quality")
    OUTPUT_TOOLTIPS = ("File name(s) of the calibrated weights, comma-separated.", "Calibration report as JSON.",
                       "Calibration quality per stream: validation AUROC and preservation share on held-out "
                       "synthetic prompts.")
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
            "time_budget": ("INT", {"default": DEFAULT_TIME_BUDGET_S, "min": 10, "max": 24 * 3600, "step": 10,
                                    "tooltip": "Seconds for the whole calibration (all streams together). A "
                                               "smaller budget trains on fewer prompts; the quality is reported."}),
            "device": (["auto", "cpu", "cuda"], {"default": "auto", "tooltip":
                       "Where the sanitizer network trains ('auto': the GPU when there is one). The corpus is "
                       "encoded where ComfyUI has the CLIP."}),
            "threads": ("INT", {"default": 0, "min": 0, "max": 256, "tooltip":
                        "CPU threads for torch during the run (0: leave torch's setting)."}),
        }}

    def calibrate(self, clip, concepts, stream="all", retrain=False, file_prefix="es-comfyui",
                  time_budget=DEFAULT_TIME_BUDGET_S, device="auto", threads=0):
        try:
            from embedding_sanitizer.train import calibrate as run_calibration, quality_line
        except ImportError as exc:
            raise RuntimeError("Calibrate Embedding Sanitizer: the calibration module (embedding_sanitizer.train) "
                               f"is not available in this installation ({exc})") from exc
        concept_list = parse_concepts(concepts)
        if not concept_list:
            raise ValueError("Calibrate Embedding Sanitizer: the concept list is empty")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("Calibrate Embedding Sanitizer: device 'cuda' was chosen but torch sees no CUDA GPU; "
                             "use 'auto' or 'cpu'")
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

            bar = comfy.utils.ProgressBar(PROGRESS_STEPS)
        except Exception:  # noqa: BLE001 - outside ComfyUI
            bar = None
        names, reports, quality = [], {}, []
        prefix = re.sub(r"[^A-Za-z0-9_.-]+", "-", file_prefix).strip("-") or "es-comfyui"
        per_stream = float(time_budget) / len(streams) if time_budget else None
        for index, name in enumerate(streams):
            sub = getattr(inner, name)
            encoder = ComfyStreamEncoder(family, name, sub, getattr(clip.tokenizer, name, None),
                                         layout_for(family, name, sub))
            reuse = None if retrain else _existing(encoder, concept_list)
            if reuse:
                names.append(reuse)
                reports[name] = {"reused": reuse}
                quality.append(f"{name}: reused {reuse}")
                continue
            out_path = save_folder() / f"{prefix}-{family}-{name}-{short_fingerprint(encoder.cache_key)}.safetensors"
            try:
                result = run_calibration(
                    encoder, list(concept_list), out_path, progress=_progress_callback(bar, index, len(streams)),
                    time_budget_s=per_stream, device=None if device == "auto" else device,
                    threads=int(threads) or None, cache_dir=save_folder() / CACHE_SUBDIR,
                    should_stop=_interrupted, log_line=log.info)
            except Cancelled as exc:
                log.info("Embedding Sanitizer calibration of %s cancelled; no file written", name)
                _raise_interrupt(exc)
            names.append(out_path.name)
            kept = result.get("kept_earlier")
            line = (f"{name}: {kept['reason']}; this run: " if kept else f"{name}: {out_path.name}: ") + (
                    f"{quality_line(result['validation'])}; "
                    f"{result['prompts']} prompts, {result['epochs']} epochs ({result['stopped_by']}), "
                    f"{result['time_s']['total']:.0f} s")
            quality.append(line)
            result = {k: v for k, v in result.items() if k != "history"}
            reports[name] = {"file": out_path.name, "quality": line, "result": result}
        text = ", ".join(names)
        summary = "\n".join(quality)
        return {"ui": {"text": [text, summary]},
                "result": (text, json.dumps(reports, indent=1, default=str), summary)}
