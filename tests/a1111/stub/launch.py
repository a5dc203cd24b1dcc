"""launch helpers used by install.py (stand-in): records pip calls instead of running pip."""
import argparse
import importlib.metadata

args = argparse.Namespace(skip_install=False)
pretend_missing = set()
pip_calls = []


def is_installed(package):
    if package in pretend_missing:
        return False
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def run_pip(command, desc=None, live=False):
    if args.skip_install:
        return ""
    pip_calls.append(command)
    return ""
