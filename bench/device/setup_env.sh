# Sourced on the lent GPU machine: unpack the carried GL loaders (pymeshlab links libGL), install the carried
# wheels and the trimmed pymeshlab into /tmp/site, and put the carried Hunyuan sources on PYTHONPATH.
# Usage: . bench/device/setup_env.sh   (from the repository root, with .gl and .hy carried)
for f in .gl/*.deb; do dpkg -x "$f" / ; done; ldconfig
mkdir -p /tmp/site
python3 -m pip install --no-deps --no-compile --no-cache-dir --no-index --target /tmp/site .hy/whl/*.whl >/tmp/pip.log 2>&1 \
  || { echo "wheel install failed"; tail -20 /tmp/pip.log; }
[ -d /tmp/site/pymeshlab ] || tar -xJf .hy/pymeshlab-trim.tar.xz -C /tmp/site
cp .hy/extra/* /tmp/site/pymeshlab/lib/ 2>/dev/null || true
export PYTHONPATH=/tmp/site:$PWD/.hy/h2:$PWD
export GEN3D_HUNYUAN21_REPO=$PWD/.hy/h21
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
