"""The repository root imports cleanly without ComfyUI (as pytest or A1111 might import it)."""
from __future__ import annotations

import subprocess
import sys

from tests.comfyui.host import REPO_ROOT

SCRIPT = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("es_entry", {str(REPO_ROOT / '__init__.py')!r},
                                              submodule_search_locations=[{str(REPO_ROOT)!r}])
module = importlib.util.module_from_spec(spec)
sys.modules["es_entry"] = module
spec.loader.exec_module(module)
assert sorted(module.NODE_CLASS_MAPPINGS) == sorted(module.NODE_DISPLAY_NAME_MAPPINGS)
assert module.WEB_DIRECTORY == "./web"
for cls in module.NODE_CLASS_MAPPINGS.values():
    cls.INPUT_TYPES()
hosts = [m for m in ("comfy", "folder_paths", "server", "nodes", "execution", "modules", "gradio") if m in sys.modules]
assert not hosts, hosts
print("ok")
"""


def test_entry_imports_without_comfyui(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
