"""The built add-on inside Blender 4.5 (the bpy module), each test in a fresh Blender process:
install and enable the zips, register/unregister, a real local job through the worker with the
material graph checked, re-import, error paths, worker crash and restart, Cancel, and shutdown."""

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "blender_scripts"))
import harness  # noqa: E402

EXPECTED_TYPES = {"GEN3D_OT_generate", "GEN3D_OT_generate_dropped", "GEN3D_OT_cancel", "GEN3D_OT_import_result",
                  "GEN3D_OT_open_folder", "GEN3D_OT_remove_job", "GEN3D_OT_check_engines", "GEN3D_OT_stop_worker",
                  "GEN3D_OT_clear_message", "GEN3D_OT_setup_backend", "GEN3D_OT_install_engine",
                  "GEN3D_OT_cancel_setup_task", "GEN3D_OT_check_python", "GEN3D_OT_choose_python",
                  "GEN3D_OT_report", "GEN3D_OT_texture_selected", "GEN3D_OT_apply_texture", "GEN3D_PT_main", "GEN3D_PT_advanced", "GEN3D_PT_jobs", "GEN3D_UL_jobs"}
REQUEST_FIELDS = {"engine", "texture_engine", "remove_background", "texture", "seed", "octree_resolution",
                  "num_inference_steps", "guidance_scale", "face_count", "texture_size"}


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    return harness.build_zips(str(tmp_path_factory.mktemp("dist")))


def check_registration(report, file_handler):
    expected = EXPECTED_TYPES | ({"GEN3D_FH_image"} if file_handler else set())
    assert set(report["enabled"]["types"]) == expected
    assert set(report["enabled"]["operators"]) == {name[len("GEN3D_OT_"):] for name in expected
                                                   if name.startswith("GEN3D_OT_")}
    assert report["enabled"]["scene_property"]
    assert report["prefs_class"] == "GEN3D_AP_preferences"
    assert REQUEST_FIELDS <= set(report["scene_props"])       # the advanced panel covers every request field
    assert report["handlers_when_enabled"] == 2 and report["handlers_after_disable"] == 0
    for state in ("disabled", "disabled_again"):
        assert report[state] == {"types": [], "operators": [], "scene_property": False}
    assert report["re_enabled"] == report["enabled"]
    drawn = {(entry[0], entry[1]) for entry in report["drawn"]}
    assert ("operator", "gen3d.generate") in drawn and ("operator", "gen3d.cancel") in drawn
    assert ("operator", "gen3d.import_result") in drawn and ("operator", "gen3d.open_folder") in drawn
    assert ("template_list", "GEN3D_UL_jobs") in drawn
    assert {("prop", name) for name in REQUEST_FIELDS - {"engine"}} <= drawn
    assert {("prop", name) for name in ("backend", "python_path", "backend_dir", "device", "keep_models_loaded",
                                        "remote_url", "api_key", "output_dir", "place_at_cursor", "target_size",
                                        "ao_into_base_color")} <= drawn


@pytest.mark.parametrize("kind", ["legacy", "extension"])
def test_install_enable_register_and_unregister(kind, zips, tmp_path):
    extension, legacy = zips
    report, _ = harness.run_driver("register", {"kind": kind, "zip": extension if kind == "extension" else legacy},
                                   tmp_path)
    assert report["module"] == ("gen3d" if kind == "legacy" else "bl_ext.user_default.gen3d")
    assert report["file_handler_expected"]
    check_registration(report, file_handler=True)
    assert ("progress", "()") in {(entry[0], entry[1]) for entry in report["drawn"]}   # 4.0+ progress bar


