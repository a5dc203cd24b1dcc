"""ComfyUI entry of Embedding Sanitizer: NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY.

Importing this file needs neither ComfyUI nor A1111: ComfyUI modules are
imported lazily by the nodes, and the ``models/embedding_sanitizer`` folder is
registered only when ComfyUI's ``folder_paths`` is present. The server-wide lock's
class-level hooks (``nodes/server_lock.py``) are installed only when ``comfy.sd`` is
already loaded (inside ComfyUI); they do nothing until a policy file asks for them.
"""
import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))
if _ROOT not in sys.path:  # the core package lives next to this file
    sys.path.append(_ROOT)

WEB_DIRECTORY = "./web"
if __package__:  # ComfyUI imports this folder as a package
    from .nodes import (NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, install_preview_route,  # noqa: E402
                        install_server_lock, register_folder)

    register_folder()
    install_server_lock()  # class-level encode hooks for a server-scope policy (no-op outside ComfyUI)
    install_preview_route()  # POST /embedding_sanitizer/preview, the widget's live heatmap (no-op outside the server)
else:  # imported as a plain file: pytest collecting a checkout whose folder name is not a Python identifier
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
