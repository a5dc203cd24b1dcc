"""Packaging: dependencies declared once, the core free of host imports, the layout in place."""
import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST_MODULES = {"comfy", "comfy_extras", "comfy_api", "folder_paths", "nodes", "server", "execution", "modules",
                "backend", "gradio", "launch", "a1111"}


def requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_requirements_match_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert requirement_lines(ROOT / "requirements.txt") == project["dependencies"]
    assert not any(re.match(r"torch\b", dep) for dep in project["dependencies"]), "torch must not be pinned"


def test_comfy_registry_metadata_present():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["tool"]["comfy"]["DisplayName"]


def test_core_package_never_imports_a_host():
    offenders = []
    for path in (ROOT / "embedding_sanitizer").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in HOST_MODULES]
    assert offenders == []


def test_repository_layout():
    for name in ("__init__.py", "nodes", "scripts", "weights", "tests", "install.py", "README.md",
                 "embedding_sanitizer", ".ci/run"):
        assert (ROOT / name).exists(), name
