"""Fixtures for the ComfyUI layer: the real ComfyUI 0.3.75 tree, in-process and as a server.

These tests fail (never skip) when ComfyUI cannot be set up; only the browser
test skips, when Debian's /usr/bin/chromium is missing.
"""
from __future__ import annotations

import pytest

# Imported before ComfyUI's root goes on sys.path: the tree has its own `tests` and `nodes` modules.
from tests.comfyui import host, server as server_support
from tests.support.comfyui_tree import comfyui_root


def pytest_configure(config):
    config.addinivalue_line("markers", "comfyui: runs against the real ComfyUI tree (fetched at test time)")
    config.addinivalue_line("markers", "browser: drives Debian chromium through Playwright")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/comfyui/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.comfyui)


@pytest.fixture(scope="session")
def comfy_root():
    root = comfyui_root()
    host.prepare_tree(root)
    return root


@pytest.fixture(scope="session")
def torchvision_placeholder(tmp_path_factory):
    return host.write_torchvision_placeholder(tmp_path_factory.mktemp("tv_placeholder"))


@pytest.fixture(scope="session")
def comfy(comfy_root, torchvision_placeholder, tmp_path_factory):
    """ComfyUI imported in-process (CPU) with the pack loaded by ComfyUI's own loader."""
    base = tmp_path_factory.mktemp("comfy_base")
    nodes = host.enter_inprocess(comfy_root, torchvision_placeholder, base)
    name = host.load_pack(nodes, base / "custom_nodes")
    return {"nodes": nodes, "pack": host.pack_module(name), "base": base}


@pytest.fixture(scope="session")
def tiny_checkpoint(comfy, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny_sd15.safetensors"
    host.build_tiny_sd15(path)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def sd1_clip(comfy, tiny_checkpoint):
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(tiny_checkpoint), output_vae=False,
                                                                output_clipvision=False)
    return clip


@pytest.fixture(scope="session")
def server(comfy_root, torchvision_placeholder, tiny_checkpoint, tmp_path_factory):
    """``main.py --cpu --listen 127.0.0.1`` on a free port; stopped at the end of the session."""
    base = tmp_path_factory.mktemp("server_base")
    running = server_support.start(comfy_root, torchvision_placeholder, base, tiny_checkpoint)
    yield running
    running.stop()
