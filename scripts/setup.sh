#!/usr/bin/env bash
# Creates .venv and installs Gen3D with the given extras (comma-separated, e.g. local,remote,test).
# torch goes in first and on its own: an unpinned torch would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-local}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
TORCH_SPEC="${GEN3D_TORCH:-torch==2.13.0}"
GLTF_VALIDATOR_VERSION=2.0.0-dev.3.10

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

if [[ ",$EXTRAS," == *",blender,"* ]] && { ! command -v blender >/dev/null 2>&1 || ! dpkg -s python3-numpy >/dev/null 2>&1; }; then
  # Blender tests also run the real `blender -b` binary (Debian's package).
  if [ "$(id -u)" = "0" ]; then
    echo "installing Debian's blender package" >&2
    # python3-numpy: Blender 3.4's glTF importer needs numpy and Debian's blender does not pull it in
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq blender python3-numpy >/dev/null
  else
    echo "error: the Blender tests need a 'blender' binary with numpy; install them (sudo apt-get install blender python3-numpy)" >&2
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
