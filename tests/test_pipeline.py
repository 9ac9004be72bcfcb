"""End-to-end local pipeline: result files, GLB content read back, determinism, failures, CLI."""

import json
import os
import threading

import numpy as np
import pygltflib
import pytest
import trimesh
from PIL import Image

from bench.render_psnr import psnr, read_glb, relight, render_albedo
from shared import errors
from shared.errors import Gen3DError
from shared.manifest import MAP_NAMES, read_manifest, verify_files
from shared.request import parse_request

from conftest import SMALL, data, run_cli


def test_result_files_and_manifest(sphere_result):
    out, manifest, _ = sphere_result
    expected = {"mesh.glb", "input.png", "meta.json"} | {"%s.png" % name for name in MAP_NAMES}
    assert set(os.listdir(out)) == expected
    on_disk = read_manifest(out)
    assert on_disk == manifest
    assert verify_files(out, on_disk) == []
    assert on_disk["status"] == "completed"
    assert on_disk["engine"] == {"shape": "builtin", "texture": "builtin"}
    assert on_disk["params"]["face_count"] == SMALL["face_count"] and on_disk["seed"] == 1234
    assert on_disk["textures"] == {name: "%s.png" % name for name in MAP_NAMES}
    timings = on_disk["timings"]
    assert timings["total"] >= timings["shape"] + timings["texture"] > 0
    assert on_disk["device"].startswith("cpu") and on_disk["peak_memory_mb"] > 50
    input_png = Image.open(os.path.join(out, "input.png"))
    assert input_png.mode == "RGBA" and input_png.size[0] == input_png.size[1] >= 512


def test_progress_events_are_monotonic_and_staged(sphere_result):
    _, manifest, events = sphere_result
    values = [event["progress"] for event in events]
    assert values == sorted(values) and values[-1] == 1.0
    stages = [event["stage"] for event in events]
    assert stages.index("preprocess") < stages.index("shape") < stages.index("texture") < stages.index("export")
    assert {event["job_id"] for event in events} == {manifest["job_id"]}


def test_glb_material_and_textures(sphere_result):
    out, manifest, _ = sphere_result
    gltf = pygltflib.GLTF2().load(os.path.join(out, "mesh.glb"))
    assert len(gltf.materials) == 1
    material = gltf.materials[0]
    pbr = material.pbrMetallicRoughness
    assert pbr.baseColorTexture is not None and pbr.metallicRoughnessTexture is not None
    assert material.normalTexture is not None and material.occlusionTexture is not None
    # occlusion (R) and metallic-roughness (G, B) share one ORM image, as glTF intends
    assert gltf.textures[material.occlusionTexture.index].source == \
        gltf.textures[pbr.metallicRoughnessTexture.index].source
    primitive = gltf.meshes[0].primitives[0]
    assert primitive.attributes.NORMAL is not None and primitive.attributes.TEXCOORD_0 is not None

    vertices, faces, uvs, images = read_glb(os.path.join(out, "mesh.glb"))
    for image in images.values():
        assert image.size == (SMALL["texture_size"],) * 2
    orm = np.asarray(images["metallicRoughness"].convert("RGB"))
    assert np.array_equal(orm[..., 0], np.asarray(Image.open(os.path.join(out, "ao.png"))))
    assert np.array_equal(orm[..., 1], np.asarray(Image.open(os.path.join(out, "roughness.png"))))
    assert np.array_equal(orm[..., 2], np.asarray(Image.open(os.path.join(out, "metallic.png"))))
    assert np.array_equal(np.asarray(images["baseColor"].convert("RGB")),
                          np.asarray(Image.open(os.path.join(out, "albedo.png")).convert("RGB")))
    assert uvs.min() >= 0.0 and uvs.max() <= 1.0
    assert manifest["mesh"]["faces"] == len(faces) and manifest["mesh"]["vertices"] == len(vertices)


