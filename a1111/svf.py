"""SAFREE's self-validating schedule (``schedule = "svf"``) in A1111 / Forge.

The core gives, per prompt, the fraction of the denoising steps that should use the
sanitized embedding (``SanitizeResult.schedule_end``); the later steps use the original.
The webui has no per-prompt step range for conditioning, so the swap happens per step in
``script_callbacks.on_cfg_denoiser``:

1. Keeping the original next to the sanitized conditioning. While a run with svf is
   active, the checkpoint's ``get_learned_conditioning(texts)`` (what the webui's prompt
   parser calls once per distinct prompt, with the prompt's schedule texts ``[a:b:n]``) is
   wrapped on the model instance. The wrapper lets the host encode as usual (the text-model
   hook sanitizes), collects each text model's ``schedule_end`` for these texts (the largest
   over SDXL's CLIP-L and CLIP-G), then encodes the same texts again inside
   ``Hook.bypass()``, which gives the host's own, unsanitized result. Per text it keeps the
   pair (sanitized row, original row, fraction); a row is a ``[T, C]`` tensor (SD1/SD2,
   Forge SD1.5) or a dict of per-row tensors (SDXL ``crossattn``/``vector``). Positive
   prompts only: the negative prompt (when sanitized at all) keeps the sanitized embedding.
   Cost: one extra text encode per distinct prompt, only with svf on and only when the
   sanitizer changed something. Base pass, hires pass and batches all go through here.
2. The swap. ``text_cond`` holds one row per prompt of the batch and per ``AND`` part, each
   the cond its prompt schedule selects at this step, stacked by the webui's denoiser. Rows
   are identified by value: a row equal (bit for bit) to a kept sanitized row is that
   prompt's. At ``sampling_step >= steps_for_fraction(fraction, total_sampling_steps)``
   the row is replaced by its original in a new tensor (or a shallow copy of the dict with
   new tensors); ``text_cond`` itself is never edited. Identification by value needs no
   knowledge of the row order. What it cannot map, it logs and leaves sanitized (the safe
   side): a row that the denoiser padded because the batch's prompts have different
   lengths (more than 75 tokens in some prompts but not others), and a row that matches
   two kept pairs with different originals.

The callback is registered once, at script load; it returns at once unless the current
generation has an active svf schedule with at least one changed prompt.
"""
from __future__ import annotations

import copy
import logging
import weakref

import torch

from embedding_sanitizer.projection import steps_for_fraction

log = logging.getLogger("embedding_sanitizer.a1111")

ATTR = "get_learned_conditioning"
MARK = "_embedding_sanitizer_svf"
PADDED = ("schedule svf: the prompts of this batch have different lengths, so the webui pads some conditioning "
          "rows; those rows cannot be mapped back to their prompt and keep the sanitized embedding for every step "
          "(use prompts of the same number of 75-token chunks, or batch size 1)")
AMBIGUOUS = ("schedule svf: a conditioning row matches two prompts with different originals; it keeps the "
             "sanitized embedding for every step")
MISALIGNED = ("schedule svf: the text models were not called once per prompt batch as expected; this prompt keeps "
              "the sanitized embedding for every step")


class Pair:
    __slots__ = ("sanitized", "original", "fraction")

    def __init__(self, sanitized, original, fraction: float) -> None:
        self.sanitized = sanitized
        self.original = original
        self.fraction = fraction


