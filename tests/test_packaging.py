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
    repository = meta["project"]["urls"]["Repository"]
    assert repository == "https://github.com/embedding-sanitizer/embedding-sanitizer"
    icon = meta["tool"]["comfy"]["Icon"]
    assert icon.startswith(repository.replace("github.com", "raw.githubusercontent.com") + "/main/")
    icon_file = ROOT / icon.split("/main/", 1)[1]
    assert icon_file == ROOT / "docs" / "icon.svg"
    import xml.etree.ElementTree as ET

    svg = ET.parse(icon_file).getroot()
    assert svg.tag.endswith("svg") and svg.get("viewBox") == "0 0 256 256"


def test_readme_lists_every_node_with_its_inputs_and_outputs():
    """The README's "Nodes" section names every node id, every input and every output of the V1 classes."""
    import importlib.util
    import sys

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Nodes", 1)[1].split("\n## ", 1)[0]
    spec = importlib.util.spec_from_file_location("es_pack_for_readme", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pack
    spec.loader.exec_module(pack)
    from es_pack_for_readme.nodes import NODE_CLASS_MAPPINGS

    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        block = section.split(f"`{node_id}`", 1)[1].split("\n#### ", 1)[0]
        spec = cls.INPUT_TYPES()
        for name in [*spec.get("required", {}), *spec.get("optional", {})]:
            assert f"`{name}`" in block, (node_id, name)
        for name in cls.RETURN_NAMES:
            assert f"`{name}`" in block, (node_id, name)


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
