"""build_addon.py: both zips, their layout, the manifest, the stamped version, the vendored contract,
Blender's extension validator, and what the add-on's sources may import."""

import ast
import os
import subprocess
import sys
import zipfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "blender_scripts"))
import harness  # noqa: E402

from shared.version import __version__  # noqa: E402

ADDON_DIR = os.path.join(harness.ROOT, "blender_addon")
# What the add-on may import: Blender's own modules, requests (bundled with Blender; only the remote
# client uses it) and the standard library. Never torch, numpy or the backend.
BLENDER_MODULES = {"bpy", "mathutils", "addon_utils", "bpy_extras", "requests"}
# importer.py touches Blender's bundled numpy only to restore an alias Blender 3.4's glTF importer needs.
ALLOWED = {("importer.py", "numpy")}


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    return harness.build_zips(str(tmp_path_factory.mktemp("dist")))


def test_zip_names_carry_the_version(zips):
    extension, legacy = zips
    assert os.path.basename(extension) == "gen3d-%s.zip" % __version__
    assert os.path.basename(legacy) == "gen3d-%s-legacy.zip" % __version__


def test_extension_layout_and_manifest(zips):
    import tomllib
    with zipfile.ZipFile(zips[0]) as archive:
        names = set(archive.namelist())
        manifest = tomllib.loads(archive.read("blender_manifest.toml").decode("utf-8"))
    assert {"__init__.py", "blender_manifest.toml", "batch.py", "shared/__init__.py", "shared/request.py"} <= names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    assert manifest["schema_version"] == "1.0.0"
    assert manifest["id"] == "gen3d"
    assert manifest["version"] == __version__
    assert manifest["type"] == "add-on"
    assert manifest["blender_version_min"] == "4.2.0"
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert manifest["name"] and manifest["tagline"] and manifest["maintainer"]
    assert set(manifest["permissions"]) == {"files", "network"}
    assert all(reason.strip() for reason in manifest["permissions"].values())


def test_legacy_layout_and_bl_info(zips):
    with zipfile.ZipFile(zips[1]) as archive:
        names = set(archive.namelist())
        init = archive.read("gen3d/__init__.py").decode("utf-8")
    assert all(name.startswith("gen3d/") for name in names)
    assert "gen3d/shared/manifest.py" in names and "gen3d/blender_manifest.toml" not in names
    # Blender < 4.2 reads bl_info with ast.literal_eval, so it must be a literal with the stamped version.
    bl_info = next(ast.literal_eval(node.value) for node in ast.parse(init).body
                   if isinstance(node, ast.Assign) and node.targets[0].id == "bl_info")
    assert bl_info["version"] == tuple(int(part) for part in __version__.split(".")[:3])
    assert bl_info["blender"] == (3, 4, 0)
    assert bl_info["location"].startswith("View3D")


def test_shared_is_vendored_verbatim(zips):
    with zipfile.ZipFile(zips[1]) as archive:
        for name in os.listdir(os.path.join(harness.ROOT, "shared")):
            if name.endswith(".py"):
                with open(os.path.join(harness.ROOT, "shared", name), "rb") as handle:
                    assert archive.read("gen3d/shared/" + name) == handle.read(), name


def test_build_is_reproducible(zips, tmp_path):
    again = harness.build_zips(str(tmp_path))
    for first, second in zip(zips, again):
        with open(first, "rb") as a, open(second, "rb") as b:
            assert a.read() == b.read()


def test_blenders_extension_validator_accepts_it(tmp_path):
    """The newest Blender here validates it: with Debian's 3.4 as the only binary, that is the bpy 5.2
    LTS wheel that scripts/setup.sh (blender extra) installs into .venv313."""
    assert os.path.isfile(os.path.join(harness.ROOT, ".venv313", "bin", "python")), \
        "no .venv313 with bpy 5.2: run scripts/setup.sh with the blender extra"
    result = subprocess.run([sys.executable, os.path.join(harness.ROOT, "build_addon.py"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the bpy 5.2." in result.stdout and ": passed" in result.stdout, result.stdout
    assert "FAILED" not in result.stdout


def test_addon_sources_import_only_blender_and_stdlib():
    stdlib = set(sys.stdlib_module_names)
    for name in sorted(os.listdir(ADDON_DIR)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(ADDON_DIR, name), encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in stdlib or root in BLENDER_MODULES or (name, root) in ALLOWED, \
                    "%s imports %s" % (name, root)


def test_no_vendored_copy_in_the_source_tree():
    # The add-on finds shared/ next to blender_addon/ when run from source; a stale copy would shadow it.
    assert not os.path.exists(os.path.join(ADDON_DIR, "shared"))