class Schedule:
    """The svf schedule of the active run: model wrapping, pair keeping, the per-step swap."""

    def __init__(self, hook) -> None:
        self.hook = hook
        self._attached: list = []  # weak references to the model instances wrapped for this run

    # ------------------------------------------------------------ run scope
    def _active_state(self):
        state = self.hook.state
        settings = getattr(state, "settings", None)  # a Refusal has none
        if settings is None or settings.schedule != "svf":
            return None
        return state

    def attach(self, model) -> bool:
        """Wrap ``model.get_learned_conditioning`` on the instance while svf is active (idempotent)."""
        if model is None or self._active_state() is None:
            return False
        current = getattr(model, ATTR, None)
        if current is None:
            log.warning("Embedding Sanitizer: %s has no %s; the svf schedule cannot be applied",
                        type(model).__name__, ATTR)
            return False
        if getattr(current, MARK, None) is not None:
            return True
        instance_dict = getattr(model, "__dict__", {})
        previous = instance_dict.get(ATTR)  # another extension's instance patch, put back on detach
        wrapper = self._wrap(current)
        setattr(wrapper, MARK, (previous,))
        try:
            object.__setattr__(model, ATTR, wrapper)
        except (AttributeError, TypeError):
            log.warning("Embedding Sanitizer: cannot wrap %s.%s; the svf schedule cannot be applied",
                        type(model).__name__, ATTR)
            return False
        try:
            self._attached.append(weakref.ref(model))
        except TypeError:
            self._attached.append(lambda model=model: model)
        return True

    def detach_all(self) -> None:
        """Remove every instance wrapper of this run (only where it is still ours)."""
        for ref in self._attached:
            model = ref()
            if model is None:
                continue
            current = getattr(model, "__dict__", {}).get(ATTR)
            mark = getattr(current, MARK, None)
            if mark is None:
                continue
            (previous,) = mark
            if previous is None:
                object.__delattr__(model, ATTR)
            else:
                object.__setattr__(model, ATTR, previous)
        self._attached.clear()

    def on_model_loaded(self, sd_model) -> None:
        """A checkpoint loaded during an svf run (hires checkpoint, refiner) is wrapped too."""
        self.attach(sd_model)

    # ------------------------------------------------------- keeping pairs
    def _wrap(self, original):
        schedule = self

        def get_learned_conditioning(*args, **kwargs):
            return schedule._encode(original, args, kwargs)

        get_learned_conditioning.__wrapped__ = original
        return get_learned_conditioning

    def _encode(self, original, args, kwargs):
        state = self._active_state()
        texts = args[0] if args else next(iter(kwargs.values()), None)
        if state is None or self.hook.bypassed or getattr(texts, "is_negative_prompt", False):
            return original(*args, **kwargs)
        state.svf_fractions = []
        try:
            sanitized = original(*args, **kwargs)
            collected = state.svf_fractions
        finally:
            state.svf_fractions = None
        count = _row_count(sanitized)
        if not collected:
            return sanitized  # no projection ran (mode es, or nothing to sanitize): every step sanitized
        if count is None or any(len(ends) != count for ends in collected):
            if any(f > 0 for ends in collected for f in ends):
                state.note_once(MISALIGNED)
            return sanitized
        fractions = [max(ends[b] for ends in collected) for b in range(count)]
        if not any(f > 0 for f in fractions):
            return sanitized  # nothing was changed
        with self.hook.bypass():
            plain = original(*args, **kwargs)
        if _row_count(plain) != count:
            state.note_once(MISALIGNED)
            return sanitized
        for b, fraction in enumerate(fractions):
            if fraction <= 0:
                continue
            s_row, o_row = _row(sanitized, b), _row(plain, b)
            if _same(s_row, o_row):
                continue
            if any(_same(s_row, p.sanitized) and _same(o_row, p.original) for p in state.svf_pairs):
                continue  # the same prompt again (hires pass with the base prompt, next batch)
            state.svf_pairs.append(Pair(s_row, o_row, float(fraction)))
        return sanitized

    # --------------------------------------------------------------- swap
    def on_cfg_denoiser(self, params) -> None:
        """``script_callbacks.on_cfg_denoiser``: original rows from the svf cut-off step on."""
        state = self._active_state()
        if state is None or not state.svf_pairs:
            return
        try:
            step, total = int(params.sampling_step), int(params.total_sampling_steps)
        except (AttributeError, TypeError, ValueError):
            return
        if total <= 0:
            return
        new = swap_rows(params.text_cond, state.svf_pairs, step, total, state.note_once)
        if new is not None:
            params.text_cond = new


def swap_rows(cond, pairs: list[Pair], step: int, total: int, note=lambda text: None):
    """A new ``cond`` whose rows past their cut-off are the originals, or ``None`` when nothing changes."""
    count = _row_count(cond)
    if count is None:
        return None
    chosen: dict[int, object] = {}
    for r in range(count):
        row = _row(cond, r)
        matches = [p for p in pairs if _same(row, p.sanitized)]
        if not matches:
            if any(_padded_match(row, p.sanitized) for p in pairs):
                note(PADDED)
            continue
        first = matches[0]
        if any(not _same(first.original, p.original) or p.fraction != first.fraction for p in matches[1:]):
            note(AMBIGUOUS)
            continue
        if step >= steps_for_fraction(first.fraction, total):
            chosen[r] = first.original
    if not chosen:
        return None
    if isinstance(cond, torch.Tensor):
        return _replaced(cond, chosen, None)
    new = copy.copy(cond)  # same class (the webui's DictWithShape), new tensors below
    for key, value in cond.items():
        if isinstance(value, torch.Tensor):
            new[key] = _replaced(value, chosen, key)
    return new


def _replaced(batch: torch.Tensor, chosen: dict, key):
    out = batch.clone()
    for r, original in chosen.items():
        out[r] = (original if key is None else original[key]).to(device=out.device, dtype=out.dtype)
    return out


def _row_count(cond) -> int | None:
    if isinstance(cond, torch.Tensor):
        return int(cond.shape[0]) if cond.dim() >= 2 else None
    if isinstance(cond, dict):
        counts = {int(v.shape[0]) for v in cond.values() if isinstance(v, torch.Tensor) and v.dim() >= 1}
        return counts.pop() if len(counts) == 1 else None
    return None


def _row(cond, b: int):
    if isinstance(cond, torch.Tensor):
        return cond[b]
    return {k: v[b] for k, v in cond.items() if isinstance(v, torch.Tensor)}


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    if a.device != b.device or a.dtype != b.dtype:
        b = b.to(device=a.device, dtype=a.dtype)
    return torch.equal(a, b)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return _same_tensor(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_tensor(a[k], b[k]) for k in a)
    return False


def _padded_match(row, sanitized) -> bool:
    """The row is ``sanitized`` made longer along the token axis (the denoiser's padding)."""
    if isinstance(row, dict) and isinstance(sanitized, dict):
        key = "crossattn" if "crossattn" in row else next(iter(row), None)
        if key is None or key not in sanitized:
            return False
        row, sanitized = row[key], sanitized[key]
    if not (isinstance(row, torch.Tensor) and isinstance(sanitized, torch.Tensor)):
        return False
    if row.dim() != 2 or sanitized.dim() != 2 or row.shape[0] <= sanitized.shape[0]:
        return False
    return _same_tensor(row[:sanitized.shape[0]], sanitized)
