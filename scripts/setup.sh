#!/usr/bin/env bash
# Creates .venv and installs Gen3D with the given extras (comma-separated, e.g. local,remote,test).
# torch goes in first and on its own: the CUDA build where an NVIDIA GPU is found (nvidia-smi), the CPU
# build elsewhere (plain PyPI's torch is the CUDA build, with ~17 nvidia packages). GEN3D_TORCH
# overrides the choice with pip arguments, split into words, e.g.
#   GEN3D_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" scripts/setup.sh local
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-local}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
TORCH_VERSION=2.13.0
CPU_INDEX=https://download.pytorch.org/whl/cpu
GLTF_VALIDATOR_VERSION=2.0.0-dev.3.10

# The version pip would install for a spec here, without installing it (a local wheel folder or
# mirror may already serve the CPU build, "2.13.0+cpu").
pip_would_install() {
  .venv/bin/python -m pip install --dry-run --ignore-installed --no-deps --quiet --report - "$@" 2>/dev/null |
    .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])' \
    2>/dev/null || true
}

choose_torch() {
  if [ -n "${GEN3D_TORCH:-}" ]; then
    read -r -a TORCH_ARGS <<< "$GEN3D_TORCH"
    TORCH_WHY="GEN3D_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    TORCH_ARGS=("torch==$TORCH_VERSION")
    TORCH_WHY="an NVIDIA GPU was found: CUDA build"
  elif [[ "$(pip_would_install "torch==$TORCH_VERSION")" == *+cpu ]]; then
    TORCH_ARGS=("torch==$TORCH_VERSION")
    TORCH_WHY="no NVIDIA GPU: CPU build (served locally)"
  else
    TORCH_ARGS=("torch==$TORCH_VERSION" --index-url "$CPU_INDEX")
    TORCH_WHY="no NVIDIA GPU: CPU build from $CPU_INDEX"
  fi
}

torch_build() {
  .venv/bin/python -c 'import torch; print("torch %s, %s" % (torch.__version__, "CUDA %s build" % torch.version.cuda if torch.version.cuda else "CPU build"))'
}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  choose_torch
  echo "installing ${TORCH_ARGS[*]} ($TORCH_WHY)" >&2
  .venv/bin/python -m pip install --quiet "${TORCH_ARGS[@]}"
  echo "installed $(torch_build)" >&2
else
  echo "keeping the installed $(torch_build)" >&2
fi
echo "installing gen3d[$EXTRAS]" >&2
.venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"

if [[ ",$EXTRAS," == *",blender,"* ]] && { ! command -v blender >/dev/null 2>&1 || ! dpkg -s python3-numpy >/dev/null 2>&1 \
    || ! command -v xvfb-run >/dev/null 2>&1 || ! command -v xauth >/dev/null 2>&1 \
    || ! command -v xdotool >/dev/null 2>&1; }; then
  # Blender tests also run the real `blender -b` binary (Debian's package).
  if [ "$(id -u)" = "0" ]; then
    echo "installing Debian's blender package" >&2
    # python3-numpy: Blender 3.4's glTF importer needs numpy and Debian's blender does not pull it in;
    # xvfb, xauth: the window test runs that Blender in a virtual display (xvfb-run);
    # xdotool: it opens the sidebar's Gen3D tab there, as an artist would (click)
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq blender python3-numpy xvfb xauth \
      xdotool >/dev/null
  else
    echo "error: the Blender tests need a 'blender' binary with numpy and xvfb-run; install them (sudo apt-get install blender python3-numpy xvfb xauth xdotool)" >&2
    exit 1
  fi
fi

if [[ ",$EXTRAS," == *",test,"* ]] && [ ! -d node_modules/gltf-validator ]; then
  # Khronos's glTF-Validator checks every GLB we write (tests/test_gltf_validator.py); it lives in the
  # repo's own node_modules (ignored by git).
  if command -v npm >/dev/null 2>&1; then
    echo "installing gltf-validator (npm) into node_modules" >&2
    npm install --no-save --no-audit --no-fund --silent "gltf-validator@$GLTF_VALIDATOR_VERSION" >&2
  elif [ "$(id -u)" = "0" ]; then
    echo "installing Debian's nodejs and npm, then gltf-validator" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    npm install --no-save --no-audit --no-fund --silent "gltf-validator@$GLTF_VALIDATOR_VERSION" >&2
  else
    echo "error: the GLB validation test needs node and npm; install them (sudo apt-get install nodejs npm)" >&2
    exit 1
  fi
fi

if [[ ",$EXTRAS," == *",remote,"* ]] && ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  # Farm mode's tests start a real redis-server (Debian's package); a deployment uses its own Redis.
  echo "installing Debian's redis-server package" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

if [[ ",$EXTRAS," == *",blender,"* ]] && ! .venv313/bin/python -c "import bpy" >/dev/null 2>&1; then
  # The add-on is also tested in Blender 5.2 LTS, whose bpy wheel needs Python 3.13 (pyenv has one).
  PY313="$(command -v python3.13 || true)"
  # A pyenv shim is found on PATH even when no 3.13 is the active version: it must actually run.
  if [ -n "$PY313" ] && ! "$PY313" -c "import sys" >/dev/null 2>&1; then
    PY313=""
  fi
  if [ -z "$PY313" ] && command -v pyenv >/dev/null 2>&1; then
    PY313="$(PYENV_VERSION="$(pyenv versions --bare | grep -E '^3\.13' | tail -1)" pyenv which python3.13 2>/dev/null || true)"
  fi
  if [ -n "$PY313" ]; then
    echo "installing bpy 5.2 into .venv313" >&2
    "$PY313" -m venv .venv313
    .venv313/bin/python -m pip install --quiet "bpy==5.2.*"
  else
    echo "warning: no Python 3.13 found (pyenv install 3.13); the Blender 5.2 add-on tests cannot run" >&2
  fi
fi
