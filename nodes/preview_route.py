"""``POST /embedding_sanitizer/preview`` on ComfyUI's server: the live heatmap (``preview.preview`` does the work)."""
from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("embedding_sanitizer.comfyui")
ROUTE = "/embedding_sanitizer/preview"
_installed = False


def install() -> bool:
    """Register the route on ``PromptServer.instance`` (once); False outside a ComfyUI server."""
    global _installed
    if _installed:
        return True
    try:
        from aiohttp import web
        from server import PromptServer

        routes = PromptServer.instance.routes
    except Exception:  # noqa: BLE001 - not inside the ComfyUI server (tests, scripts)
        return False

    @routes.post(ROUTE)
    async def embedding_sanitizer_preview(request):
        from .preview import preview

        try:
            payload = await request.json()
        except ValueError:
            return web.json_response({"error": "the request body must be JSON"}, status=400)
        status, body = await asyncio.get_running_loop().run_in_executor(None, preview, payload)
        return web.json_response(body, status=status)

    _installed = True
    return True
