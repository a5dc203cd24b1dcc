"""Gradio UI: the Settings-page section and the txt2img/img2img accordion, both from ``FIELDS``."""
from __future__ import annotations

import html
import logging

from embedding_sanitizer import FIELDS, MODES, PRESETS, Settings
from embedding_sanitizer.settings import FIELD_BY_NAME

from embedding_sanitizer.calibration_run import DEFAULT_TIME_BUDGET_S

from . import schema, webui
from .auto_calibration import AUTO_CALIBRATE
from .calibration import DEVICES, make_calibrate_fn

log = logging.getLogger("embedding_sanitizer.a1111")


# ------------------------------------------------------------ Settings page
def weight_choices() -> list[str]:
    """The weights dropdown after its empty entry (= auto): ``auto-calibrate``, then the files found."""
    return [AUTO_CALIBRATE] + webui.RUNTIME.weights.names()


def register_options(shared, gr) -> list[str]:
    """Add the Embedding Sanitizer section to the Settings page (call from ``on_ui_settings``)."""
    section = schema.SECTION
    defaults = Settings.from_dict(webui.file_defaults())
    added = []

    def add(key, info):
        shared.opts.add_option(key, info)
        added.append(key)

    for spec in FIELDS:
        default = getattr(defaults, spec.name)
        label = "Enabled by default (txt2img, img2img and the API)" if spec.name == "enabled" \
            else f"Default {spec.label.lower()}"
        if spec.name == "weights":
            info = shared.OptionInfo(default, label, gr.Dropdown,
                                     lambda: {"choices": [""] + weight_choices()},
                                     refresh=lambda: None, section=section)
        else:
            kwargs = schema.component_kwargs(spec, default)
            kwargs.pop("label"), kwargs.pop("value")
            info = shared.OptionInfo(default, label, schema.component_class(spec, gr), kwargs, section=section)
        add(schema.option_key(spec.name), info.info(spec.tooltip))

    add(webui.LIVE_KEY, shared.OptionInfo(True, "Live heatmap under the prompt box", gr.Checkbox,
                                          {"interactive": True}, section=section))
    lock_note = ("administrators: changed only on this page, never through the API or override_settings; "
                 "empty required concepts keep the default list")
    guard = webui.SEAL.onchange
    opts = shared.opts
    add(webui.LOCK_KEY, shared.OptionInfo(
        False, "Administrator lock: the UI and the API cannot switch the sanitizer off or below the floor",
        gr.Checkbox, {"interactive": True}, section=section, restrict_api=True,
        onchange=guard(opts, webui.LOCK_KEY)).info(lock_note))
    spec = FIELD_BY_NAME["intensity"]
    add(webui.FLOOR_KEY, shared.OptionInfo(
        1.0, "Locked: minimum intensity", gr.Slider,
        {"minimum": spec.minimum, "maximum": spec.maximum, "step": spec.step}, section=section,
        restrict_api=True, onchange=guard(opts, webui.FLOOR_KEY)))
    add(webui.FORCED_KEY, shared.OptionInfo(
        "", "Locked: force this method (empty: keep the user's, never 'off')", gr.Dropdown,
        {"choices": [""] + [m for m in MODES if m != "off"]}, section=section, restrict_api=True,
        onchange=guard(opts, webui.FORCED_KEY)))
    add(webui.REQUIRED_KEY, shared.OptionInfo(
        "", "Locked: concepts that are always removed (comma-separated; empty: the default concepts)",
        gr.Textbox, {"lines": 1}, section=section, restrict_api=True, onchange=guard(opts, webui.REQUIRED_KEY)))
    if not webui.SEAL.sealed:  # once per load of the extension: config.json as the webui loaded it at startup
        webui.SEAL.seal(opts)
    return added


# ---------------------------------------------------------------- accordion
def build_accordion(script, is_img2img: bool, gr) -> list:
    """Build the accordion; returns the input components in ``schema.ARG_NAMES`` order."""
    problem = ""
    try:
        defaults = webui.default_settings()
        policy = webui.current_policy()
    except Exception as exc:  # noqa: BLE001 - show the problem in the UI; generation will refuse
        defaults, policy, problem = Settings(), None, str(exc)
    names = weight_choices()
    comps: dict[str, object] = {}

    def make(name):
        comps[name] = schema.make_component(FIELD_BY_NAME[name], gr, getattr(defaults, name), script.elem_id(name),
                                            weight_choices=names if name == "weights" else None)

    with gr.Accordion(webui.TITLE, open=False, elem_id=script.elem_id("accordion")):
        if problem:
            gr.HTML(f'<p class="es-error">{html.escape(problem)}</p>')
        elif policy is not None and policy.locked:
            gr.HTML('<p class="es-locked">Locked by the administrator: the sanitizer stays on with intensity '
                    f'at least {policy.min_intensity:g}'
                    + (f", method {html.escape(policy.forced_mode)}" if policy.forced_mode else "") + ".</p>")
        with gr.Row():
            for name in ("enabled", "preset", "mode"):
                make(name)
        make("intensity")
        make("concepts")
        with gr.Accordion("Advanced", open=False, elem_id=script.elem_id("advanced")):
            with gr.Row():
                make("weights")
                refresh = gr.Button("Refresh weights", elem_id=script.elem_id("refresh"), size="sm")
            with gr.Row():
                for name in ("detector", "eos_policy", "schedule"):
                    make(name)
            make("sanitize_negative")
            with gr.Row():
                budget = gr.Number(value=DEFAULT_TIME_BUDGET_S, label="Calibration time budget (seconds)",
                                   precision=0, minimum=10, elem_id=script.elem_id("calibrate_budget"))
                device = gr.Dropdown(choices=list(DEVICES), value="auto", label="Calibration device",
                                     elem_id=script.elem_id("calibrate_device"))
                threads = gr.Number(value=0, label="CPU threads (0: torch's setting)", precision=0, minimum=0,
                                    elem_id=script.elem_id("calibrate_threads"))
            with gr.Row():
                calibrate = gr.Button("Calibrate for this checkpoint", elem_id=script.elem_id("calibrate"))
            status = gr.HTML("", elem_id=script.elem_id("calibrate_status"))
        gr.HTML('<div class="es-heatmap-empty">The heatmap of the prompts used appears here after a generation.</div>',
                elem_id=script.elem_id("heatmap"), elem_classes=["es-heatmap-box"])

    preset, intensity = comps["preset"], comps["intensity"]
    intensity.release(fn=lambda: "custom", inputs=[], outputs=[preset], show_progress=False)
    preset.change(fn=_preset_intensity, inputs=[preset, intensity], outputs=[intensity], show_progress=False)
    refresh.click(fn=lambda: gr.update(choices=[""] + weight_choices()), inputs=[],
                  outputs=[comps["weights"]], show_progress=False)
    calibrate.click(fn=make_calibrate_fn(gr), inputs=[comps["concepts"], budget, device, threads], outputs=[status])

    script.infotext_fields = [(comps[name], FIELD_BY_NAME[name].infotext) for name in schema.ARG_NAMES]
    script.paste_field_names = [FIELD_BY_NAME[name].infotext for name in schema.ARG_NAMES]
    return [comps[name] for name in schema.ARG_NAMES]


def _preset_intensity(preset: str, intensity: float) -> float:
    return PRESETS[preset][0] if preset in PRESETS else intensity
