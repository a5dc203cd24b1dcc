"""What the always-visible script does at each step of a generation.

The webui reports and swallows every exception a script callback raises, then generates
anyway, so nothing here raises: an error becomes a ``Refusal`` armed on the hook, and the
text model's forward (whose exceptions the webui does not swallow) refuses to encode.

``before_process`` (before the webui applies ``override_settings``): make sure the webui
puts back the options the sanitizer depends on after the request.
``process`` (before the batch loop): arm a refusal, shadow the conditioning caches, resolve
the arguments (UI or ``alwayson_scripts``) against the Settings-page defaults, enforce the
administrator policy, write the infotext and activate the hook for this processing object.
``process_batch`` (before ``setup_conds``) and ``before_hr``: make sure this run is the
active one and, with the svf schedule, that the loaded checkpoint keeps the original
conditioning next to the sanitized one (``svf``).
``postprocess``: deactivate and keep the heatmap of the prompts actually used.
"""
from __future__ import annotations

import logging
import uuid

from . import schema, webui
from .hook import Refusal, shadow_cond_caches
from .runtime import RunState

log = logging.getLogger("embedding_sanitizer.a1111")
_current: list = [None, None]  # [processing object, RunState]


COMPAT_OPTIONS = ("use_old_emphasis_implementation",)  # host options the hook cannot serve
OLD_EMPHASIS = ("Embedding Sanitizer cannot sanitize with 'Use old emphasis implementation' on (Settings > "
                "Compatibility, or a request's override_settings): turn it off, or turn the sanitizer off")
FLAGGED_KEY = "ES flagged"  # infotext key of the flagged words (per image)
NOTE_KEY = "ES note"  # infotext key of what the encodes noted (auto-calibration running, a skipped weights file)
INCOMPLETE = "Embedding Sanitizer: this generation's set-up did not complete; see the console"


def before_process(p) -> None:
    """Before the webui applies ``override_settings``: make sure it will put back every option we depend on.

    The webui restores only overridden options that are already in ``opts.data`` (saved in config.json
    or set since startup); one that never was keeps the request's value for every later generation.
    Recording its current value (its default) in ``opts.data`` changes nothing it reads, and makes the
    webui's own restore cover it."""
    overrides = getattr(p, "override_settings", None) or {}
    if not overrides or not getattr(p, "override_settings_restore_afterwards", True):
        return
    opts = webui._shared().opts
    for key in overrides:
        if (key in COMPAT_OPTIONS or key.startswith(schema.OPTION_PREFIX)) and key not in opts.data \
                and key in opts.data_labels:
            opts.data[key] = getattr(opts, key)


def start(p, args, tab: str) -> RunState | None:
    """``process()``: never raises (the webui would swallow it and generate without the sanitizer).

    The hook is armed with a refusal before anything can fail, and the conditioning caches of ``p``
    are shadowed so no cached original can be served. The refusal is replaced only by a valid run
    state, or lifted when the sanitizer is validly off. Any error leaves it armed with the reason,
    so the first text encode raises and the user gets the error instead of an unsanitized image --
    unless ``on_error`` is ``open`` and no lock is in force: then the error is logged, written to the
    infotext and the host generates without the sanitizer."""
    webui.HOOK.refuse(INCOMPLETE, owner=p)
    _current[:] = [None, None]
    saved: dict = {}
    try:
        saved = shadow_cond_caches(p)
        webui.SVF.detach_all()
        state = _prepare(p, args)
    except Exception as exc:  # noqa: BLE001 - turned into a refusal (or a logged pass-through)
        _failed(p, exc, saved)
        return None
    if state is None:  # validly off: the host's own behaviour, shared caches included
        _restore_caches(p, saved)
        webui.HOOK.deactivate()
        return None
    _current[:] = [p, state]
    webui.HOOK.activate(state)
    try:
        _attach_svf(p)
    except Exception as exc:  # noqa: BLE001 - without the schedule the run stays sanitized at every step
        state.note_once(f"schedule svf not applied ({type(exc).__name__}: {exc}); every step is sanitized")
    return state


def _prepare(p, args) -> RunState | None:
    settings, notes = webui.resolve(args)
    if notes:
        log.info("Embedding Sanitizer: %s", "; ".join(notes))
    if not settings.enabled or settings.mode == "off":
        return None
    opts = webui._shared().opts
    if any(getattr(opts, key, False) for key in COMPAT_OPTIONS):
        raise RuntimeError(OLD_EMPHASIS)
    if not webui.HOOK.install():
        raise RuntimeError("Embedding Sanitizer found no supported text model class in this webui "
                           "(modules.sd_hijack_clip.TextConditionalModel or Forge's ClassicTextProcessingEngine)")
    state = RunState(settings, list(notes), owner=p, fail_open=_may_fail_open(), audit=webui.audit_log(),
                     request_id=uuid.uuid4().hex)
    p.extra_generation_params.update(schema.infotext_params(settings))
    if notes:
        p.extra_generation_params["ES policy"] = "; ".join(notes)
    p.extra_generation_params[FLAGGED_KEY] = _flagged_param(state)
    p.extra_generation_params[NOTE_KEY] = _note_param(state, len(state.notes))
    if state.audit is not None:
        p.extra_generation_params["ES audit id"] = state.request_id
    return state


