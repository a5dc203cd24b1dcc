"""The negative prompt under the server-wide lock: ``sanitize_negative`` decides.

The encode wrappers (``server_lock.py``) sanitize every encode, because an encode does not know
where its conditioning will go (and ComfyUI caches an encode's output for any later consumer). The
role is known where the conditioning is used: ``install()`` wraps ``comfy.samplers.CFGGuider.sample``
at class level. When the policy's ``sanitize_negative`` is off, a guider of exactly that class
(KSampler, KSamplerAdvanced, SamplerCustom and the CFGGuider node all use it) samples from a shallow
copy of itself whose negative conds carry the original (unsanitized) embedding and pooled vector
again, found through the registry by the sanitized tensor's identity. The guider itself is not
modified. The rule:

- only conds the server lock sanitized are restored; conditioning built from them by other nodes
  (ConditioningConcat, ConditioningAverage...) is a new tensor and stays sanitized;
- only with ``cfg >= 1``: below 1 the negative prompt pulls the image towards itself
  (``uncond + cfg * (cond - uncond)``), so it stays sanitized;
- other guiders (DualCFGGuider, PerpNeg...) keep every cond sanitized.

Staying sanitized is the safe side of each rule: a sanitized negative only weakens the guidance away
from the concept.
"""
from __future__ import annotations

import copy
import functools
import logging
import sys

from . import registry

log = logging.getLogger("embedding_sanitizer.comfyui")
MARK = "es_server_lock_original"


def restore_negative(conds: list) -> tuple[list, int]:
    """(converted conds with the server-sanitized ones replaced by their originals, how many were)."""
    out, restored = [], 0
    for cond in conds:
        held = registry.lookup(cond.get("cross_attn")) if isinstance(cond, dict) else None
        if not held or not held.get("server"):
            out.append(cond)
            continue
        original, output = held["record"].original, held["output"]
        new = dict(cond, cross_attn=original[0])
        if len(output) > 1 and len(original) > 1 and cond.get("pooled_output") is output[1]:
            new["pooled_output"] = original[1]
        out.append(new)
        restored += 1
    return out, restored


def with_original_negative(guider, guider_class, server_patch):
    """A copy of ``guider`` whose negative conds are the originals, or None to sample as it is."""
    if type(guider) is not guider_class or "negative" not in getattr(guider, "original_conds", {}):
        return None
    patch = server_patch()
    if patch is None or patch.settings.sanitize_negative:
        return None
    try:
        cfg = float(guider.cfg)
    except (TypeError, ValueError):
        return None
    if not cfg >= 1.0:
        log.info("Embedding Sanitizer: negative prompt kept sanitized (cfg %s < 1 makes it pull the image "
                 "towards itself)", guider.cfg)
        return None
    negative, restored = restore_negative(guider.original_conds["negative"])
    if not restored:
        return None
    view = copy.copy(guider)
    view.original_conds = dict(guider.original_conds, negative=negative)
    log.info("Embedding Sanitizer: %d negative cond(s) sampled unsanitized (the policy's sanitize_negative "
             "is off)", restored)
    return view


def install(server_patch) -> None:
    samplers = sys.modules.get("comfy.samplers")
    if samplers is None:
        import comfy.samplers as samplers
    cls = samplers.CFGGuider
    current = cls.sample
    if hasattr(current, MARK):
        return

    @functools.wraps(current)
    def sample(self, *args, **kwargs):
        view = with_original_negative(self, cls, server_patch)
        return current(view if view is not None else self, *args, **kwargs)

    setattr(sample, MARK, current)
    cls.sample = sample
