#!/usr/bin/env python3
"""Build the Gen3D Blender add-on.

    python build_addon.py [--out dist] [--no-validate]

writes
    dist/gen3d-<version>.zip          extension for Blender 4.2+ (blender_manifest.toml at the root)
    dist/gen3d-<version>-legacy.zip   add-on with bl_info for Blender 3.4 to 4.1 (folder gen3d/)
Both hold blender_addon/ plus a copy of shared/ as the subpackage gen3d/shared (the add-on imports
the job contract as `.shared`), and backend_source/: the local backend's sources (backend_local/,
shared/, pyproject.toml, README.md) that the preferences' "Set up local backend" pip-installs into
the add-on's own Python environment. The version comes from shared/version.py only.

The extension is then checked with Blender's own validator, from the newest Blender found:
`blender --command extension validate` of a Blender 4.2+ binary ($BLENDER or `blender` on PATH), or the
same validator module shipped in a bpy 4.2+ wheel (this Python's, and .venv313's, where
scripts/setup.sh installs bpy 5.2 LTS); if none exists it says so and skips.
"""

import argparse
import ast
import glob
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.abspath(__file__))
ADDON_SRC = os.path.join(ROOT, "blender_addon")
SHARED_SRC = os.path.join(ROOT, "shared")
BACKEND_SOURCE = "backend_source"        # blender_addon/backend_setup.py SOURCE_FOLDER
BACKEND_PACKAGES = ("backend_local", "shared")
BACKEND_FILES = ("pyproject.toml", "README.md")   # pyproject names README.md as the readme
ADDON_ID = "gen3d"
BLENDER_VERSION_MIN = "4.2.0"
ZIP_DATE = (2024, 1, 1, 0, 0, 0)          # fixed timestamps: the same sources give the same zip

MANIFEST = """\
schema_version = "1.0.0"

id = "{id}"
version = "{version}"
name = "Gen3D"
tagline = "Turn one image into a textured PBR 3D object"
maintainer = "Gen3D developers"
type = "add-on"
tags = ["3D View", "Import-Export", "Material"]

blender_version_min = "{blender_min}"
license = ["SPDX:GPL-3.0-or-later"]

[permissions]
files = "Read input images and write results to the output folder"
network = "Send images to a remote Gen3D endpoint (remote backend only)"
"""


def read_version():
    scope = {}
    with open(os.path.join(SHARED_SRC, "version.py"), encoding="utf-8") as handle:
        exec(compile(handle.read(), "shared/version.py", "exec"), scope)
    return scope["__version__"]


