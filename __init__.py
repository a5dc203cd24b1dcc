"""ComfyUI entry of Embedding Sanitizer: NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY; with
``EMBEDDING_SANITIZER_V3=1`` on a host that has ``comfy_api.latest``, ``comfy_entrypoint`` instead (the same
nodes in the V3 schema, ``nodes/v3.py``).

Importing this file needs neither ComfyUI nor A1111: ComfyUI modules are
imported lazily by the nodes, and the ``models/embedding_sanitizer`` folder is
registered only when ComfyUI's ``folder_paths`` is present. The server-wide lock's
class-level hooks (``nodes/server_lock.py``) are installed only when ``comfy.sd`` is
already loaded (inside ComfyUI); they do nothing until a policy file asks for them.

``sys.path`` is left as it is: the core package next to this file is registered under its own name
``embedding_sanitizer`` only (``sys.modules``), so the pack's other folders (scripts, tools, tests) never
become importable by other packs.
"""
import importlib.util
import logging
import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))
_CORE = "embedding_sanitizer"


def _register_core() -> None:
    """Import the pack's core package as ``embedding_sanitizer`` from this folder, without touching sys.path.

    An ``embedding_sanitizer`` already imported (a checkout on the path, an installed copy) is kept.
    """
    if _CORE in sys.modules:
        return
    folder = os.path.join(_ROOT, _CORE)
    spec = importlib.util.spec_from_file_location(_CORE, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[_CORE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(_CORE, None)
        raise


_register_core()

WEB_DIRECTORY = "./web"
if __package__:  # ComfyUI imports this folder as a package
    from .nodes import (NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, install_preview_route,  # noqa: E402
                        install_server_lock, register_folder)

    register_folder()
    install_server_lock()  # class-level encode hooks for a server-scope policy (no-op outside ComfyUI)
    install_preview_route()  # POST /embedding_sanitizer/preview, the widget's live heatmap (no-op outside the server)
    if os.environ.get("EMBEDDING_SANITIZER_V3", "") == "1":  # opt-in: the V3 schema (README "Nodes")
        from .nodes import v3  # noqa: E402

        if v3.available():
            comfy_entrypoint = v3.comfy_entrypoint
            # ComfyUI's loader takes NODE_CLASS_MAPPINGS when it is set and the entrypoint only otherwise
            NODE_CLASS_MAPPINGS = None
            logging.getLogger("embedding_sanitizer.comfyui").info(
                "Embedding Sanitizer: nodes offered in the V3 schema (comfy_api.latest), EMBEDDING_SANITIZER_V3=1")
        else:
            logging.getLogger("embedding_sanitizer.comfyui").warning(
                "Embedding Sanitizer: EMBEDDING_SANITIZER_V3=1 but this ComfyUI has no comfy_api.latest; "
                "the V1 nodes are used")
else:  # imported as a plain file: pytest collecting a checkout whose folder name is not a Python identifier
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
