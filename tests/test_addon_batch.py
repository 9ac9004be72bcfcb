"""Debian's Blender 3.4 binary (`blender -b`): the legacy add-on registers and generates there, and
batch.py turns two images into a saved .blend (inspected afterwards with the bpy module), a summary
JSON and exit code 0; a batch with an unreadable image exits non-zero."""

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "blender_scripts"))
import harness  # noqa: E402
from test_addon_blender import EXPECTED_TYPES, check_material, check_placement  # noqa: E402

BATCH = os.path.join(harness.ROOT, "blender_addon", "batch.py")


@pytest.fixture(scope="module")
def blender():
    path = harness.blender_binary()
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    assert version.startswith("Blender "), version
    numpy = subprocess.run([path, "-b", "--factory-startup", "--python-expr", "import numpy"], capture_output=True,
                           text=True, timeout=120)
    assert "No module named 'numpy'" not in numpy.stdout + numpy.stderr, (
        "%s has no numpy, which its glTF importer needs (Debian's blender package does not depend on it): "
        "apt-get install python3-numpy" % path)
    return path


def run_batch(blender, tmp_path, *args, timeout=400):
    command = [blender, "-b", "--factory-startup", "-P", BATCH, "--", *args, "--python", harness.VENV_PYTHON,
               "--backend-dir", harness.BACKEND_DIR, "--device", "cpu"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=harness.isolated_env(str(tmp_path / "blender-home")), cwd=str(tmp_path))


def test_legacy_addon_registers_in_blender_34(blender, tmp_path):
    legacy = harness.build_zips(str(tmp_path / "dist"))[1]
    report, _ = harness.run_driver("register", {"kind": "legacy", "zip": legacy}, tmp_path, blender=blender)
    assert report["blender"].startswith("3.")
    assert not report["file_handler_expected"]                         # no FileHandler before 4.1
    assert set(report["enabled"]["types"]) == EXPECTED_TYPES
    assert report["disabled"]["types"] == [] and report["re_enabled"] == report["enabled"]
    drawn = {(entry[0], entry[1]) for entry in report["drawn"]}
    assert ("prop", "progress") not in drawn and ("progress", "()") not in drawn   # a label stands in for the bar


def test_generate_through_the_sidebar_in_blender_34(blender, tmp_path):
    legacy = harness.build_zips(str(tmp_path / "dist"))[1]
    config = harness.base_config("legacy", legacy, tmp_path, image=harness.copy_image("torus", tmp_path),
                                 cursor=[-1.0, 0.5, 0.25], damaged_dir=str(tmp_path / "damaged"),
                                 existing=["torus"])
    config["request"] = {"face_count": 2000, "texture_size": 256}
    config["prefs"].update(target_size=0.3, ao_into_base_color=True)
    report, _ = harness.run_driver("job", config, tmp_path, blender=blender)
    assert report["blender"].startswith("3.") and report["job"]["status"] == "COMPLETED", report["job"]
    obj = report["object"]
    # Blender 3.4 renames the *other* datablock when a name is taken: the artist's must keep theirs.
    assert report["existing"] == {"torus": ["torus", "torus", "Gen3D_torus", "Gen3D_torus_albedo"]}
    assert obj["name"] == "torus.001" and obj["mesh_name"] == "torus.001"
    assert obj["material"]["nodes"]["Gen3D Albedo"]["image"] == "Gen3D_torus.001_albedo"
    check_placement(obj, [-1.0, 0.5, 0.25])
    assert max(obj["dimensions"]) == pytest.approx(0.3, abs=1e-4)
    check_material(obj["material"], uv_map=obj["uv_maps"][0], ao_multiplied=True)
    assert report["damaged"]["unchanged"] and "albedo.png" in report["damaged"]["error"]