def test_mesh_is_closed_sized_and_near_target(sphere_result):
    out, _, _ = sphere_result
    vertices, faces, _, _ = read_glb(os.path.join(out, "mesh.glb"))
    mesh = trimesh.Trimesh(vertices, faces, process=True)   # merge UV-seam copies by position
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert abs(len(faces) - SMALL["face_count"]) <= 0.1 * SMALL["face_count"]
    # upright frame: largest side 2, centred in X and Z, resting on y = 0
    low, high = vertices.min(0), vertices.max(0)
    assert low[1] == pytest.approx(0.0, abs=1e-5) and high[1] <= 2.0 + 1e-5
    assert abs(low[0] + high[0]) < 1e-5 and abs(low[2] + high[2]) < 1e-5
    assert np.ptp(vertices, axis=0).max() == pytest.approx(2.0, abs=1e-4)
    # a sphere from a disc: every direction about as deep as wide
    extent = np.ptp(vertices, axis=0)
    assert extent.min() / extent.max() > 0.9


def test_maps_are_not_constants(sphere_result):
    out, _, _ = sphere_result
    for name in ("albedo", "normal", "roughness"):   # AO of a convex sphere is rightly all open
        pixels = np.asarray(Image.open(os.path.join(out, "%s.png" % name)), dtype=np.float64)
        assert pixels.std() > 0.5, name
    normal = np.asarray(Image.open(os.path.join(out, "normal.png")), dtype=np.float64) / 255 * 2 - 1
    assert np.median(normal[..., 2]) > 0.9                 # tangent space: mostly pointing out (+Z, blue)


def test_front_render_matches_the_input(pipeline, tmp_path):
    """The GLB rendered from the input view (albedo re-lit by a 9-number SH shading fit) matches the
    input inside the mask; the same render shifted by a few pixels does not, so a flipped or shifted
    texture would fail. The brick box's texture makes any misalignment visible."""
    out = str(tmp_path / "bricks")
    pipeline.run(parse_request(dict(SMALL, image_path=data("brick_box", "input.png"))), out)
    value, _, _, inside = psnr(out)
    assert inside.sum() > 10000
    assert value > 25.0
    render, covered, target, solid, normals = render_albedo(out)
    for shift, axis in ((6, 1), (6, 0)):
        moved = np.roll(render, shift, axis=axis)
        both = inside & np.roll(covered, shift, axis=axis)
        lit = relight(moved, target, normals, both)
        assert 10 * np.log10(1 / ((lit[both] - target[both]) ** 2).mean()) < value - 4
    mirrored = render[:, ::-1]
    both = inside & covered[:, ::-1]
    lit = relight(mirrored, target, normals, both)
    assert 10 * np.log10(1 / ((lit[both] - target[both]) ** 2).mean()) < value - 4


def test_same_seed_same_output(pipeline, sphere_result, tmp_path):
    out, manifest, _ = sphere_result
    again = pipeline.run(parse_request(dict(SMALL, image_path=data("sphere", "input.png"))), str(tmp_path / "again"))
    for name in ["input.png"] + ["%s.png" % n for n in MAP_NAMES]:
        assert again["files"][name]["sha256"] == manifest["files"][name]["sha256"], name
    first = read_glb(os.path.join(out, "mesh.glb"))
    second = read_glb(str(tmp_path / "again" / "mesh.glb"))
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_untextured_job(pipeline, tmp_path):
    out = str(tmp_path / "plain")
    manifest = pipeline.run(parse_request(dict(SMALL, image_path=data("torus", "input.png"), texture=False)), out)
    assert sorted(os.listdir(out)) == ["input.png", "mesh.glb", "meta.json"]
    assert manifest["textures"] is None and manifest["engine"]["texture"] is None
    mesh = trimesh.load(os.path.join(out, "mesh.glb"), force="mesh")
    assert mesh.is_watertight
    assert mesh.euler_number == 0          # the torus keeps its hole (genus 1)


