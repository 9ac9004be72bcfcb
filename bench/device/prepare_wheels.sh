#!/usr/bin/env bash
# Here (with the registries), before a full-size run on the lent GPU machine: write what that machine's image
# lacks for the Hunyuan engines, to be carried with `.hy` and `.gl`:
#   .hy/whl/                   cp312 wheels of the [hunyuan] packages the image does not have (its own list is
#                              /work/.library/device/KINDS.md); antlr4 and basicsr are sdists, built here into
#                              wheels (basicsr's setup.py imports torch: built against this venv's, it is pure
#                              Python either way)
#   .hy/pymeshlab-trim.tar.xz  pymeshlab with only the plugins the postprocessors call (meshing, select, clean, mls,
#                              base I/O) and the shared libraries those need: the whole wheel is 107 MB, the
#                              carried tree must stay under 64 MiB
#   .gl/                       libGL and friends as debs (pymeshlab links libGL; the image has none)
# Usage: bash bench/device/prepare_wheels.sh   (from the repository root; uses .venv/bin/python to build)
set -euo pipefail
ROOT=$(pwd); PY=${PY:-$ROOT/.venv/bin/python}
WHL=$ROOT/.hy/whl; TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
mkdir -p "$WHL"
PLATFORMS=""
for p in manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 \
         manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS="$PLATFORMS --platform $p"
done
# Versions as backend_local/install/spec.py pins them where it does; the rest as resolved today.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS -d "$WHL" \
  diffusers==0.42.1 omegaconf==2.3.0 realesrgan==0.3.0 trimesh xatlas fast-simplification pygltflib \
  dataclasses-json deprecated marshmallow importlib-metadata 2>&1 | grep -v "^WARNING" || true
"$PY" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$TMP/sdist" \
  antlr4-python3-runtime==4.9.3 basicsr==1.4.2 2>&1 | grep -v "^WARNING" || true
for sdist in "$TMP"/sdist/*; do
  "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHL" "$sdist" 2>&1 | grep -v "^WARNING" || true
done

# pymeshlab: the Python package, its extension module, four plugins and the NEEDED closure of all of them.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
  -d "$TMP/pml" pymeshlab==2025.7.post1 2>&1 | grep -v "^WARNING" || true
(cd "$TMP/pml" && unzip -q pymeshlab-*.whl)
SRC=$(echo "$TMP"/pml/pymeshlab-*.data/purelib/pymeshlab)
OUTPKG=$TMP/trim/pymeshlab; mkdir -p "$OUTPKG/lib/plugins"
cp "$SRC"/*.py "$SRC"/*.so "$SRC"/keys.txt "$OUTPKG"/
for plugin in filter_meshing filter_select filter_clean filter_mls io_base; do
  cp "$SRC/lib/plugins/lib$plugin.so" "$OUTPKG/lib/plugins/"
done
queue=("$OUTPKG"/*.so "$OUTPKG"/lib/plugins/*.so)
while [ ${#queue[@]} -gt 0 ]; do
  file=${queue[0]}; queue=("${queue[@]:1}")
  for lib in $(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    if [ -e "$SRC/lib/$lib" ] && [ ! -e "$OUTPKG/lib/$lib" ]; then
      cp -L "$SRC/lib/$lib" "$OUTPKG/lib/$lib"; queue+=("$OUTPKG/lib/$lib")
    fi
  done
done
cp -r "$TMP"/pml/pymeshlab-*.dist-info "$TMP/trim/"
tar -C "$TMP/trim" -cJf "$ROOT/.hy/pymeshlab-trim.tar.xz" .
mkdir -p "$ROOT/.hy/extra"   # setup_env.sh's hook for single libraries the closure misses (none today)

# libGL & co. as the device README says (amd64 lists, downloaded only)
grep -qx "/.gl/" .git/info/exclude 2>/dev/null || echo /.gl/ >> .git/info/exclude
mkdir -p .gl /tmp/amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
apt-get $o update -qq >/dev/null
(cd .gl && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
du -sh .hy/whl .hy/pymeshlab-trim.tar.xz .gl
