#!/usr/bin/env bash
# Creates .venv and installs Gen3D with the given extras (comma-separated, e.g. local,remote,test).
# torch goes in first and on its own: an unpinned torch would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-local}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
TORCH_SPEC="${GEN3D_TORCH:-torch==2.13.0}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "installing $TORCH_SPEC" >&2
  .venv/bin/python -m pip install --quiet "$TORCH_SPEC"
fi
echo "installing gen3d[$EXTRAS]" >&2
.venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"

if [[ ",$EXTRAS," == *",blender,"* ]] && { ! command -v blender >/dev/null 2>&1 || ! dpkg -s python3-numpy >/dev/null 2>&1 \
    || ! command -v xvfb-run >/dev/null 2>&1 || ! command -v xauth >/dev/null 2>&1; }; then
  # Blender tests also run the real `blender -b` binary (Debian's package).
  if [ "$(id -u)" = "0" ]; then
    echo "installing Debian's blender package" >&2
    # python3-numpy: Blender 3.4's glTF importer needs numpy and Debian's blender does not pull it in;
    # xvfb, xauth: the window test runs that Blender in a virtual display (xvfb-run)
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq blender python3-numpy xvfb xauth >/dev/null
  else
    echo "error: the Blender tests need a 'blender' binary with numpy and xvfb-run; install them (sudo apt-get install blender python3-numpy xvfb xauth)" >&2
    exit 1
  fi
fi

if [[ ",$EXTRAS," == *",blender,"* ]] && ! .venv313/bin/python -c "import bpy" >/dev/null 2>&1; then
  # The add-on is also tested in Blender 5.2 LTS, whose bpy wheel needs Python 3.13 (pyenv has one).
  PY313="$(command -v python3.13 || true)"
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