def test_batch_generates_imports_in_a_row_and_saves_the_blend(blender, tmp_path):
    images = [harness.copy_image("sphere", tmp_path), harness.copy_image("torus", tmp_path)]
    out, blend = tmp_path / "out", tmp_path / "scene.blend"
    proc = run_batch(blender, tmp_path, *images, "--out", str(out), "--save-blend", str(blend), "--face-count",
                     "2000", "--texture-size", "256", "--target-size", "0.8")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["ok"], summary["failed"], summary["backend"]) == (2, 0, "local")
    assert summary["blend"] == str(blend)
    assert summary["addon"] == {"module": "gen3d", "path": os.path.join(harness.ROOT, "blender_addon"),
                                "installed": False}                # --factory-startup: from the source tree
    assert [(row["name"], row["status"], row["object"]) for row in summary["results"]] == [
        ("sphere", "COMPLETED", "sphere"), ("torus", "COMPLETED", "torus")]
    for row in summary["results"]:
        assert os.path.isfile(os.path.join(row["job_dir"], "meta.json")) and row["error"] is None

    report, _ = harness.run_driver("inspect_blend", {"blend": str(blend)}, tmp_path)   # opened with bpy 4.5
    objects = report["objects"]
    assert report["all_objects"] == ["sphere", "torus"]                # no default Cube, Camera, Light
    sphere, torus = objects["sphere"]["bounds"], objects["torus"]["bounds"]
    assert sphere[0][0] == pytest.approx(0.0, abs=1e-4)                # the row starts at the origin...
    assert torus[0][0] == pytest.approx(sphere[1][0] + 0.25 * 0.8, abs=1e-4)   # ...with a gap, no overlap
    for obj in objects.values():
        assert obj["bounds"][0][2] == pytest.approx(0.0, abs=1e-4)     # on the ground
        assert (obj["bounds"][0][1] + obj["bounds"][1][1]) / 2 == pytest.approx(0.0, abs=1e-4)
        assert obj["rotation_mode"] == "XYZ"
        assert max(obj["dimensions"]) == pytest.approx(0.8, abs=1e-3)
        assert obj["images_exist"] and len(obj["materials"]) == 1
        check_material(obj["material"], uv_map=obj["uv_maps"][0], ao_multiplied=False)
    completed = 2                                                       # GEN3D_PG_job.status enum index
    assert [(job["name"], job["status"], job["object_name"], job["folder"]) for job in report["jobs"]] == [
        (row["name"], completed, row["object"], row["job_dir"]) for row in summary["results"]]


def test_batch_keeps_the_startup_scene_when_asked(blender, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    blend = tmp_path / "kept.blend"
    proc = run_batch(blender, tmp_path, str(bad), "--out", str(tmp_path / "out"), "--save-blend", str(blend),
                     "--keep-scene")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    report, _ = harness.run_driver("inspect_blend", {"blend": str(blend)}, tmp_path)
    assert report["all_objects"] == ["Camera", "Cube", "Light"]


def test_batch_exit_code_and_summary_report_failures(blender, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    proc = run_batch(blender, tmp_path, str(bad), str(tmp_path / "missing.png"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["ok"], summary["failed"]) == (0, 2)
    messages = [row["error"]["message"] for row in summary["results"]]
    assert "cannot read broken.png" in messages[0] and "does not exist" in messages[1]
    assert all(row["status"] == "FAILED" for row in summary["results"])
    assert "Traceback" not in proc.stdout + proc.stderr


def test_batch_uses_the_installed_addon_when_enabled(blender, tmp_path):
    legacy = harness.build_zips(str(tmp_path / "dist"))[1]
    harness.run_driver("install_persist", {"kind": "legacy", "zip": legacy}, tmp_path, blender=blender)
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    proc = subprocess.run([blender, "-b", "-P", BATCH, "--", str(bad), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120,
                          env=harness.isolated_env(str(tmp_path / "blender-home")), cwd=str(tmp_path))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    addon = json.loads((tmp_path / "out" / "summary.json").read_text())["addon"]
    assert addon["installed"] and addon["module"] == "gen3d"
    assert addon["path"].startswith(str(tmp_path / "blender-home"))


def test_batch_usage_error_exits_2(blender, tmp_path):
    proc = subprocess.run([blender, "-b", "--factory-startup", "-P", BATCH, "--", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env=harness.isolated_env(str(tmp_path / "blender-home")))
    assert proc.returncode == 2 and "IMAGE" in proc.stderr
