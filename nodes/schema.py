"""ComfyUI input specs generated from the core's single settings schema (``FIELDS``)."""
from __future__ import annotations

import logging

from embedding_sanitizer import FIELDS, Policy, Settings, SettingsError

from . import policy as admin_policy
from .weights import AUTO, AUTO_CALIBRATE, NONE, file_name, weight_choices

log = logging.getLogger("embedding_sanitizer.comfyui")

CATEGORY = "safety/embedding_sanitizer"
# The negative prompt is whatever the user wires to the un-patched CLIP in ComfyUI; under a server-scope
# policy the policy's own sanitize_negative decides (nodes/negative.py).
NOT_IN_COMFYUI = ("sanitize_negative",)
WEIGHTS_TOOLTIP = (" 'auto' uses, per text-encoder stream, the first file calibrated for that encoder; "
                   "'auto-calibrate' does the same and, when no file matches, calibrates one in the background "
                   "(once per encoder; the training-free projection is used until it is ready, with a note); "
                   "'none' uses no learned weights. Files are listed from the pack's weights/ folder and "
                   "ComfyUI's models/embedding_sanitizer folder, labelled with the CLIP layout and width they "
                   "were calibrated for; files for other encoders (the bundled MiniLM demo weights) are not "
                   "offered, and the node's report says which files did not match the connected CLIP and why.")


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
    choice = file_name(str(values.get("weights", AUTO) or AUTO))  # a dropdown label names its file
    values["weights"] = "" if choice in (AUTO, AUTO_CALIBRATE, NONE) else choice
    return Settings.from_dict(values), choice


def node_settings(kwargs: dict, node: str) -> tuple[Settings | None, str, list[str], Policy]:
    """(settings after the admin policy, weights choice, notes, the policy) for a sanitizer node.

    Settings a graph sends that are invalid raise ``SettingsError`` (the prompt fails, the node turns
    red), naming the policy when one is in force. Only a locked policy with ``on_error: open`` lets the
    node pass its input through instead: then settings is None and a warning is logged. A broken policy
    file raises whatever the graph sends.
    """
    policy = admin_policy.current_policy()
    try:
        settings, choice = settings_from_inputs(kwargs)
        settings, notes = admin_policy.enforce(settings)
    except SettingsError as exc:
        if admin_policy.fails_open(policy):
            log.warning("Embedding Sanitizer: %s: invalid settings (%s); passed through unsanitized because the "
                        "admin policy (%s) says on_error: open", node, exc, admin_policy.LABEL)
            return None, AUTO, [f"invalid settings passed through (on_error: open): {exc}"], policy
        if admin_policy.in_force(policy):
            raise SettingsError(f"{node}: the admin policy ({admin_policy.LABEL}) is in force and the settings "
                                f"sent are invalid, so nothing is generated: {exc}") from None
        raise
    return settings, choice, notes, policy