def test_wire_thin_object_still_gets_a_closed_mesh_of_the_requested_size(pipeline, tmp_path):
    """A 3-pixel diagonal wire all but vanishes on the small hypothesis maps and yields fewer marching-
    cubes triangles than asked for: it becomes a tube of face_count triangles, not an error."""
    import cv2

    image = np.zeros((512, 512, 4), np.uint8)
    cv2.line(image, (40, 470), (470, 40), (90, 160, 60, 255), 3)
    path = str(tmp_path / "wire.png")
    Image.fromarray(image).save(path)
    out = str(tmp_path / "wire")
    manifest = pipeline.run(parse_request(dict(SMALL, image_path=path, texture=False, face_count=20000)), out)
    assert abs(manifest["mesh"]["faces"] - 20000) <= 2000
    mesh = trimesh.load(os.path.join(out, "mesh.glb"), force="mesh")
    assert mesh.is_watertight and mesh.volume > 0
    extent = np.ptp(mesh.vertices, axis=0)
    assert extent[0] > 1.9 and extent[1] > 1.9 and extent[2] < 0.2       # a thin diagonal tube


def test_failed_job_leaves_nothing(pipeline, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGBA", (256, 256), (0, 0, 0, 0)).save(blank)
    out = tmp_path / "result"
    with pytest.raises(Gen3DError) as info:
        pipeline.run(parse_request({"image_path": str(blank)}), str(out))
    assert info.value.code == errors.EMPTY_FOREGROUND and info.value.stage == "preprocess"
    assert sorted(os.listdir(tmp_path)) == ["blank.png"]


def test_cancel_mid_job_leaves_nothing(pipeline, tmp_path):
    cancel = threading.Event()

    def on_progress(event):
        if event["stage"] == "texture":
            cancel.set()

    with pytest.raises(Gen3DError) as info:
        pipeline.run(parse_request(dict(SMALL, image_path=data("sphere", "input.png"))), str(tmp_path / "r"),
                     on_progress=on_progress, cancel=cancel)
    assert info.value.code == errors.CANCELLED
    assert os.listdir(tmp_path) == []


def test_output_folder_with_other_files_is_refused(pipeline, tmp_path):
    (tmp_path / "thesis.docx").write_text("precious")
    with pytest.raises(Gen3DError) as info:
        pipeline.run(parse_request(dict(SMALL, image_path=data("sphere", "input.png"))), str(tmp_path))
    assert info.value.code == errors.INVALID_INPUT
    assert os.listdir(tmp_path) == ["thesis.docx"]


def test_cli_success_and_failures(tmp_path):
    ok = run_cli("generate", data("torus", "input.png"), "--out", str(tmp_path / "ok"), "--face-count", "3000",
                 "--texture-size", "256", "--quiet")
    assert ok.returncode == 0, ok.stderr
    assert "mesh.glb" in ok.stdout and read_manifest(str(tmp_path / "ok"))["mesh"]["faces"] <= 3300

    missing = run_cli("generate", str(tmp_path / "nope.png"), "--out", str(tmp_path / "bad"))
    assert missing.returncode == 2
    error = json.loads(missing.stderr.strip().splitlines()[-1])["error"]
    assert error["code"] == "INVALID_INPUT" and "does not exist" in error["message"]
    assert not (tmp_path / "bad").exists()

    out_of_range = run_cli("generate", data("torus", "input.png"), "--out", str(tmp_path / "bad"),
                           "--face-count", "10")
    assert out_of_range.returncode == 2
    error = json.loads(out_of_range.stderr.strip().splitlines()[-1])["error"]
    assert error["code"] == "INVALID_INPUT" and "'face_count'" in error["message"]

    bomb = tmp_path / "bomb.png"
    from test_images import png_header_only
    bomb.write_bytes(png_header_only(10000, 10000))
    too_large = run_cli("generate", str(bomb), "--out", str(tmp_path / "bad"))
    assert too_large.returncode == 2
    assert json.loads(too_large.stderr.strip().splitlines()[-1])["error"]["code"] == "IMAGE_TOO_LARGE"
    assert not (tmp_path / "bad").exists()


def test_cli_engines_listing():
    listing = run_cli("engines", "--json")
    assert listing.returncode == 0
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["builtin"]["available"] is True
    assert set(rows) == {"builtin", "hunyuan3d-2.1", "hunyuan3d-2", "hunyuan3d-2mini", "hunyuan3d-2mv"}
