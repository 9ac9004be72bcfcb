# Here (not on the GPU machine): write the Hunyuan sources that setup_env.sh puts on PYTHONPATH into .hy/
# (ignored; name it in `carry`): .hy/h21 = Hunyuan3D-2.1's hy3dshape, hy3dpaint and torchvision_fix.py at 5e3ec6d, .hy/h2 =
# Hunyuan3D-2's hy3dgen at 9bcf302. Takes the git directories the library's `fetch` tool brings
# (github:Tencent-Hunyuan/Hunyuan3D-2.1 and github:Tencent-Hunyuan/Hunyuan3D-2). Blobs the snapshot lacks
# (the 2.1 mini training set's .npz files, images) are left out; the mini training set is dropped so the
# carried tree stays about 7 MB. The wheels (.hy/whl), the trimmed pymeshlab and .gl are separate steps.
# Usage: bash bench/device/prepare_sources.sh /work/.mirror/Tencent-Hunyuan+Hunyuan3D-2.1/repo \
#            /work/.mirror/Tencent-Hunyuan+Hunyuan3D-2/repo
set -e
export_tree() {   # git_dir commit dest paths...
  local git_dir=$1 commit=$2 dest=$3; shift 3
  rm -rf "$dest"; mkdir -p "$dest"
  git -C "$git_dir" ls-tree -r "$commit" -- "$@" | while read -r mode _type sha path; do
    case $path in */tools/mini_trainset/*) continue;; esac
    mkdir -p "$dest/$(dirname "$path")"
    git -C "$git_dir" cat-file blob "$sha" >"$dest/$path" 2>/dev/null || { echo "absent: $path"; rm -f "$dest/$path"; }
    if [ "$mode" = 100755 ]; then chmod +x "$dest/$path"; fi
  done
}
export_tree "$1" 5e3ec6d .hy/h21 hy3dshape hy3dpaint torchvision_fix.py   # the fix the painter imports first
export_tree "$2" 9bcf302 .hy/h2 hy3dgen
du -sh .hy/h21 .hy/h2
