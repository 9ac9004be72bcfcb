"""The upright output frame (DESIGN.md "Coordinates"): rotation, grounding, the built-in engine's
elevation estimate, meta.json's frame/view, and upright scoring (bench/metrics.py)."""

import json
import math
import os

import numpy as np
import pytest
import trimesh

from backend_local import upright
from bench.metrics import azimuth_rotation, front_azimuth_deg, load_mesh, normalized, score, score_case
from bench.render_psnr import psnr, read_glb
from shared.request import parse_request

from conftest import SMALL, data


def test_rotation_takes_the_cameras_view_of_up_to_up():
    for elevation in (-25.0, 0.0, 10.0, 20.0):
        e = math.radians(elevation)
        up_seen = np.array([0.0, math.cos(e), math.sin(e)])   # world up in the camera frame
        assert upright.camera_to_upright(elevation) @ up_seen == pytest.approx([0.0, 1.0, 0.0], abs=1e-12)
        rotation = upright.camera_to_upright(elevation)
        assert rotation @ upright.upright_to_camera(elevation) == pytest.approx(np.eye(3), abs=1e-12)


def test_grounding_rests_on_y0_centred_in_x_and_z():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 3)) * [3.0, 1.0, 0.5] + [4.0, -2.0, 7.0]
    normals = rng.normal(size=(500, 3))
    out, turned = upright.to_upright(points, normals, 15.0)
    low, high = out.min(0), out.max(0)
    assert low[1] == pytest.approx(0.0, abs=1e-12)
    assert (low[0] + high[0]) / 2 == pytest.approx(0.0, abs=1e-12)
    assert (low[2] + high[2]) / 2 == pytest.approx(0.0, abs=1e-12)
    assert (high - low).max() == pytest.approx(2.0, abs=1e-12)
    # normals are only rotated: lengths kept, and they turn with the points
    assert np.linalg.norm(turned, axis=1) == pytest.approx(np.linalg.norm(normals, axis=1))
    assert turned == pytest.approx(normals @ upright.camera_to_upright(15.0).T)


def test_front_azimuth_from_camera_json():
    with open(data("cone", "camera.json")) as handle:
        camera = json.load(handle)
    assert front_azimuth_deg(camera) == 0.0
    assert front_azimuth_deg({"position": [6.0, 1.0, 0.0]}) == pytest.approx(90.0)
    # the direction toward a camera at azimuth 90 (+X) is turned to +Z
    assert azimuth_rotation(90.0) @ [1.0, 0.0, 0.0] == pytest.approx([0.0, 0.0, 1.0], abs=1e-12)


@pytest.fixture(scope="module")
def cone_result(pipeline, tmp_path_factory):
    """The dev cone, photographed from 20 degrees above."""
    out = str(tmp_path_factory.mktemp("upright") / "cone")
    manifest = pipeline.run(parse_request(dict(SMALL, image_path=data("cone", "input.png"))), out)
    return out, manifest


def test_cone_comes_out_standing_straight_and_grounded(cone_result):
    out, manifest = cone_result
    assert manifest["frame"] == "upright"
    assert manifest["view"]["azimuth_deg"] == 0.0
    assert manifest["view"]["elevation_deg"] == pytest.approx(20.0, abs=2.0)   # camera.json: 20
    vertices, faces, _, _ = read_glb(os.path.join(out, "mesh.glb"))
    low, high = vertices.min(0), vertices.max(0)
    assert low[1] == pytest.approx(0.0, abs=1e-5)
    assert abs(low[0] + high[0]) < 1e-5 and abs(low[2] + high[2]) < 1e-5
    assert manifest["mesh"]["bounds"][0][1] == pytest.approx(0.0, abs=1e-5)
    # The apex sits above the centre of the base: the cone does not lean forward.
    apex = vertices[np.argmax(vertices[:, 1])]
    base = vertices[vertices[:, 1] < 0.05 * high[1]]
    assert np.hypot(*(apex[[0, 2]] - base[:, [0, 2]].mean(0))) < 0.05
    upright_score = score_case(os.path.join(out, "mesh.glb"), data("cone", "gt.glb"), data("cone", "camera.json"))
    assert upright_score["f@0.05"] > 0.95 and upright_score["iou_side"] > 0.9
    # The same mesh left in the camera's frame leans 20 degrees and scores clearly lower upright.
    leaning = trimesh.Trimesh(vertices @ upright.upright_to_camera(20.0).T, faces, process=False)
    gt = normalized(load_mesh(data("cone", "gt.glb")))
    assert score(normalized(leaning), gt)["iou_side"] < upright_score["iou_side"] - 0.05


def test_texture_still_matches_the_input_after_the_rotation(cone_result):
    out, _ = cone_result
    value, _, _, inside = psnr(out)      # rendered from meta.json's view
    assert inside.sum() > 10000 and value > 25.0


def test_unsure_elevation_is_zero_not_a_wrong_tilt(pipeline, tmp_path):
    """The dev torus is seen from 10 degrees above, but its ring could stand or lie: no estimate."""
    manifest = pipeline.run(parse_request(dict(SMALL, image_path=data("torus", "input.png"), texture=False)),
                            str(tmp_path / "torus"))
    assert manifest["view"] == {"azimuth_deg": 0.0, "elevation_deg": 0.0}
    assert manifest["mesh"]["bounds"][0][1] == pytest.approx(0.0, abs=1e-5)
