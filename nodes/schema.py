"""ComfyUI input specs generated from the core's single settings schema (``FIELDS``)."""
from __future__ import annotations

from embedding_sanitizer import FIELDS, Settings

from .weights import AUTO, AUTO_CALIBRATE, NONE, weight_choices

CATEGORY = "safety/embedding_sanitizer"
# The negative prompt is whatever the user wires to the un-patched CLIP in ComfyUI.
NOT_IN_COMFYUI = ("sanitize_negative",)
WEIGHTS_TOOLTIP = (" 'auto' uses, per text-encoder stream, the first file calibrated for that encoder; "
                   "'auto-calibrate' does the same and, when no file matches, calibrates one in the background "
                   "(once per encoder; the training-free projection is used until it is ready, with a note); "
                   "'none' uses no learned weights. Files are listed from the pack's weights/ folder and "
                   "ComfyUI's models/embedding_sanitizer folder.")


def settings_inputs() -> dict:
    inputs = {}
    for spec in FIELDS:
        if spec.name in NOT_IN_COMFYUI:
            continue
        options = {"default": spec.default, "tooltip": spec.tooltip}
        if spec.kind is bool:
            inputs[spec.name] = ("BOOLEAN", options)
        elif spec.kind is float:
            options.update(min=spec.minimum, max=spec.maximum, step=spec.step, display="slider")
            inputs[spec.name] = ("FLOAT", options)
        elif spec.name == "weights":
            inputs[spec.name] = (weight_choices(), {"default": AUTO, "tooltip": spec.tooltip + WEIGHTS_TOOLTIP})
        elif spec.choices:
            inputs[spec.name] = (list(spec.choices), options)
        else:
            options["multiline"] = spec.name == "concepts"
            inputs[spec.name] = ("STRING", options)
    return inputs


def settings_from_inputs(kwargs: dict) -> tuple[Settings, str]:
    """(validated Settings, weights choice) from the node's keyword arguments."""
    values = {spec.name: kwargs[spec.name] for spec in FIELDS
              if spec.name in kwargs and spec.name not in NOT_IN_COMFYUI}
    choice = str(values.get("weights", AUTO) or AUTO)
    values["weights"] = "" if choice in (AUTO, AUTO_CALIBRATE, NONE) else choice
    return Settings.from_dict(values), choice
