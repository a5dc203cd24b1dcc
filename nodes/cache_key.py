"""ComfyUI's output cache and the policy file: outputs cached under another policy state are not reused.

ComfyUI reuses a node's cached output when the node's inputs and its ancestors' are unchanged
(``comfy_execution.caching.CacheKeySetInputSignature``). An encode cached before a server-scope
policy was installed would be reused unsanitized, and a sampler cached under another
``sanitize_negative``. ``install()`` wraps ``get_immediate_node_signature`` at class level: while a
policy file exists, the signature of every node that has a linked input gets a digest of the file's
state (path, modification time, size), so any change to the file re-runs everything downstream of the
loaders. Without a policy file nothing is added (ComfyUI's own keys).
"""
from __future__ import annotations

import functools

from . import policy as admin_policy

MARK = "es_server_lock_original"
KEY = "embedding_sanitizer_policy"


def _has_link(dynprompt, node_id) -> bool:
    from comfy_execution.graph_utils import is_link

    if not dynprompt.has_node(node_id):
        return False
    return any(is_link(value) for value in dynprompt.get_node(node_id).get("inputs", {}).values())


def install() -> None:
    from comfy_execution import caching

    cls = caching.CacheKeySetInputSignature
    current = cls.get_immediate_node_signature
    if hasattr(current, MARK):
        return

    @functools.wraps(current)
    async def get_immediate_node_signature(self, dynprompt, node_id, ancestor_order_mapping):
        signature = await current(self, dynprompt, node_id, ancestor_order_mapping)
        marker = admin_policy.cache_marker()
        if marker is not None and isinstance(signature, list) and _has_link(dynprompt, node_id):
            signature = signature + [(KEY, marker)]
        return signature

    setattr(get_immediate_node_signature, MARK, current)
    cls.get_immediate_node_signature = get_immediate_node_signature
