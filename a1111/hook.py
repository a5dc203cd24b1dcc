"""The hook: a class-level wrap of the webui text model's forward.

* A1111: ``modules.sd_hijack_clip.TextConditionalModel.forward``. Every SD1, SD2 and
  SDXL embedder derives from it (``FrozenCLIPEmbedderWithCustomWordsBase.forward`` calls
  ``super().forward``), and a class-level patch survives checkpoint reloads, which
  recreate the instances.
* Forge: ``backend.text_processing.classic_engine.ClassicTextProcessingEngine.__call__``.

The wrapper always calls the original first. With no active run (the extension is off,
or the call happens outside a generation) it returns the original's result object
itself, so behaviour is exactly the host's; so does a call inside ``Hook.bypass()``
(the svf schedule's way to get the original conditioning next to the sanitized one).
During a run it sanitizes the output with the exact chunk token ids from
``process_texts`` and returns a new tensor of the same shape (and, for SDXL CLIP-G, a
new pooled vector cleaned in its own concept span: ``pooled``).

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
COND_CACHES = ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc")
MARK = "_embedding_sanitizer_original"


class Hook:
    def __init__(self, runtime: Runtime, layer_tag: Callable[[], str] | None = None) -> None:
        self.runtime = runtime
        self.layer_tag = layer_tag
        self._state: RunState | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self.patched: list[tuple[type, str]] = []

    # ------------------------------------------------------------- patching
    def install(self) -> list[str]:
        """Patch every target class that imports here; idempotent. Returns the patched names."""
        for module_name, class_name, attr in TARGETS:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            cls = getattr(module, class_name, None)
            if cls is None or (cls, attr) in self.patched:
                continue
            current = cls.__dict__.get(attr)
            if current is None:
                log.warning("Embedding Sanitizer: %s.%s has no %s; not hooked", module_name, class_name, attr)
                continue
            if getattr(current, MARK, None) is not None:  # a previous load of this extension
                current = getattr(current, MARK)
            setattr(cls, attr, self._wrap(current))
            self.patched.append((cls, attr))
        return [f"{cls.__module__}.{cls.__name__}.{attr}" for cls, attr in self.patched]

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

    def _wrap(self, original):
        hook = self

        @functools.wraps(original)
        def embedding_sanitizer_forward(model, texts, *args, **kwargs):
            out = original(model, texts, *args, **kwargs)
            state = hook._state
            if state is None or hook.bypassed:
                return out
            if getattr(texts, "is_negative_prompt", False) and not state.settings.sanitize_negative:
                return out
            encoder = adapter_for(model, hook.layer_tag)
            return sanitize_output(hook.runtime, state, encoder, texts, out)

        setattr(embedding_sanitizer_forward, MARK, original)
        return embedding_sanitizer_forward

    # ---------------------------------------------------------------- state
    def activate(self, state: RunState) -> None:
        with self._lock:
            self._state = state

    def deactivate(self, owner=None) -> RunState | None:
        """Stop sanitizing; with ``owner`` only if the active run belongs to it. Returns the old state."""
        with self._lock:
            state = self._state
            if owner is None or (state is not None and state.owner is owner):
                self._state = None
            return state

    @property
    def state(self) -> RunState | None:
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


def shadow_cond_caches(p) -> list[str]:
    """Give ``p`` fresh empty conditioning-cache lists of the host's length (2 in A1111, 3 in Forge)."""
    done = []
    for name in COND_CACHES:
        cache = getattr(p, name, None)
        if isinstance(cache, list):
            setattr(p, name, [None] * len(cache))
            done.append(name)
    return done
