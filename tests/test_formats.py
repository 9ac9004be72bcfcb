"""Extra mesh formats (request field `formats`, CLI --format, batch --format): each file read back by a
real importer - trimesh for OBJ/PLY, Blender 4.5's OBJ, PLY and USD importers (the bpy module) - and
compared with the GLB's own arrays; bad names are INVALID_INPUT; the RunPod worker uploads and lists
the extra files; the batch writes USDZ through Blender's USD exporter (and says why not on Blender 3.4)."""

import json
import os
import subprocess
import sys

import numpy as np
import pygltflib
import pytest
import trimesh
from PIL import Image

from shared import errors
from shared.errors import Gen3DError
from shared.manifest import read_manifest, verify_files
from shared.request import parse_request

from conftest import data, run_cli

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "blender_scripts"))
import harness  # noqa: E402

pytest_plugins = ["test_remote_support"]

READBACK = os.path.join(harness.SCRIPTS, "formats_readback.py")
BATCH = os.path.join(harness.ROOT, "blender_addon", "batch.py")
# octree 64: the shape stage takes a few seconds on CPU; the formats do not depend on size.
TINY = ["--face-count", "2000", "--texture-size", "256", "--octree-resolution", "64"]
MAPS = {"map_Kd": "albedo.png", "map_Pr": "roughness.png", "map_Pm": "metallic.png", "norm": "normal.png"}


def glb_arrays(path):
    """POSITION, NORMAL, TEXCOORD_0 (or None) and faces exactly as stored in the GLB."""
    gltf = pygltflib.GLTF2().load(path)
    blob = gltf.binary_blob()

    def accessor(index, width, dtype=np.float32):
        acc = gltf.accessors[index]
        view = gltf.bufferViews[acc.bufferView]
        return np.frombuffer(blob, dtype, acc.count * width, view.byteOffset + (acc.byteOffset or 0)).reshape(-1, width)

    primitive = gltf.meshes[0].primitives[0]
    uv = primitive.attributes.TEXCOORD_0
    return {"vertices": accessor(primitive.attributes.POSITION, 3), "normals": accessor(primitive.attributes.NORMAL, 3),
            "uvs": accessor(uv, 2) if uv is not None else None,
            "faces": accessor(primitive.indices, 1, np.uint32).reshape(-1, 3)}


def ply_columns(mesh):
    return mesh.metadata["_ply_raw"]["vertex"]["data"]


def mtl_lines(path):
    with open(path, encoding="utf-8") as handle:
        return [line.split() for line in handle if line.strip() and not line.startswith("#")]


def srgb_to_linear(value):
    return np.where(value <= 0.04045, value / 12.92, ((value + 0.055) / 1.055) ** 2.4)