def test_generate_imports_a_wired_pbr_object_at_the_cursor(zips, tmp_path):
    config = harness.base_config("extension", zips[0], tmp_path, image=harness.copy_image("sphere", tmp_path),
                                 cursor=[1.0, 2.0, 3.0], damaged_dir=str(tmp_path / "damaged"))
    config["prefs"].update(target_size=0.5, place_at_cursor=True, ao_into_base_color=True)
    report, _ = harness.run_driver("job", config, tmp_path)

    assert report["generate"] == {"result": ["FINISHED"], "error": None}
    assert report["finished"] and report["job"]["status"] == "COMPLETED", report["job"]
    assert report["items"][0]["status"] == "COMPLETED" and report["items"][0]["object_name"] == "sphere"
    assert report["import_undo_flag"]
    assert "worker ready" in report["worker_status"]
    obj = report["object"]
    assert obj["name"] == "sphere" and obj["type"] == "MESH" and obj["mesh_name"] == "sphere"
    check_placement(obj, [1.0, 2.0, 3.0])
    assert max(obj["dimensions"]) == pytest.approx(0.5, abs=1e-4)
    assert obj["scale"] == pytest.approx([1.0, 1.0, 1.0])          # the size is baked into the mesh
    assert obj["faces"] >= 4000 and obj["uv_maps"]
    assert len(obj["materials"]) == 1
    assert report["active"] == "sphere" and report["selected"] == ["sphere"]
    check_material(obj["material"], uv_map=obj["uv_maps"][0], ao_multiplied=True)

    reimported = report["reimported"]
    assert report["reimport"]["error"] is None
    assert reimported["name"] == "sphere.001"
    check_placement(reimported, [0.0, 0.0, 0.0])
    assert max(reimported["dimensions"]) == pytest.approx(2.0, abs=0.05)     # target size 0 keeps it
    check_material(reimported["material"], uv_map=reimported["uv_maps"][0], ao_multiplied=False)

    damaged = report["damaged"]
    assert damaged["result"] == ["CANCELLED"] and damaged["unchanged"]
    assert "albedo.png" in damaged["error"] and "damaged" in damaged["error"]
    assert "Traceback" not in damaged["error"] and damaged["panel_message"].startswith("Gen3D: ")
    assert report["orphan_partials"] == []


def check_placement(obj, point):
    """Base on the point: lowest vertex at its z, centred on it in x and y; origin there; Euler XYZ."""
    (low, high) = obj["bounds"]
    assert low[2] == pytest.approx(point[2], abs=1e-4)
    assert [(low[i] + high[i]) / 2 for i in (0, 1)] == pytest.approx(point[:2], abs=1e-4)
    assert obj["location"] == pytest.approx(point, abs=1e-4)
    assert obj["rotation_mode"] == "XYZ"


def check_material(material, uv_map, ao_multiplied):
    nodes, into_bsdf = material["nodes"], harness.principled_inputs(material)
    images = sorted(node["location"] for node in nodes.values() if node["type"] == "ShaderNodeTexImage")
    assert len(images) == 5 and len({x for x, _y in images}) == 1        # one column...
    assert all(b[1] - a[1] >= 300 for a, b in zip(images, images[1:]))   # ...with no node over another
    albedo, albedo_node = harness.node_for_file(material, "albedo.png")
    metallic, metallic_node = harness.node_for_file(material, "metallic.png")
    roughness, roughness_node = harness.node_for_file(material, "roughness.png")
    normal, normal_node = harness.node_for_file(material, "normal.png")
    ao, ao_node = harness.node_for_file(material, "ao.png")
    assert albedo_node["colorspace"] == "sRGB"
    for node in (metallic_node, roughness_node, normal_node, ao_node):
        assert node["colorspace"] == "Non-Color" and node["type"] == "ShaderNodeTexImage"
    assert into_bsdf["Metallic"] == (metallic, "Color")
    assert into_bsdf["Roughness"] == (roughness, "Color")
    normal_map, socket = into_bsdf["Normal"]
    assert socket == "Normal" and nodes[normal_map]["type"] == "ShaderNodeNormalMap"
    assert nodes[normal_map]["space"] == "TANGENT" and nodes[normal_map]["uv_map"] == uv_map
    assert harness.principled_inputs(material, normal_map) == {"Color": (normal, "Color")}
    base_from, base_socket = into_bsdf["Base Color"]
    if ao_multiplied:
        assert nodes[base_from]["type"] == "ShaderNodeMix" and nodes[base_from]["blend_type"] == "MULTIPLY"
        assert nodes[base_from]["data_type"] == "RGBA" and base_socket == "Result"
        assert harness.principled_inputs(material, base_from) == {"A": (albedo, "Color"), "B": (ao, "Color")}
    else:
        assert (base_from, base_socket) == (albedo, "Color")
        assert not [link for link in material["links"] if link[0] == ao]       # kept, not wired
    assert ["Principled BSDF", "BSDF", "Material Output", "Surface"] in material["links"]


