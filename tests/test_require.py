"""tests/support/require.py: skip on a developer machine, fail under CI=true, always naming the install step."""
import subprocess
import sys
import textwrap

import pytest

from embedding_sanitizer.paths import ROOT_DIR
from tests.support.require import require

STEP = "run bash tools/bootstrap.sh --test"


def test_present_dependencies_are_returned(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require("json", STEP).dumps([1]) == "[1]"
    assert require(lambda: 42, STEP) == 42


@pytest.mark.parametrize("what", ["no_such_module_es_test", lambda: False, lambda: open("/no/such/file")])
def test_missing_skips_locally(monkeypatch, what):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="bootstrap.sh --test"):
        require(what, STEP)


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_missing_fails_under_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"no_such_module_es_test.*bootstrap\.sh --test.*CI=true"):
        require("no_such_module_es_test", STEP)


def test_ci_false_still_skips(monkeypatch):
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require("no_such_module_es_test", STEP)


def test_an_unexpected_error_is_not_swallowed(monkeypatch):
    monkeypatch.delenv("CI", raising=False)

    def broken():
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError, match="a real bug"):
        require(broken, STEP)
    with pytest.raises(ValueError, match="install step"):
        require("json", "")


def test_a_real_pytest_run_reports_failed_under_ci(tmp_path):
    """End to end: the same test file is 'skipped' without CI and 'failed' (naming the step) with CI=true."""
    test = tmp_path / "test_needs_missing.py"
    test.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT_DIR)!r})
        from tests.support.require import require

        def test_it():
            require("no_such_module_es_test", "run bash tools/bootstrap.sh --test")
    """))
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-rsf",
            str(test)]
    env_local = {k: v for k, v in __import__("os").environ.items() if k != "CI"}
    local = subprocess.run(base, capture_output=True, text=True, cwd=tmp_path, env=env_local, timeout=120)
    ci = subprocess.run(base, capture_output=True, text=True, cwd=tmp_path, env=dict(env_local, CI="true"),
                        timeout=120)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout
    assert ci.returncode == 1 and "1 failed" in ci.stdout and "bootstrap.sh --test" in ci.stdout, ci.stdout
