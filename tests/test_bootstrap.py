"""tools/bootstrap.sh shows numbered progress and lets pip show its own (no -q), run with stand-in tools."""
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from embedding_sanitizer.paths import ROOT_DIR

FAKE_PYTHON = """#!/bin/sh
echo "python $*" >> "$BOOT_LOG"
case "$*" in
  *"print("*) echo "torch 0 transformers 0" ;;
esac
exit 0
"""
FAKE_OK = "#!/bin/sh\necho \"$(basename $0) $*\" >> \"$BOOT_LOG\"\nexit 0\n"


def _exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("flag, total", [([], 4), (["--test"], 7)])
def test_bootstrap_numbers_its_steps_and_pip_is_not_quiet(tmp_path, flag, total):
    if shutil.which("bash") is None:
        pytest.skip("bash is not available on this platform")  # not a dependency: the script is bash
    tree = tmp_path / "repo"
    (tree / "tools").mkdir(parents=True)
    shutil.copy(ROOT_DIR / "tools" / "bootstrap.sh", tree / "tools" / "bootstrap.sh")
    (tree / "requirements.txt").write_text("")
    (tree / ".venv" / "bin").mkdir(parents=True)
    _exe(tree / ".venv" / "bin" / "python", FAKE_PYTHON)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("chromium", "dpkg", "apt-get"):  # present, so nothing real is installed
        _exe(bin_dir / tool, FAKE_OK)
    log = tmp_path / "log.txt"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", BOOT_LOG=str(log))
    proc = subprocess.run(["bash", str(tree / "tools" / "bootstrap.sh"), *flag], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    steps = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    assert [s.split("]")[0] for s in steps] == [f"[{i}/{total}" for i in range(1, total + 1)]
    assert "installing requirements.txt" in steps[2] and proc.stdout.rstrip().endswith("torch 0 transformers 0")
    pip_calls = [ln for ln in log.read_text().splitlines() if " -m pip install" in ln]
    assert pip_calls and not any(" -q" in c.split(" install", 1)[1] for c in pip_calls)
    assert "apt-get" not in log.read_text()  # everything was present
