"""``require(what, install_step)``: a test dependency that skips here but fails in CI.

On a developer machine a missing optional dependency (the bundled encoder's wheel,
the CLIP vocabulary, Chromium, a font) skips the test with the step that installs
it. Under ``CI=true`` (GitHub Actions and most CI services set it) the same test
fails, naming the install step, so that a set-up step that went missing cannot
pass unseen.
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Callable

import pytest

BOOTSTRAP = "run bash tools/bootstrap.sh"
BOOTSTRAP_TEST = "run bash tools/bootstrap.sh --test"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(what: str | Callable[[], Any], install_step: str, *,
            errors: tuple[type[BaseException], ...] = (ImportError, OSError)) -> Any:
    """Import the module ``what`` (a dotted name), or call the check ``what()``; return the result.

    A check fails when it returns a falsy value or raises one of ``errors``. Then the
    test is skipped with ``install_step`` in the reason, or, under ``CI=true``, fails
    with it. ``install_step`` says what to run, e.g. ``"run bash tools/bootstrap.sh --test"``.
    """
    if not install_step or not install_step.strip():
        raise ValueError("require: name the install step that provides the dependency")
    if isinstance(what, str):
        name = f"module {what!r}"
        try:
            return importlib.import_module(what)
        except ImportError as exc:
            detail = f"{type(exc).__name__}: {exc}"
    else:
        name = getattr(what, "__doc__", None) or getattr(what, "__name__", repr(what))
        name = name.strip().splitlines()[0] if name.strip() else repr(what)
        try:
            value = what()
        except errors as exc:
            detail = f"{type(exc).__name__}: {exc}"
        else:
            if value:
                return value
            detail = "check returned " + repr(value)
    message = f"missing test dependency: {name} ({detail}); to install it: {install_step}"
    if in_ci():
        pytest.fail(message + " [CI=true: a missing dependency fails instead of skipping]", pytrace=False)
    pytest.skip(message, allow_module_level=True)