def _failed(p, exc: Exception, saved: dict) -> None:
    reason = str(exc) if str(exc).startswith("Embedding Sanitizer") else f"Embedding Sanitizer: {exc}"
    if _may_fail_open():
        log.error("%s -- on_error is open and no lock is in force: generating WITHOUT the sanitizer", reason)
        _restore_caches(p, saved)
        webui.HOOK.deactivate()
        p.extra_generation_params["ES error"] = f"{reason} (on_error open: not sanitized)"
        return
    log.error("%s -- the generation is refused", reason)
    webui.HOOK.refuse(f"{reason} (the generation was refused)", owner=p)


def _may_fail_open() -> bool:
    try:
        return webui.on_error() == "open" and not webui.current_policy().locked
    except Exception:  # noqa: BLE001 - the policy cannot even be read: closed
        return False


def _restore_caches(p, saved: dict) -> None:
    for name, cache in saved.items():
        setattr(p, name, cache)


def ensure_active(p) -> None:
    """Before each batch's ``setup_conds``: this run's state must be the active one (never raises)."""
    owner, state = _current
    if owner is not p or state is None:
        return
    try:
        if webui.HOOK.state is not state:
            webui.HOOK.activate(state)
        _attach_svf(p)
    except Exception as exc:  # noqa: BLE001
        if state.fail_open:
            state.note_once(f"batch set-up failed ({type(exc).__name__}: {exc})")
        else:
            webui.HOOK.refuse(f"Embedding Sanitizer: the batch set-up failed: {exc} (the generation was refused)", p)


def _attach_svf(p) -> None:
    """svf schedule: keep originals next to the sanitized conds of the model about to encode."""
    owner, state = _current
    if owner is not p or state is None or state.settings.schedule != "svf":
        return
    model = getattr(webui._shared(), "sd_model", None)
    webui.SVF.attach(model)
    if getattr(p, "sd_model", None) is not None and p.sd_model is not model:
        webui.SVF.attach(p.sd_model)


def finish(p, tab: str, processed=None) -> dict | None:
    """``postprocess()``: deactivate, make the infotext values plain (for the JSON ``info``), keep the report."""
    owner, state = _current
    refusal = webui.HOOK.state
    if isinstance(refusal, Refusal) and refusal.owner is p:  # refused, but the text model was never called
        webui.HOOK.deactivate()
    if owner is not p or state is None:
        return None
    webui.HOOK.deactivate()
    webui.SVF.detach_all()
    _current[:] = [None, None]
    if state.calls == 0:
        note = "the text model was not called during this generation; nothing was sanitized"
        state.notes.append(note)
        log.warning("Embedding Sanitizer: %s", note)
    try:
        _store_flagged(p, processed, state)
    except Exception:  # noqa: BLE001 - the infotexts already carry the values; only the JSON copy is missing
        log.exception("Embedding Sanitizer: could not store the flagged words for the JSON info")
    return webui.store_report(tab, state, state.settings, state.notes)


def _image_prompts(p, index) -> tuple[str, ...]:
    """The prompts one image was made from: its prompt and, with hires fix, its hires prompt."""
    out = []
    for name in ("all_prompts", "all_hr_prompts"):
        prompts = getattr(p, name, None)
        if isinstance(prompts, list) and index is not None and 0 <= index < len(prompts):
            out.append(str(prompts[index]))
    return tuple(out)


def _flagged_param(state: RunState):
    """Infotext value computed per image when the infotext is written (after the conds exist).

    The webui calls it with ``create_infotext``'s locals (``p``, ``index``, ...). Its JSON ``info`` cannot
    evaluate a callable (it writes ``null``), so ``finish`` replaces it with plain values (``flagged_values``)."""
    def flagged(**kwargs):
        p, index = kwargs.get("p"), kwargs.get("index")
        prompts = _image_prompts(p, index) if p is not None else ()
        if not prompts:
            all_prompts = kwargs.get("all_prompts")
            if all_prompts is not None and index is not None and index < len(all_prompts):
                prompts = (all_prompts[index],)
        return state.flagged_summary(*prompts)
    return flagged


def _note_param(state: RunState, known: int):
    """Infotext value: the notes the encodes added (``state.note_once``) after ``process()`` wrote the policy's
    (``None``, dropped by the webui, when there are none); plain text for the JSON ``info`` after ``finish``."""
    def note(**kwargs):
        return "; ".join(state.notes[known:]) or None
    return note


def flagged_values(p, state: RunState):
    """Plain ``ES flagged`` value(s) for the run: one string when every image has the same (``None`` when
    nothing was flagged), else a list with one entry per image (the webui's own per-image convention)."""
    count = len(getattr(p, "all_prompts", None) or []) or 1
    values = [state.flagged_summary(*_image_prompts(p, i)) for i in range(count)]
    return values[0] if len(set(values)) == 1 else values


def _store_flagged(p, processed, state: RunState) -> None:
    """Replace the per-image callables by plain values in the dicts the webui serialises (``p`` and the
    ``Processed``, which normally share one dict). Nothing to say: the key is dropped, as in the infotext."""
    targets = [getattr(p, "extra_generation_params", None), getattr(processed, "extra_generation_params", None)]
    for key, value in ((FLAGGED_KEY, lambda: flagged_values(p, state)), (NOTE_KEY, None)):
        done = []
        for params in targets:
            if not isinstance(params, dict) or any(params is d for d in done) or not callable(params.get(key)):
                continue
            done.append(params)
            plain = value() if value is not None else params[key]()
            if plain is None:
                del params[key]
            else:
                params[key] = plain