def test_an_unsure_cut_out_is_shown_on_the_job(zips, tmp_path):
    """A cluttered photo: the job completes (the worker exits 0) and is imported, but the job's row,
    the panel and the object carry meta.json's warning instead of passing as a clean success."""
    import shutil
    image = str(tmp_path / "rocket.jpg")
    shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "rocket.jpg"), image)
    config = harness.base_config("extension", zips[0], tmp_path, image=image)
    report, _ = harness.run_driver("warning", config, tmp_path)
    assert report["finished"] and report["job"]["status"] == "COMPLETED", report["job"]
    assert report["job"]["object_name"] == "rocket" and not report["job"]["import_error"]
    assert "background removal" in report["item_warning"] and "unsure" in report["item_warning"]
    assert report["row"].startswith("Done: rocket - warning: ") and "unsure" in report["row"]
    assert report["panel"]["is_warning"] and not report["panel"]["is_error"]
    assert report["panel"]["message"].startswith("Imported rocket. Warning: ")
    assert report["object_warning"] == report["item_warning"]


def test_loaded_images_become_files_for_the_backend(zips, tmp_path):
    image = harness.copy_image("sphere", tmp_path)
    config = {"kind": "legacy", "zip": zips[1], "image": image, "out": str(tmp_path / "out")}
    report, _ = harness.run_driver("sources", config, tmp_path)
    assert report["on_disk"]["path"] == image and report["on_disk"]["name"] == "sphere"
    with open(image, "rb") as handle:
        assert report["packed"]["bytes"] == len(handle.read())            # the packed file's own bytes
    assert report["packed"]["path"].startswith(str(tmp_path / "out" / ".sources"))
    assert report["packed"]["name"] == "sphere"                             # not "sphere.png.001"
    generated = report["generated"]
    assert generated["name"] == "painted" and generated["size"] == [32, 16]
    assert generated["first_pixel"] == pytest.approx([0.25, 0.5, 0.75, 1.0], abs=0.01)
    assert "no pixels Blender can read" in report["empty"]["error"]
    assert report["images_after"] == ["nothing", "painted", "sphere.png", "sphere.png.001"]   # no probes left


def test_errors_are_clear_messages_and_leave_the_scene_alone(zips, tmp_path):
    from PIL import Image
    bad = tmp_path / "bad.png"
    bad.write_text("this is not an image\n")
    empty = tmp_path / "empty.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(empty)
    no_packages = tmp_path / "python-without-packages"          # a real Python that lacks the backend's packages
    no_packages.write_text('#!/bin/sh\nexec "%s" -S "$@"\n' % harness.VENV_PYTHON)
    no_packages.chmod(0o755)
    config = harness.base_config("legacy", zips[1], tmp_path, image=harness.copy_image("sphere", tmp_path),
                                 bad_image=str(bad), empty_image=str(empty),
                                 missing_python=str(tmp_path / "no" / "python"), not_executable=str(bad),
                                 python_without_backend=str(no_packages))
    report, _ = harness.run_driver("errors", config, tmp_path)

    immediate = {"missing_python": "does not exist", "not_executable": "is not an executable program",
                 "unreadable_image": "Blender cannot read bad.png as an image", "missing_image": "does not exist"}
    for case, text in immediate.items():
        outcome = report[case]
        assert outcome["result"] == ["CANCELLED"], case
        assert text in outcome["error"] and text in outcome["panel_message"], (case, outcome)
        assert outcome["panel_is_error"] and outcome["unchanged"] and outcome["queued"] == 0, case
        assert "Traceback" not in outcome["error"]
    assert "Preferences > Add-ons > Gen3D" in report["missing_python"]["error"]

    no_start = report["python_without_backend"]
    assert no_start["finished"] and no_start["status"] == "FAILED" and no_start["error_code"] == "ENGINE_UNAVAILABLE"
    assert "before it was ready" in no_start["job_message"]
    assert "lacks the backend's packages" in no_start["job_message"]
    assert "No module named" in no_start["job_message"]             # the worker's own last words
    assert no_start["panel_is_error"] and no_start["unchanged"] and not no_start["folder_exists"]

    rejected = report["backend_rejects"]
    assert rejected["finished"] and rejected["status"] == "FAILED" and rejected["error_code"] == "EMPTY_FOREGROUND"
    assert "No object was found" in rejected["panel_message"] and rejected["panel_is_error"]
    assert rejected["unchanged"] and not rejected["folder_exists"]
    assert [item["status"] for item in rejected["items"]] == ["FAILED", "FAILED"]


