"""The hook: a class-level wrap of the webui text model's forward.

* A1111: ``modules.sd_hijack_clip.TextConditionalModel.forward``. Every SD1, SD2 and
  SDXL embedder derives from it (``FrozenCLIPEmbedderWithCustomWordsBase.forward`` calls
  ``super().forward``), and a class-level patch survives checkpoint reloads, which
  recreate the instances.
* Forge: ``backend.text_processing.classic_engine.ClassicTextProcessingEngine.__call__``.

What the wrapper does depends on the hook's state:

* a ``Refusal`` (a generation whose set-up failed: invalid arguments without a lock, an
  unreadable policy file, an error inside the extension): it raises ``RefusedError`` before
  the host encodes anything. The webui swallows exceptions from a script's ``process()``
  and generates anyway, but not exceptions from the text model's forward: the API answers
  with an HTTP error and the UI shows the error, and no image is made. ``lifecycle`` arms a
  refusal first thing in ``process()`` and replaces it only once the run is valid, so no
  error path leaves the hook unarmed;
* a ``RunState`` (an active run): it calls the original and sanitizes the output with the
  exact chunk token ids from ``process_texts``, returning a new tensor of the same shape
  (and, for SDXL CLIP-G, a new pooled vector cleaned in its own concept span: ``pooled``).
  An exception while sanitizing propagates (the generation fails with the reason) unless the
  run may fail open (``on_error: open`` without a lock), in which case the host's output is
  returned and the run's notes say so;
* no state (the extension is off, or the call happens outside a generation): the host's own
  result object, so behaviour is exactly the host's -- unless ``idle_state`` (set by
  ``webui``) says a lock is in force: then the call is sanitized with the policy's settings
  (a generation whose ``process()`` never ran, e.g. a processing object without scripts),
  or refused when the policy cannot be read.

A call inside ``Hook.bypass()`` (the svf schedule's way to get the original conditioning
next to the sanitized one) always returns the host's own output.

Conditioning caches: the webui keys them on prompts and model settings only, not on
extension state. ``shadow_cond_caches`` gives the processing object fresh, empty cache
lists for the run (``cached_c``/``cached_uc`` and the hires ``cached_hr_c``/``cached_hr_uc``,
two elements in A1111 and three in Forge), so a sanitized result is never served to a
run without the sanitizer and a cached original is never served to a run with it.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import threading
from typing import Callable

from .encoder import adapter_for
from .runtime import Runtime, RunState, sanitize_output

log = logging.getLogger("embedding_sanitizer.a1111")

TARGETS = (
    ("modules.sd_hijack_clip", "TextConditionalModel", "forward"),
    ("backend.text_processing.classic_engine", "ClassicTextProcessingEngine", "__call__"),
)
#: Gates: entry points that can encode without reaching a target. A1111's SD1 embedder takes its own path
#: with "Use old emphasis implementation" on (``sd_hijack_clip_old.forward_old``), never calling
#: ``TextConditionalModel.forward``; the gate refuses there whenever the hook would refuse or sanitize.
GATES = (
    ("modules.sd_hijack_clip", "FrozenCLIPEmbedderWithCustomWordsBase", "forward"),
)
COND_CACHES = ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc")
MARK = "_embedding_sanitizer_original"


class RefusedError(RuntimeError):
    """The text model was called in a generation the sanitizer must not let through; says why."""


class Refusal:
    """Hook state of a generation that may not encode: ``reason`` is what the user is told."""

    def __init__(self, reason: str, owner=None) -> None:
        self.reason = reason
        self.owner = owner

    def __repr__(self) -> str:
        return f"Refusal({self.reason!r})"


class Hook:
    def __init__(self, runtime: Runtime, layer_tag: Callable[[], str] | None = None,
                 idle_state: Callable[[], "RunState | Refusal | None"] | None = None,
                 unservable: Callable[[], str] | None = None) -> None:
        self.runtime = runtime
        self.layer_tag = layer_tag
        #: the state for text-model calls outside an active run (``webui.idle_state``: a lock's settings)
        self.idle_state = idle_state
        #: why the host's current options cannot be sanitized ("" when they can): checked by the gates
        self.unservable = unservable
        self._state: RunState | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self.patched: list[tuple[type, str]] = []

    # ------------------------------------------------------------- patching
    def install(self) -> list[str]:
        """Patch every target (and gate) class that imports here; idempotent. Returns the patched targets."""
        for module_name, class_name, attr in GATES:
            self._patch(module_name, class_name, attr, self._gate)
        for module_name, class_name, attr in TARGETS:
            self._patch(module_name, class_name, attr, self._wrap)
        gates = {(m, c) for m, c, _ in GATES}
        return [f"{cls.__module__}.{cls.__name__}.{attr}" for cls, attr in self.patched
                if (cls.__module__, cls.__name__) not in gates]

    def _patch(self, module_name: str, class_name: str, attr: str, wrap) -> None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return
        cls = getattr(module, class_name, None)
        if cls is None or (cls, attr) in self.patched:
            return
        current = cls.__dict__.get(attr)
        if current is None:
            log.warning("Embedding Sanitizer: %s.%s has no %s; not hooked", module_name, class_name, attr)
            return
        if getattr(current, MARK, None) is not None:  # a previous load of this extension
            current = getattr(current, MARK)
        setattr(cls, attr, wrap(current))
        self.patched.append((cls, attr))

    def uninstall(self) -> None:
        """Put the originals back (only where our wrapper is still the class attribute)."""
        self.deactivate()
        for cls, attr in self.patched:
            current = cls.__dict__.get(attr)
            original = getattr(current, MARK, None)
            if original is not None:
                setattr(cls, attr, original)
            else:
                log.warning("Embedding Sanitizer: %s.%s was re-wrapped by another extension; leaving it "
                            "(the sanitizer stays inactive)", cls.__name__, attr)
        self.patched.clear()

    def _state_for_call(self):
        state = self._state
        if state is None and self.idle_state is not None:
            state = self.idle_state()
        return state

    def _gate(self, original):
        hook = self

        @functools.wraps(original)
        def embedding_sanitizer_gate(model, texts, *args, **kwargs):
            if not hook.bypassed:
                state = hook._state_for_call()
                if isinstance(state, Refusal):
                    raise RefusedError(state.reason)
                reason = hook.unservable() if state is not None and hook.unservable is not None else ""
                if reason:
                    raise RefusedError(reason)
            return original(model, texts, *args, **kwargs)

        setattr(embedding_sanitizer_gate, MARK, original)
        return embedding_sanitizer_gate

    def _wrap(self, original):
        hook = self

        @functools.wraps(original)
        def embedding_sanitizer_forward(model, texts, *args, **kwargs):
            if hook.bypassed:
                return original(model, texts, *args, **kwargs)
            state = hook._state_for_call()
            if isinstance(state, Refusal):
                raise RefusedError(state.reason)
            out = original(model, texts, *args, **kwargs)
            if state is None:
                return out
            if getattr(texts, "is_negative_prompt", False) and not state.settings.sanitize_negative:
                return out
            try:
                encoder = adapter_for(model, hook.layer_tag)
                return sanitize_output(hook.runtime, state, encoder, texts, out)
            except Exception as exc:  # noqa: BLE001 - fail closed unless this run may fail open
                if not state.fail_open:
                    if isinstance(exc, RefusedError):
                        raise
                    raise RefusedError(f"Embedding Sanitizer could not sanitize this prompt, so the generation "
                                       f"is stopped: {type(exc).__name__}: {exc}") from exc
                state.note_once(f"on_error open: the sanitizer failed ({type(exc).__name__}: {exc}); this "
                                "prompt's conditioning is the host's own, unsanitized")
                return out

        setattr(embedding_sanitizer_forward, MARK, original)
        return embedding_sanitizer_forward

    # ---------------------------------------------------------------- state
    def activate(self, state: "RunState | Refusal") -> None:
        with self._lock:
            self._state = state

    def refuse(self, reason: str, owner=None) -> Refusal:
        """Arm a refusal: every text-model call raises ``RefusedError(reason)`` until the next activation."""
        refusal = Refusal(reason, owner)
        self.activate(refusal)
        return refusal

    def deactivate(self, owner=None) -> RunState | None:
        """Stop sanitizing; with ``owner`` only if the active run belongs to it. Returns the old state."""
        with self._lock:
            state = self._state
            if owner is None or (state is not None and state.owner is owner):
                self._state = None
            return state

    @property
    def state(self) -> "RunState | Refusal | None":
        return self._state

    @property
    def bypassed(self) -> bool:
        return getattr(self._local, "bypass", 0) > 0

    @contextlib.contextmanager
    def bypass(self):
        """In this thread, let text-model calls return the host's own output (the svf schedule's originals)."""
        self._local.bypass = getattr(self._local, "bypass", 0) + 1
        try:
            yield
        finally:
            self._local.bypass -= 1


def shadow_cond_caches(p) -> dict[str, list]:
    """Give ``p`` fresh empty conditioning-cache lists of the host's length (2 in A1111, 3 in Forge).

    Returns the lists ``p`` held before, by attribute name (to put back when the run turns out to be off)."""
    done = {}
    for name in COND_CACHES:
        cache = getattr(p, name, None)
        if isinstance(cache, list):
            setattr(p, name, [None] * len(cache))
            done[name] = cache
    return done