def source_files(folder):
    """(relative path, absolute path) of the Python sources under folder, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                found.append((os.path.relpath(path, folder).replace(os.sep, "/"), path))
    return found


def stamp_bl_info(text, version):
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:3])
    stamped, count = re.subn(r'("version"\s*:\s*)\([^)]*\)', lambda m: m.group(1) + repr(numbers), text, count=1)
    if count != 1:
        raise SystemExit("build_addon: no bl_info version in blender_addon/__init__.py")
    return stamped


def check_bl_info(text):
    """Blender < 4.2 reads bl_info with ast.literal_eval without running the module: make sure it can."""
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "bl_info" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("build_addon: blender_addon/__init__.py has no literal bl_info")


def package_entries(version):
    """{path inside the add-on folder: bytes}, shared/ vendored."""
    entries = {}
    for relative, path in source_files(ADDON_SRC):
        with open(path, "rb") as handle:
            entries[relative] = handle.read()
    if any(name.startswith("shared/") for name in entries):
        raise SystemExit("build_addon: blender_addon/shared/ must not exist; shared/ is vendored from the top level")
    if any(name.startswith(BACKEND_SOURCE + "/") for name in entries):
        raise SystemExit("build_addon: blender_addon/%s/ must not exist; it is built from the top level" % BACKEND_SOURCE)
    for relative, path in source_files(SHARED_SRC):
        with open(path, "rb") as handle:
            entries["shared/" + relative] = handle.read()
    init = stamp_bl_info(entries["__init__.py"].decode("utf-8"), version)
    info = check_bl_info(init)
    if ".".join(str(n) for n in info["version"]) != ".".join(re.findall(r"\d+", version)[:3]):
        raise SystemExit("build_addon: bl_info version stamp failed")
    entries["__init__.py"] = init.encode("utf-8")
    entries.update(backend_entries())
    return entries


def backend_entries():
    """{backend_source/...: bytes}: what `pip install backend_source[local]` needs, Python sources only
    (the package has no data files)."""
    entries = {}
    for package in BACKEND_PACKAGES:
        for relative, path in source_files(os.path.join(ROOT, package)):
            with open(path, "rb") as handle:
                entries["%s/%s/%s" % (BACKEND_SOURCE, package, relative)] = handle.read()
    for name in BACKEND_FILES:
        with open(os.path.join(ROOT, name), "rb") as handle:
            entries["%s/%s" % (BACKEND_SOURCE, name)] = handle.read()
    return entries


def write_zip(path, entries):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name])
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(buffer.getvalue())
    os.replace(tmp, path)
    return path


def build(out_dir):
    version = read_version()
    os.makedirs(out_dir, exist_ok=True)
    package = package_entries(version)
    extension = dict(package)
    extension["blender_manifest.toml"] = MANIFEST.format(id=ADDON_ID, version=version,
                                                         blender_min=BLENDER_VERSION_MIN).encode("utf-8")
    legacy = {"%s/%s" % (ADDON_ID, name): data for name, data in package.items()}
    ext_zip = write_zip(os.path.join(out_dir, "%s-%s.zip" % (ADDON_ID, version)), extension)
    legacy_zip = write_zip(os.path.join(out_dir, "%s-%s-legacy.zip" % (ADDON_ID, version)), legacy)
    return ext_zip, legacy_zip


# validation ---------------------------------------------------------------------------------------
def _version_tuple(text):
    match = re.search(r"Blender (\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g or 0) for g in match.groups()) if match else None


def find_blender():
    """(path, version) of a Blender binary: $BLENDER, else `blender` on PATH; (None, None) if none."""
    path = os.environ.get("BLENDER") or shutil.which("blender")
    if not path:
        return None, None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return path, None
    return path, _version_tuple(out)


BPY_PYTHONS = (sys.executable, os.path.join(ROOT, ".venv313", "bin", "python"))
_BPY_QUERY = "import importlib.metadata as m, importlib.util as u; print(m.version('bpy')); print(u.find_spec('bpy').origin)"


def bpy_validators():
    """[(version, python, blender_ext.py, tags.py)] for each bpy 4.2+ wheel in BPY_PYTHONS. blender_ext.py
    is the module that `blender --command extension validate` runs."""
    found = []
    for python in dict.fromkeys(BPY_PYTHONS):
        if not os.path.isfile(python):
            continue
        try:
            done = subprocess.run([python, "-c", _BPY_QUERY], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        lines = done.stdout.split()
        version = _version_tuple("Blender " + lines[0]) if done.returncode == 0 and len(lines) == 2 else None
        if not version or version < (4, 2):
            continue
        for script in sorted(glob.glob(os.path.join(os.path.dirname(lines[1]), "*", "scripts", "addons_core",
                                                    "bl_pkg", "cli", "blender_ext.py"))):
            scripts = script.split(os.sep + "addons_core" + os.sep)[0]
            tags = os.path.join(scripts, "modules", "_bpy_internal", "extensions", "tags.py")
            found.append((version, python, script, tags if os.path.isfile(tags) else ""))
            break
    return found


def validate(ext_zip):
    """Run the newest Blender's extension validator; returns True when it passed or could not run."""
    candidates = []
    blender, version = find_blender()
    if blender and version and version >= (4, 2):
        candidates.append((version, [blender, "--factory-startup", "--command", "extension", "validate", ext_zip],
                           "blender %s --command extension validate" % ".".join(map(str, version))))
    for version, python, script, tags in bpy_validators():
        command = [python, script, "validate", ext_zip] + (["--valid-tags=%s" % tags] if tags else [])
        candidates.append((version, command, "the bpy %s wheel's extension validator" % ".".join(map(str, version))))
    if not candidates:
        print("build_addon: skipped extension validation: no Blender 4.2+ binary and no bpy 4.2+ wheel")
        return True
    _version, command, label = max(candidates, key=lambda candidate: candidate[0])
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    output = (result.stdout + result.stderr).strip()
    print("build_addon: %s: %s" % (label, "passed" if result.returncode == 0 else "FAILED"))
    if output:
        print("  " + output.replace("\n", "\n  "))
    return result.returncode == 0


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build the Gen3D Blender add-on zips.")
    parser.add_argument("--out", default=os.path.join(ROOT, "dist"), help="output folder (default: dist/)")
    parser.add_argument("--no-validate", action="store_true", help="skip Blender's extension validator")
    args = parser.parse_args(argv)
    ext_zip, legacy_zip = build(os.path.abspath(args.out))
    print("build_addon: wrote %s" % ext_zip)
    print("build_addon: wrote %s" % legacy_zip)
    if not args.no_validate and not validate(ext_zip):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
