"""The tangent-space normal map convention, end to end through Blender.

A sphere is baked with a known "detail" normal field that differs strongly from its geometric normals
(tilted left-right with height and up-down with width). Blender imports the GLB with its own glTF
importer, computes its own tangents (MikkTSpace) and evaluates the Normal Map node; the world-space
normal it renders must match the field we baked. The same check with the green channel inverted must
fail, which shows the test can tell the OpenGL (+Y) convention from DirectX's.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh

from backend_local import export
from backend_local.engines.base import JobContext, ViewMapping
from backend_local.texturing import bake
from shared.request import parse_request

from conftest import ROOT

RADIUS = 0.9
SCRIPT = os.path.join(ROOT, "tests", "blender_scripts", "normal_map_check.py")


def detail(points):
    p = points.to(torch.float32)
    radial = p / p.norm(dim=1, keepdim=True)
    tilt = torch.stack([0.5 * torch.sin(3 * p[:, 1]), 0.5 * torch.sin(3 * p[:, 0]), torch.zeros_like(p[:, 0])], 1)
    v = radial + tilt
    return v / v.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def glb(tmp_path_factory):
    folder = tmp_path_factory.mktemp("normal_map")
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)
    image = np.zeros((512, 512, 4), np.uint8)
    yy, xx = np.mgrid[0:512, 0:512]
    image[(xx - 255.5) ** 2 + (yy - 255.5) ** 2 < (RADIUS * 250) ** 2] = (180, 120, 90, 255)
    job = JobContext(parse_request({"image_path": "unused.png", "texture_size": 1024}), image, torch.device("cpu"),
                     str(folder))
    # The field tilts normals by up to 27 degrees, past where the bake starts fading detail normals
    # that stray from the mesh (crease smears, tested in test_texturing): lift that limit here, this
    # test is about the tangent-space convention.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bake, "DETAIL_FULL_DEG", 90.0)
        patch.setattr(bake, "DETAIL_MAX_DEG", 91.0)
        baked = bake.bake_textures(job, np.asarray(mesh.vertices), np.asarray(mesh.faces, np.int64),
                                   ViewMapping(scale=250.0, cx=256.0, cy=256.0), 1024, detail_normals=detail)
    maps = baked["maps"]
    textures = {"albedo": export.encode_png(maps["albedo"]), "normal": export.encode_png(maps["normal"]),
                "orm": export.encode_png(export.orm_image(maps["ao"], maps["roughness"], maps["metallic"]))}
    path = str(folder / "sphere.glb")
    export.write_glb(path, baked["vertices"], baked["faces"], baked["normals"], baked["uvs"], textures)
    return path


def blender_normals(glb, tmp_path, flip_green):
    out = str(tmp_path / ("flipped.json" if flip_green else "normals.json"))
    args = [sys.executable, SCRIPT, glb, out] + (["--flip-green"] if flip_green else [])
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as handle:
        data = json.load(handle)
    res = data["resolution"]
    return np.asarray(data["normals"]).reshape(res, res, 3), res


def angle_errors(rendered, res):
    centres = (np.arange(res) + 0.5) / res * 2 - 1
    x, y = np.meshgrid(centres, -centres)
    inside = x ** 2 + y ** 2 < (0.9 * RADIUS) ** 2              # away from the grazing rim
    z = np.sqrt(np.clip(RADIUS ** 2 - x ** 2 - y ** 2, 0, None))
    points = torch.as_tensor(np.stack([x, y, z], -1)[inside])
    expected = detail(points).numpy()
    got = rendered[inside]
    got = got / np.linalg.norm(got, axis=1, keepdims=True)
    return np.degrees(np.arccos(np.clip((got * expected).sum(1), -1, 1)))


def test_blender_reads_our_normal_maps_as_intended(glb, tmp_path):
    rendered, res = blender_normals(glb, tmp_path, flip_green=False)
    errors = angle_errors(rendered, res)
    assert np.median(errors) < 3.0 and np.percentile(errors, 95) < 8.0, (np.median(errors), np.percentile(errors, 95))
    # the detail field really differs from the plain sphere, so agreement is not trivial
    flipped, _ = blender_normals(glb, tmp_path, flip_green=True)
    assert np.median(angle_errors(flipped, res)) > 8.0
