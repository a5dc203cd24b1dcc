"""Run by the webui's launcher at start-up: install only the requirements that are missing.

Uses the webui's own ``launch.is_installed`` / ``launch.run_pip`` and honours
``--skip-install``. torch is never installed or upgraded (the webui owns its build), and a
package that is present is never upgraded: an older version only gets a warning, because
replacing the webui's own transformers or numpy could break it.

Messages go to stdout: the webui runs this file in a subprocess and prints only its stdout
(stderr is shown only when the installer fails).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"
NEVER = {"torch", "torchvision", "torchaudio", "xformers"}


def requirements(path: Path = REQUIREMENTS) -> list[tuple[str, str]]:
    """``(distribution name, full requirement)`` for every line of requirements.txt."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.split(r"[<>=!~;\[ ]", line, 1)[0].strip()
        if name.lower() not in NEVER:
            out.append((name, line))
    return out


def _too_old(name: str, requirement: str) -> str | None:
    try:
        from importlib.metadata import version

        from packaging.requirements import Requirement

        have = version(name)
        if not Requirement(requirement).specifier.contains(have, prereleases=True):
            return have
    except Exception:  # noqa: BLE001 - no packaging or no metadata: nothing to compare
        return None
    return None


def install(launch, path: Path | None = None) -> list[str]:
    """Install what is missing (from ``path``, default requirements.txt); returns the requirements passed to pip."""
    if getattr(getattr(launch, "args", None), "skip_install", False):
        return []
    installed = []
    for name, requirement in requirements(path or REQUIREMENTS):
        if not launch.is_installed(name):
            launch.run_pip(f'install "{requirement}"', f"Embedding Sanitizer requirement: {requirement}")
            installed.append(requirement)
            continue
        have = _too_old(name, requirement)
        if have:
            print(f"Embedding Sanitizer: {name} {have} is installed but {requirement} is expected; "
                  "not upgrading the webui's copy (some features may not work)", flush=True)
    return installed


if __name__ == "__main__" or "launch" in sys.modules:
    try:
        import launch as _launch
    except ImportError:  # run outside the webui: nothing to do
        _launch = None
    if _launch is not None:
        install(_launch)
