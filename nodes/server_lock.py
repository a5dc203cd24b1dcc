"""Server-wide lock: with ``"scope": "server"`` in a locked policy file, every text encode is sanitized.

``install()`` runs when ComfyUI loads the pack and puts class-level wrappers on the two methods
every encode node goes through, ``comfy.sd.CLIP.encode_from_tokens`` and
``CLIP.encode_from_tokens_scheduled`` (CLIPTextEncode, the SDXL/SD3/Flux encode nodes, scheduled and
hooked encodes, and third-party nodes that use them). The wrappers live on the class, so every
CLIP (loaders, ``clone()``, CLIPSetLastLayer, LoRA patches) is covered. At each call the wrapper reads
the policy file's state:

- no file, or a file without a server-scope lock: the original method runs with the original
  arguments (bit-exact, nothing else happens);
- a server-scope lock: the original method runs on a shallow copy of the CLIP whose
  ``cond_stage_model`` is the sanitizer's delegating proxy (``proxy.SanitizedTextModel``) built with
  the policy's settings (its ``defaults``, then the lock); the CLIP itself is never modified;
- a CLIP whose text model already is that proxy (the 'Embedding Sanitizer (CLIP)' node's output,
  whose settings the lock already enforces) is passed through, so nothing is sanitized twice;
- a policy file that exists but cannot be read or parsed: the encode fails (fail closed).

The negative prompt (``negative.py``) and ComfyUI's output cache (``cache_key.py``) have their own
class-level wrappers, installed here too. Only encodes through these CLIP methods are covered: a node
that calls a text model's ``encode_token_weights`` directly is not (none of ComfyUI's own do).
"""
from __future__ import annotations

import copy
import functools
import logging
import sys
import threading

from . import audit_hook, cache_key, negative
from . import policy as admin_policy
from .proxy import Patch, SanitizedTextModel
from .weights import AUTO

log = logging.getLogger("embedding_sanitizer.comfyui")
METHODS = ("encode_from_tokens", "encode_from_tokens_scheduled")
MARK = "es_server_lock_original"  # attribute on an installed wrapper: the method it wraps
_lock = threading.Lock()
_patches: dict[str, Patch] = {}


def server_patch() -> Patch | None:
    """The sanitizer patch of the server-wide lock, or None when no server-scope lock is in force.

    Raises ``SettingsError`` when the policy file exists but is broken (every encode fails closed).
    """
    policy = admin_policy.current_policy()
    if not admin_policy.server_scope(policy):
        return None
    key = admin_policy.state_key()
    with _lock:
        hit = _patches.get(key)
    if hit is not None:
        return hit
    settings = policy.default_settings
    choice = settings.weights or AUTO
    settings, notes = admin_policy.enforce(settings)
    notes = [f"server-wide lock ({admin_policy.LABEL}, scope server)"] + notes
    patch = Patch(settings, choice, None, notes, policy=policy, server=True)
    patch.on_encode = audit_hook.recorder(policy, settings, notes)
    with _lock:
        _patches.clear()
        _patches[key] = patch
    return patch


def already_sanitized(clip) -> bool:
    """The CLIP's text model is the sanitizer's proxy (a node's patch, or a recording by the pack)."""
    return isinstance(getattr(clip, "cond_stage_model", None), SanitizedTextModel)


def sanitizing_view(clip, patch: Patch):
    """A shallow copy of ``clip`` whose text model is the proxy; ``clip`` is left as it is."""
    view = copy.copy(clip)
    view.cond_stage_model = SanitizedTextModel(clip.cond_stage_model, clip.tokenizer, patch)
    return view


def _wrap(original):
    @functools.wraps(original)
    def encode(self, *args, **kwargs):
        patch = server_patch()  # a broken policy file raises here: the prompt fails
        if patch is None or already_sanitized(self):
            return original(self, *args, **kwargs)
        return original(sanitizing_view(self, patch), *args, **kwargs)

    setattr(encode, MARK, original)
    return encode


def install() -> bool:
    """Install the class-level wrappers once; False outside ComfyUI (nothing is imported there)."""
    sd = sys.modules.get("comfy.sd")
    if sd is None:
        return False
    cls = sd.CLIP
    for name in METHODS:
        current = getattr(cls, name)
        if not hasattr(current, MARK):
            setattr(cls, name, _wrap(current))
    negative.install(server_patch)
    cache_key.install()
    return True

