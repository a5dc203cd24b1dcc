"""Loading the pack in the real ComfyUI leaves sys.path unchanged: only ``embedding_sanitizer`` is registered.

Run in a fresh interpreter (the test session itself has the repository on its path): ComfyUI is entered
in-process, the pack loaded by ComfyUI's own loader, and the pack's generic folder names are looked up.
"""
from __future__ import annotations

import json
import subprocess
import sys

from tests.comfyui.host import REPO_ROOT

SCRIPT = r"""
import importlib.util, json, os, sys
from pathlib import Path
repo, root, base = (Path(a) for a in sys.argv[1:4])
spec = importlib.util.spec_from_file_location("es_host", repo / "tests" / "comfyui" / "host.py")
host = importlib.util.module_from_spec(spec)
spec.loader.exec_module(host)
nodes = host.enter_inprocess(root, host.write_torchvision_placeholder(base / "tv"), base)
before = list(sys.path)
host.load_pack(nodes, base / "custom_nodes")
after = list(sys.path)
found = {}
for name in ("scripts", "tools", "tests", "install", "a1111", "preload"):
    spec = importlib.util.find_spec(name)
    found[name] = spec.origin if spec is not None and spec.origin else (
        list(spec.submodule_search_locations) if spec is not None else None)
core = sys.modules["embedding_sanitizer"].__file__
print(json.dumps({"before": before, "after": after, "found": found, "core": core,
                  "nodes": sorted(n for n in nodes.NODE_CLASS_MAPPINGS if n.startswith("EmbeddingSanitizer"))}))
"""


def in_pack(place, comfy_root) -> bool:
    """In the repository (ComfyUI's own tree, extracted under .cache/ by default, is not the pack)."""
    place = str(place)
    if place.startswith(str(comfy_root)):
        return False
    return place.startswith(str(REPO_ROOT)) or "embedding_sanitizer_pack" in place


def test_loading_the_pack_leaves_sys_path_alone(comfy_root, tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO_ROOT), str(comfy_root), str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["after"] == report["before"]
    assert not any(str(REPO_ROOT) == p or p.endswith("embedding_sanitizer_pack") for p in report["after"])
    for name, origin in report["found"].items():
        places = origin if isinstance(origin, list) else [origin] if origin else []
        assert not any(in_pack(place, comfy_root) for place in places), f"{name} importable from the pack: {origin}"
    assert report["core"].startswith(str(tmp_path / "custom_nodes")) or report["core"].startswith(str(REPO_ROOT))
    assert report["nodes"] == ["EmbeddingSanitizerCLIP", "EmbeddingSanitizerCalibrate",
                               "EmbeddingSanitizerConditioning"]
