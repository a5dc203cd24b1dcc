import importlib.util
import os


def load_module(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preload_extensions(extensions_dir, parser):
    """Call ``preload(parser)`` of every extension folder that has a ``preload.py``."""
    for name in sorted(os.listdir(extensions_dir)):
        path = os.path.join(extensions_dir, name, "preload.py")
        if os.path.isfile(path):
            module = load_module(path)
            if hasattr(module, "preload"):
                module.preload(parser)
