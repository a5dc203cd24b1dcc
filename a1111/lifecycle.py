"""What the always-visible script does at each step of a generation.

``process`` (before the batch loop): resolve the arguments (UI or ``alwayson_scripts``)
against the Settings-page defaults, enforce the administrator policy, write the infotext,
shadow the conditioning caches and activate the hook for this processing object.
``process_batch`` (before ``setup_conds``) and ``before_hr``: make sure this run is the
active one and, with the svf schedule, that the loaded checkpoint keeps the original
conditioning next to the sanitized one (``svf``).
``postprocess``: deactivate and keep the heatmap of the prompts actually used.
"""
from __future__ import annotations

import logging

from . import schema, webui
from .hook import shadow_cond_caches
from .runtime import RunState

log = logging.getLogger("embedding_sanitizer.a1111")
_current: list = [None, None]  # [processing object, RunState]


def start(p, args, tab: str) -> RunState | None:
    webui.HOOK.deactivate()  # a run that failed half-way never leaves the hook active
    webui.SVF.detach_all()
    _current[:] = [None, None]
    settings, notes = webui.resolve(args)
    if notes:
        log.info("Embedding Sanitizer: %s", "; ".join(notes))
    if not settings.enabled or settings.mode == "off":
        return None
    opts = webui._shared().opts
    if getattr(opts, "use_old_emphasis_implementation", False):
        raise RuntimeError("Embedding Sanitizer cannot sanitize with 'Use old emphasis implementation' on "
                           "(Settings > Compatibility): turn it off, or turn the sanitizer off")
    if not webui.HOOK.install():
        raise RuntimeError("Embedding Sanitizer found no supported text model class in this webui "
                           "(modules.sd_hijack_clip.TextConditionalModel or Forge's ClassicTextProcessingEngine)")
    state = RunState(settings, list(notes), owner=p)
    shadow_cond_caches(p)
    p.extra_generation_params.update(schema.infotext_params(settings))
    if notes:
        p.extra_generation_params["ES policy"] = "; ".join(notes)
    p.extra_generation_params["ES flagged"] = _flagged_param(state)
    _current[:] = [p, state]
    webui.HOOK.activate(state)
    _attach_svf(p)
    return state


def ensure_active(p) -> None:
    """Before each batch's ``setup_conds``: this run's state must be the active one."""
    owner, state = _current
    if owner is p and state is not None and webui.HOOK.state is not state:
        webui.HOOK.activate(state)
    if owner is p and state is not None:
        _attach_svf(p)


def _attach_svf(p) -> None:
    """svf schedule: keep originals next to the sanitized conds of the model about to encode."""
    owner, state = _current
    if owner is not p or state is None or state.settings.schedule != "svf":
        return
    model = getattr(webui._shared(), "sd_model", None)
    webui.SVF.attach(model)
    if getattr(p, "sd_model", None) is not None and p.sd_model is not model:
        webui.SVF.attach(p.sd_model)


def finish(p, tab: str) -> dict | None:
    owner, state = _current
    if owner is not p or state is None:
        return None
    webui.HOOK.deactivate()
    webui.SVF.detach_all()
    _current[:] = [None, None]
    if state.calls == 0:
        note = "the text model was not called during this generation; nothing was sanitized"
        state.notes.append(note)
        log.warning("Embedding Sanitizer: %s", note)
    return webui.store_report(tab, state, state.settings, state.notes)


def _flagged_param(state: RunState):
    """Infotext value computed per image when the infotext is written (after the conds exist)."""
    def flagged(**kwargs):
        prompts, index = kwargs.get("all_prompts"), kwargs.get("index")
        prompt = prompts[index] if prompts is not None and index is not None and index < len(prompts) else ""
        return state.flagged_summary(prompt)
    return flagged