def test_worker_crash_restart_cancel_and_disable(zips, tmp_path):
    wrapper = tmp_path / "python-wrapper"        # says something on stderr, like a real crashing worker would
    wrapper.write_text('#!/bin/sh\necho "gen3d test wrapper: starting the worker" >&2\nexec "%s" "$@"\n'
                       % harness.VENV_PYTHON)
    wrapper.chmod(0o755)
    config = harness.base_config("legacy", zips[1], tmp_path, image=harness.copy_image("torus", tmp_path))
    config["prefs"]["python_path"] = str(wrapper)
    report, _ = harness.run_driver("crash_cancel", config, tmp_path)

    assert report["first"]["running"]
    crash = report["crash"]
    assert crash["status"] == "FAILED" and "stopped unexpectedly (exit code -9)" in crash["message"]
    assert "gen3d test wrapper: starting the worker" in crash["message"]      # the stderr tail is shown
    assert crash["message"] in crash["panel_message"] and crash["unchanged"]
    assert not crash["folder_exists"] and crash["partials"] == []

    second = report["second"]
    assert second["running"] and second["status"] == "RUNNING"
    assert second["pid"] != report["first"]["pid"]                            # restarted on next use

    cancel = report["cancel"]
    assert cancel["result"] == ["FINISHED"] and cancel["status"] == "CANCELLED"
    assert cancel["seconds"] < 2.0, cancel["seconds"]
    assert not cancel["folder_exists"] and cancel["partials"] == [] and cancel["unchanged"]
    assert cancel["items"][-1]["status"] == "CANCELLED"

    assert report["queued_cancel"] == {"status": "CANCELLED", "first_active": True}
    disable = report["disable"]
    assert disable["worker_alive_before"] and not disable["worker_alive_after"]
    assert disable["job_status"] == "CANCELLED" and disable["seconds"] < 5


def test_a_job_running_when_blender_closes_is_finished_and_offered_next_time(zips, tmp_path):
    blend = str(tmp_path / "scene.blend")
    config = harness.base_config("legacy", zips[1], tmp_path, image=harness.copy_image("sphere", tmp_path),
                                 blend=blend)
    report, _ = harness.run_driver("exit_with_job", config, tmp_path)
    assert report["running"] and report["saved_progress"] > 0        # the saved list has its progress
    # Blender is gone; its worker completes the job it holds, then exits by itself.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            os.kill(report["worker_pid"], 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("worker %s still running 240 s after Blender exited" % report["worker_pid"])
    assert os.path.isfile(os.path.join(report["job_dir"], "meta.json")), os.listdir(os.path.dirname(report["job_dir"]))

    config["prefs"]["pack_textures"] = True
    reopened, _ = harness.run_driver("reopen", config, tmp_path / "second")
    assert [(i["job_id"], i["status"]) for i in reopened["after_load"]] == [(report["job_id"], "COMPLETED")]
    assert "finished after Blender closed" in reopened["after_load"][0]["message"]
    assert reopened["import"]["error"] is None and reopened["object"]["name"] == "sphere"
    assert reopened["packed"] == [True] * 5
    assert reopened["items"][0]["object_name"] == "sphere"


def test_sidebar_polish(zips, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "bin").mkdir()
    config = harness.base_config("extension", zips[0], tmp_path, image=harness.copy_image("sphere", tmp_path),
                                 missing_image=str(tmp_path / "nope.png"), folder=str(tmp_path / "folder"),
                                 empty_path=str(tmp_path / "bin"))
    report, _ = harness.run_driver("polish", config, tmp_path)
    assert report["fast_faces"] == 10000
    assert report["preset_after_edit"] == "CUSTOM"                     # no preset stays highlighted
    assert report["balanced"] == ["BALANCED", 40000, "1024"]
    assert "does not exist" in report["message_before"] and report["message_after_new_image"] == ""
    assert all(report["hidden"].values()), report["hidden"]
    assert report["engine_names"]["builtin"] == "Built-in" and report["engine_names"]["hunyuan3d-2.1"] == "Hunyuan3D 2.1"
    steps = {"num_inference_steps", "guidance_scale"}
    assert not steps & set(report["advanced_props"]["builtin"])
    assert steps <= set(report["advanced_props"]["hunyuan3d-2.1"])
    # Re-import is offered for finished jobs only (the other import button is "Import Result Folder...").
    assert report["import_offers"] == {"COMPLETED": 2, "FAILED": 1, "CANCELLED": 1}
    assert report["summaries"] == {"COMPLETED": "Done: cone", "FAILED": "Failed: No object was found",
                                   "CANCELLED": "Cancelled during shape"}
    opened = report["open_folder"]
    assert opened["result"] == ["CANCELLED"] and "xdg-open" in opened["error"] and str(tmp_path / "folder") in opened["message"]