def readback(tmp_path, name, **config):
    """Import the given files in a fresh Blender 4.5 (bpy module); returns its report."""
    config_path, report_path = tmp_path / ("%s-config.json" % name), tmp_path / ("%s-report.json" % name)
    config_path.write_text(json.dumps(config))
    proc = subprocess.run([harness.VENV_PYTHON, READBACK, str(config_path), str(report_path)], capture_output=True,
                          text=True, timeout=300, env=harness.isolated_env(str(tmp_path / "blender-home")),
                          cwd=str(tmp_path))
    assert report_path.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert "exception" not in report, report["exception"]
    return report


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    """A textured result written by the CLI with --format glb,obj,ply."""
    out = tmp_path_factory.mktemp("formats") / "torus"
    proc = run_cli("generate", data("torus", "input.png"), "--out", str(out), "--format", "glb,obj,ply",
                   "--device", "cpu", "--quiet", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mesh.glb + mesh.obj + mesh.ply  (" in proc.stdout
    return str(out)


@pytest.fixture(scope="module")
def untextured(tmp_path_factory, pipeline):
    out = str(tmp_path_factory.mktemp("formats") / "plain")
    request = parse_request({"image_path": data("sphere", "input.png"), "texture": False, "formats": ["ply", "obj"],
                             "face_count": 2000, "octree_resolution": 64})
    pipeline.run(request, out)
    return out


# --- the request field --------------------------------------------------------------------------------------
def test_formats_default_to_glb_and_are_normalised():
    assert parse_request({"image_path": "a.png"}).formats == ("glb",)
    request = parse_request({"image_path": "a.png", "formats": ["ply", "obj", "ply"]})
    assert request.formats == ("glb", "obj", "ply")                       # glb always, fixed order
    assert request.with_changes(seed=7).formats == ("glb", "obj", "ply")
    assert json.loads(json.dumps(request.to_dict()))["formats"] == ["glb", "obj", "ply"]
    assert request.effective_params()["formats"] == ["glb", "obj", "ply"]


@pytest.mark.parametrize("value, words", [
    (["glb", "stl"], ["'formats'", "glb, obj, ply", "'stl'"]),
    ("obj", ["'formats'", "must be a list"]),
    (["usdz"], ["'formats'", "blender_addon/batch.py", "--format usdz", "File > Export"]),
])
def test_bad_formats_are_invalid_input(value, words):
    with pytest.raises(Gen3DError) as caught:
        parse_request({"image_path": "a.png", "formats": value})
    assert caught.value.code == errors.INVALID_INPUT and caught.value.stage == "queued"
    assert all(word in caught.value.message for word in words), caught.value.message


def test_cli_refuses_unknown_and_usdz_formats(tmp_path):
    for formats, word in (("glb,stl", "'stl'"), ("obj,usdz", "blender_addon/batch.py")):
        proc = run_cli("generate", data("torus", "input.png"), "--out", str(tmp_path / "bad"), "--format", formats)
        assert proc.returncode == 2, proc.stderr[-2000:]
        error = json.loads(proc.stderr.strip().splitlines()[-1])["error"]
        assert error["code"] == "INVALID_INPUT" and word in error["message"]
        assert not (tmp_path / "bad").exists()


# --- what the backend writes, read by trimesh -----------------------------------------------------------------
def test_manifest_lists_and_checks_the_extra_files(textured, untextured):
    manifest = read_manifest(textured)
    assert manifest["mesh"]["formats"] == {"glb": "mesh.glb", "obj": "mesh.obj", "ply": "mesh.ply"}
    assert {"mesh.glb", "mesh.obj", "mesh.mtl", "mesh.ply", "albedo.png"} <= set(manifest["files"])
    assert manifest["params"]["formats"] == ["glb", "obj", "ply"]
    assert verify_files(textured, manifest) == []
    plain = read_manifest(untextured)
    assert set(plain["files"]) == {"mesh.glb", "input.png", "mesh.obj", "mesh.mtl", "mesh.ply"}
    assert verify_files(untextured, plain) == []


def test_obj_holds_the_glb_mesh_and_its_pbr_maps(textured):
    glb = glb_arrays(os.path.join(textured, "mesh.glb"))
    obj = trimesh.load(os.path.join(textured, "mesh.obj"), process=False, maintain_order=True)
    assert len(obj.vertices) == len(glb["vertices"]) and np.array_equal(obj.faces, glb["faces"])
    np.testing.assert_allclose(obj.vertices, glb["vertices"], atol=1e-7)
    np.testing.assert_allclose(obj.vertex_normals, glb["normals"], atol=1e-6)
    # Same texture mapping: trimesh turns OBJ's v-up into the GLB's v-down convention on the way in.
    np.testing.assert_allclose(obj.visual.uv[:, 0], glb["uvs"][:, 0], atol=1e-7)
    np.testing.assert_allclose(1.0 - obj.visual.uv[:, 1], glb["uvs"][:, 1], atol=1e-6)
    # Upright frame as in the GLB: resting on y = 0, largest side 2.
    assert obj.bounds[0][1] == pytest.approx(0.0, abs=1e-6) and obj.extents.max() == pytest.approx(2.0, abs=1e-4)

    lines = mtl_lines(os.path.join(textured, "mesh.mtl"))
    keys = {line[0]: line[-1] for line in lines}
    assert {key: keys.get(key) for key in MAPS} == MAPS
    for file in set(MAPS.values()):
        assert os.path.isfile(os.path.join(textured, file))
    material = trimesh.load(os.path.join(textured, "mesh.obj"), process=False).visual.material
    with Image.open(os.path.join(textured, "albedo.png")) as albedo:
        assert np.array_equal(np.asarray(material.image.convert("RGB")), np.asarray(albedo.convert("RGB")))
    with open(os.path.join(textured, "mesh.obj"), encoding="utf-8") as handle:
        text = handle.read()
    usemtl = [line.split()[1] for line in text.splitlines() if line.startswith("usemtl")]
    assert "mtllib mesh.mtl" in text and usemtl == [keys["newmtl"]]


def test_ply_holds_the_glb_mesh_with_albedo_vertex_colours(textured):
    glb = glb_arrays(os.path.join(textured, "mesh.glb"))
    ply = trimesh.load(os.path.join(textured, "mesh.ply"), process=False)
    columns = ply_columns(ply)
    assert np.array_equal(ply.vertices, glb["vertices"]) and np.array_equal(ply.faces, glb["faces"])
    assert np.array_equal(np.column_stack([columns["nx"], columns["ny"], columns["nz"]]), glb["normals"])
    np.testing.assert_allclose(columns["s"], glb["uvs"][:, 0], atol=1e-7)
    np.testing.assert_allclose(1.0 - columns["t"], glb["uvs"][:, 1], atol=1e-6)

    colours = np.column_stack([columns["red"], columns["green"], columns["blue"]]).astype(int)
    with Image.open(os.path.join(textured, "albedo.png")) as image:
        albedo = np.asarray(image.convert("RGB")).astype(int)
    height, width = albedo.shape[:2]
    # Bilinear sampling at the vertex's UV (texel centres at (i + 0.5) / size): each colour lies
    # between the darkest and brightest of the four texels around that point.
    x = np.clip(glb["uvs"][:, 0] * width - 0.5, 0, width - 1)
    y = np.clip(glb["uvs"][:, 1] * height - 0.5, 0, height - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    corners = np.stack([albedo[y0, x0], albedo[y0, x1], albedo[y1, x0], albedo[y1, x1]])
    assert np.all(colours >= corners.min(axis=0) - 1) and np.all(colours <= corners.max(axis=0) + 1)
    nearest = albedo[np.round(y).astype(int), np.round(x).astype(int)]
    assert np.abs(colours - nearest).mean() < 3.0
    assert colours.std(axis=0).min() > 5            # a real texture, not one flat colour
    assert np.all(columns["alpha"] == 255)


def test_untextured_formats_carry_the_grey_material_and_no_colours(untextured):
    glb = glb_arrays(os.path.join(untextured, "mesh.glb"))
    obj = trimesh.load(os.path.join(untextured, "mesh.obj"), process=False, maintain_order=True)
    np.testing.assert_allclose(obj.vertices, glb["vertices"], atol=1e-7)
    assert np.array_equal(obj.faces, glb["faces"])
    keys = {line[0]: line[1:] for line in mtl_lines(os.path.join(untextured, "mesh.mtl"))}
    assert keys["Kd"] == ["0.800000"] * 3 and keys["Pr"] == ["0.600000"] and not set(MAPS) & set(keys)
    ply = trimesh.load(os.path.join(untextured, "mesh.ply"), process=False)
    assert np.array_equal(ply.vertices, glb["vertices"])
    assert "red" not in ply_columns(ply).dtype.names and "s" not in ply_columns(ply).dtype.names


# --- Blender's importers ----------------------------------------------------------------------------------------
def test_blender_imports_obj_with_its_maps_linked_and_ply_with_colours(textured, tmp_path):
    report = readback(tmp_path, "backend", obj=os.path.join(textured, "mesh.obj"),
                      ply=os.path.join(textured, "mesh.ply"))
    glb = glb_arrays(os.path.join(textured, "mesh.glb"))
    (obj,) = report["obj"]
    assert obj["vertices"] == len(glb["vertices"]) and obj["faces"] == len(glb["faces"])
    assert obj["uv_maps"] == ["UVMap"]
    (material,) = obj["materials"]
    linked = {socket: os.path.basename(info["path"]) for socket, info in material["linked"].items() if info}
    assert linked == {"Base Color": "albedo.png", "Roughness": "roughness.png", "Metallic": "metallic.png",
                      "Normal": "normal.png"}
    assert material["linked"]["Normal"]["via"] == ["NORMAL_MAP"]
    assert all(info["size"] == [256, 256] for info in material["linked"].values())
    # Blender's OBJ importer turns Y up into Z up: the GLB's (x, y, z) is Blender's world (x, -z, y).
    co = np.asarray(obj["co"]).reshape(-1, 3)
    np.testing.assert_allclose(co, glb["vertices"][:, [0, 2, 1]] * [1, -1, 1], atol=1e-6)

    (ply,) = report["ply"]
    assert ply["vertices"] == len(glb["vertices"]) and "UVMap" in ply["uv_maps"]
    assert ply["colors"] == [{"name": "Col", "domain": "POINT", "type": "FLOAT_COLOR"}]
    colours = ply_columns(trimesh.load(os.path.join(textured, "mesh.ply"), process=False))
    ours = np.column_stack([colours["red"], colours["green"], colours["blue"]]) / 255.0
    theirs = np.asarray(ply["color_values"]).reshape(-1, 4)[:, :3]
    np.testing.assert_allclose(theirs, srgb_to_linear(ours), atol=2e-3)    # imported as sRGB bytes
    np.testing.assert_allclose(np.asarray(ply["co"]).reshape(-1, 3), co, atol=1e-6)   # same axes as the OBJ


# --- the RunPod worker -----------------------------------------------------------------------------------------
def test_runpod_worker_uploads_and_lists_the_extra_files(moto_s3, pipeline, monkeypatch, tmp_path):
    import httpx

    from backend_remote import handler
    from test_remote_support import check_downloads, sphere_request

    for key, value in moto_s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GEN3D_WORK_DIR", str(tmp_path))
    monkeypatch.setattr(handler, "_storage", None)
    result = handler.run_job({"id": "formats-1", "input": sphere_request(formats=["obj", "ply"], face_count=2000, texture_size=256)},
                             lambda job, event: None, pipeline=pipeline)
    assert "error" not in result, result
    assert {"mesh.obj", "mesh.mtl", "mesh.ply"} <= set(result["files"])
    assert result["mesh"]["formats"] == {"glb": "mesh.glb", "obj": "mesh.obj", "ply": "mesh.ply"}
    keys = moto_s3.keys("gen3d/formats-1/")
    assert keys == sorted("gen3d/formats-1/%s" % name for name in list(result["files"]) + ["meta.json"])
    files = check_downloads(result)
    assert files["mesh.obj"].startswith(b"# Gen3D") and b"map_Pr roughness.png" in files["mesh.mtl"]
    assert files["mesh.ply"].startswith(b"ply\n")
    assert httpx.get(result["files"]["mesh.obj"]["url"], timeout=30).headers["content-type"] == "model/obj"


# --- the add-on's batch --------------------------------------------------------------------------------------------
def run_batch(python_or_blender, tmp_path, *args, blender=False, timeout=400):
    launch = [python_or_blender, "-b", "--factory-startup", "-P", BATCH] if blender else [python_or_blender, BATCH]
    command = launch + ["--", *args, "--python", harness.VENV_PYTHON, "--backend-dir", harness.BACKEND_DIR,
                        "--device", "cpu"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=harness.isolated_env(str(tmp_path / "blender-home")), cwd=str(tmp_path))


def test_batch_writes_usdz_with_a_textured_preview_surface(tmp_path):
    image = harness.copy_image("torus", tmp_path)
    out, blend = tmp_path / "out", tmp_path / "scene.blend"
    proc = run_batch(harness.VENV_PYTHON, tmp_path, image, "--out", str(out), "--format", "obj,usdz",
                     "--save-blend", str(blend), *TINY)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (row,) = json.loads((out / "summary.json").read_text())["results"]
    job_dir = str(out / "torus")
    assert row["status"] == "COMPLETED" and row["files"] == {
        "glb": os.path.join(job_dir, "mesh.glb"), "obj": os.path.join(job_dir, "mesh.obj"),
        "usdz": os.path.join(job_dir, "mesh.usdz")}
    assert not os.path.exists(os.path.join(job_dir, "mesh.ply"))      # only what was asked for
    assert verify_files(job_dir, read_manifest(job_dir)) == []         # meta.json is the backend's record

    report = readback(tmp_path, "usdz", usdz=row["files"]["usdz"], blend=str(blend), object=row["object"])
    (usd,) = report["usdz"]
    placed = report["blend_object"]
    assert usd["vertices"] == placed["vertices"] and usd["faces"] == placed["faces"]
    # Written Y up and read back Z up: the same upright object, standing on the origin.
    np.testing.assert_allclose(usd["dimensions"], placed["dimensions"], atol=1e-4)
    (material,) = usd["materials"]
    base = material["linked"]["Base Color"]
    assert base["name"] == "albedo.png" and base["size"] == [256, 256] and base["via"] == []
    assert material["linked"]["Normal"]["via"] == ["NORMAL_MAP"] and material["linked"]["Normal"]["size"] == [256, 256]
    assert [material["linked"][name]["name"] for name in ("Roughness", "Metallic")] == ["roughness.png",
                                                                                        "metallic.png"]


def test_batch_says_when_blender_has_no_usd_exporter(tmp_path):
    blender = harness.blender_binary()
    probe = subprocess.run([blender, "-b", "--factory-startup", "--python-expr",
                            "import bpy; print('USD' if 'usd_export' in dir(bpy.ops.wm) else 'NO-USD')"],
                           capture_output=True, text=True, timeout=120)
    if "NO-USD" not in probe.stdout:
        pytest.skip("this Blender has a USD exporter (Debian's 3.4 build has none)")
    image = harness.copy_image("torus", tmp_path)
    proc = run_batch(blender, tmp_path, image, "--out", str(tmp_path / "out"), "--format", "glb,usdz", blender=True,
                     timeout=200)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "USD exporter" in proc.stderr and "4.2 or later" in proc.stderr
    assert not (tmp_path / "out").exists()                              # refused before any job ran
    bad = run_batch(blender, tmp_path, image, "--out", str(tmp_path / "out"), "--format", "fbx", blender=True,
                    timeout=200)
    assert bad.returncode == 2 and "'fbx' is not a format" in bad.stderr
