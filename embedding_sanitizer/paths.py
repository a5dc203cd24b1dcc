"""Folders of the installed package (the repository root is the extension folder)."""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT_DIR = PACKAGE_DIR.parent
WEIGHTS_DIR = ROOT_DIR / "weights"
SHARED_DATA_DIR = ROOT_DIR.parent / "shared" / "data"
