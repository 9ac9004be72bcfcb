"""The add-on's REMOTE backend inside real Blender (the bpy module, in a fresh process): the add-on
package picks RemoteClient for REMOTE settings, runs a job against the live self-hosted server on a
job thread, and its importer (blender_addon/importer.py, which runs bpy.ops.import_scene.gltf) brings
the downloaded result into the scene with its PBR material."""

import json
import os
import subprocess
import sys
import textwrap

from test_remote_support import API_KEY, ROOT, SMALL, SPHERE

pytest_plugins = ["test_remote_support"]

SCRIPT = textwrap.dedent('''
    import importlib.util, json, os, sys, threading
    import bpy

    root, config_path, report_path = sys.argv[1:4]
    with open(config_path) as handle:
        config = json.load(handle)
    addon_dir = os.path.join(root, "blender_addon")
    spec = importlib.util.spec_from_file_location("gen3d", os.path.join(addon_dir, "__init__.py"),
                                                  submodule_search_locations=[addon_dir])
    gen3d = importlib.util.module_from_spec(spec)
    sys.modules["gen3d"] = gen3d
    spec.loader.exec_module(gen3d)
    from gen3d import clients, importer, settings

    report = {"online_access": getattr(bpy.app, "online_access", None)}
    backend = settings.BackendSettings(
        backend=settings.REMOTE, remote_url=config["url"], api_key=config["key"], output_dir=config["out"],
        # bpy as a module starts with online access off; the endpoint here is on loopback.
        online_access=True).resolve()
    client = clients.make_client(backend)
    client.check()
    report["client"] = "%s.%s" % (type(client).__module__, type(client).__name__)

    events, outcome = [], {}
    job_dir = os.path.join(config["out"], "sphere")

    def job():                       # the add-on runs clients on a job thread, never the main thread
        try:
            client.run("feedc0defeedc0de", config["request"], job_dir, events.append, threading.Event())
        except Exception as exc:
            outcome["error"] = repr(exc)

    thread = threading.Thread(target=job)
    thread.start()
    thread.join(600)
    report["error"] = outcome.get("error")
    report["stages"] = sorted({event["stage"] for event in events})
    report["final_progress"] = events[-1]["progress"] if events else None
    report["progress"] = [event["progress"] for event in events]
    if not report["error"]:
        before = set(bpy.data.objects.keys())          # the default scene's cube, camera and light
        root_object = importer.import_result(bpy.context, job_dir, name="sphere")
        meshes = [obj for obj in bpy.data.objects if obj.type == "MESH" and obj.name not in before]
        report["root"] = root_object.name
        report["meshes"] = [{"name": obj.name, "faces": len(obj.data.polygons),
                             "materials": [slot.material.name for slot in obj.material_slots if slot.material]}
                            for obj in meshes]
        material = meshes[0].material_slots[0].material
        bsdf = next(node for node in material.node_tree.nodes if node.type == "BSDF_PRINCIPLED")
        report["linked"] = sorted(name for name in ("Base Color", "Metallic", "Roughness", "Normal")
                                  if bsdf.inputs[name].is_linked)
        report["images"] = sorted(os.path.basename(image.filepath) for image in bpy.data.images if image.filepath)
    with open(report_path, "w") as handle:
        json.dump(report, handle)
''')


def test_addon_remote_backend_in_blender(disk_server, tmp_path):
    script = tmp_path / "remote_in_blender.py"
    script.write_text(SCRIPT)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"url": disk_server.url, "key": API_KEY, "out": str(tmp_path / "out"),
                                  "request": dict(SMALL, image_path=SPHERE)}))
    os.makedirs(tmp_path / "out")
    report_path = tmp_path / "report.json"
    result = subprocess.run([sys.executable, str(script), ROOT, str(config), str(report_path)], cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and report_path.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_path.read_text())

    assert report["client"] == "gen3d.remote_client.RemoteClient"
    assert report["error"] is None, report["error"]
    # The client polls with back-off (up to 2 s), so a short stage (the built-in shape of a small sphere on a
    # loaded machine) may pass between two polls: require the ends and some pipeline stage in between.
    assert {"queued", "upload"} <= set(report["stages"]) and report["final_progress"] == 1.0
    assert set(report["stages"]) & {"preprocess", "shape", "texture", "export"}, report["stages"]
    assert report["progress"] == sorted(report["progress"]), report["progress"]
    assert report["root"] == "sphere"
    assert len(report["meshes"]) == 1 and report["meshes"][0]["faces"] > 1000
    assert report["meshes"][0]["materials"] == ["Gen3D_sphere"]
    assert report["linked"] == ["Base Color", "Metallic", "Normal", "Roughness"]
    assert {"albedo.png", "normal.png", "roughness.png", "metallic.png", "ao.png"} <= set(report["images"])
