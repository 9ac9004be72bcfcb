"""bench/unseen_set.py's builder on a mesh made here (no mirror needed): camera.json as the dev set's,
alpha matching the mesh's projection, gt.glb upright and normalised, views from the right sides."""

import json
import math
import os
import sys

import numpy as np
import pytest
import trimesh
from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import mesh_render  # noqa: E402
import unseen_set  # noqa: E402

# The key layout of ../shared/dataset/dev/<case>/camera.json.
DEV_KEYS = {"type", "ortho_scale", "position", "look_at", "up", "elevation_deg", "resolution", "note", "views"}
DEV_VIEW_KEYS = {"file", "azimuth_deg", "position", "look_at", "up"}
ELEVATION = 17


def source_mesh():
    """A tall box standing on source +Z (front -Y, like the Nefertiti scan) with a block on its +X side."""
    body = trimesh.creation.box((0.6, 0.4, 1.2))
    block = trimesh.creation.box((0.3, 0.2, 0.3))
    block.apply_translation((0.45, 0.0, 0.3))
    mesh = trimesh.util.concatenate([body, block])
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    vertices, faces = source_mesh()
    upright, _, _ = unseen_set.upright(vertices, unseen_set.orientation("+z", "-y"))
    # red on the +X half, blue on the -X half (upright frame)
    material = {"colour": lambda p: np.where((p[:, 0] > 0)[:, None], [0.9, 0.1, 0.1], [0.1, 0.1, 0.9]),
                "kind": "test", "specular": 0.2, "shininess": 30.0, "metallic": 0.0}
    out = str(tmp_path_factory.mktemp("unseen") / "boxes")
    rng = np.random.default_rng(0)
    unseen_set.build_case(out, upright, faces, material, ELEVATION, np.array([244.0, 244, 244]), rng)
    return out, upright, faces


def image(out, name):
    return np.asarray(Image.open(os.path.join(out, name)))


def test_camera_json_has_the_dev_layout(case):
    out = case[0]
    with open(os.path.join(out, "camera.json")) as handle:
        camera = json.load(handle)
    assert set(camera) == DEV_KEYS
    assert camera["type"] == "orthographic" and camera["resolution"] == [512, 512]
    assert camera["elevation_deg"] == ELEVATION
    assert camera["ortho_scale"] == pytest.approx(2.4, abs=1e-6)
    assert set(camera["views"]) == {"front", "right", "back", "left"}
    e = math.radians(ELEVATION)
    for name, azimuth in (("front", 0), ("right", 90), ("back", 180), ("left", 270)):
        view = camera["views"][name]
        assert set(view) == DEV_VIEW_KEYS and view["azimuth_deg"] == azimuth
        a = math.radians(azimuth)
        expected = [6 * math.cos(e) * math.sin(a), 6 * math.sin(e), 6 * math.cos(e) * math.cos(a)]
        assert view["position"] == pytest.approx(expected, abs=1e-5)
        assert os.path.isfile(os.path.join(out, view["file"]))
    assert camera["position"] == camera["views"]["front"]["position"]


def test_alpha_matches_the_projected_mesh(case):
    out, vertices, faces = case
    rgba = image(out, "input.png")
    assert rgba.shape == (512, 512, 4)
    alpha = rgba[..., 3]
    assert 0 < ((alpha > 0) & (alpha < 255)).sum() < 0.05 * (alpha > 0).sum()    # soft edges only
    cam = vertices @ mesh_render.view_rotation(0, ELEVATION).T
    pixels = mesh_render.to_pixels(cam, 512, 2.4)
    canvas = Image.new("L", (512, 512), 0)
    draw = ImageDraw.Draw(canvas)
    for tri in pixels[faces]:
        draw.polygon([tuple(p) for p in tri], fill=1)
    projected = np.asarray(canvas, bool)
    rendered = alpha >= 128
    iou = (projected & rendered).sum() / (projected | rendered).sum()
    assert iou > 0.97
    background = image(out, "input_bg.png")
    assert background.shape == (512, 512, 3)
    assert np.abs(background[alpha == 0].astype(float).mean(0) - 244).max() < 1.0


def test_gt_reads_back_upright_and_normalised(case):
    out = case[0]
    mesh = trimesh.load(os.path.join(out, "gt.glb"), force="mesh")
    low, high = mesh.bounds
    assert np.allclose((low + high) / 2, 0, atol=1e-6)
    size = high - low
    assert size.max() == pytest.approx(1.8, abs=1e-6)
    assert np.argmax(size) == 1                                   # the tall side stands on +Y
    assert size[0] == pytest.approx(1.8 * 0.9 / 1.2, abs=1e-3)    # body plus the +X block
    assert size[2] == pytest.approx(1.8 * 0.4 / 1.2, abs=1e-3)
    # the block (source +X, upper half) stays on +X and above the middle: not mirrored, not upside down
    vertices = np.asarray(mesh.vertices)
    block = vertices[vertices[:, 0] > 0.3]
    assert len(block) and block[:, 1].mean() == pytest.approx(0.45, abs=1e-3)


def test_views_differ_and_right_shows_the_plus_x_side(case):
    out = case[0]
    views = {name: image(out, name).astype(float) for name in
             ("input.png", "view_right.png", "view_back.png", "view_left.png")}
    names = list(views)
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(views[names[i]] - views[names[j]]).mean() > 2.0, (names[i], names[j])

    def red_share(rgba):
        solid = rgba[..., 3] > 250
        return (rgba[solid, 0] > rgba[solid, 2]).mean()

    # (the top face, seen from above, is half blue and half red)
    assert red_share(views["view_right.png"]) > 0.85
    assert red_share(views["view_left.png"]) < 0.15
    assert 0.2 < red_share(views["input.png"]) < 0.8


def test_orientation_is_a_rotation():
    for up, front in (("+y", "+z"), ("+z", "-y"), ("+y", "-x"), ("+z", "+y")):
        r = unseen_set.orientation(up, front, 30)
        assert np.allclose(r @ r.T, np.eye(3)) and np.linalg.det(r) == pytest.approx(1.0)
        assert np.allclose(r @ unseen_set.AXES[up], [0, 1, 0])
    # yaw turns the front towards the viewer's right (+X)
    assert (unseen_set.orientation("+y", "+z", 30) @ [0, 0, 1])[0] > 0
