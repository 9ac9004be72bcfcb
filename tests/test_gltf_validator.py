"""GLBs pass Khronos's glTF-Validator with no error and no warning, and their TANGENT attribute is
the MikkTSpace tangent space Blender computes itself.

The validator is the npm package gltf-validator, installed into the repo's node_modules by
`scripts/setup.sh test` and run through scripts/validate_gltf.js.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pygltflib
import pytest
from scipy.spatial import cKDTree

from backend_local.tangents import mikktspace_tangents
from bench.render_psnr import _accessor
from shared.request import parse_request

from conftest import ROOT, SMALL, data

RUNNER = os.path.join(ROOT, "scripts", "validate_gltf.js")
VALIDATOR = os.path.join(ROOT, "node_modules", "gltf-validator")
DUMP = os.path.join(ROOT, "tests", "blender_scripts", "tangents_dump.py")


def validate(path):
    assert shutil.which("node") and os.path.isdir(VALIDATOR), \
        "Khronos's gltf-validator is not installed: run scripts/setup.sh test (needs node and npm)"
    result = subprocess.run(["node", RUNNER, path], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.returncode


def attributes(path):
    gltf = pygltflib.GLTF2().load(path)
    blob = gltf.binary_blob()
    found = gltf.meshes[0].primitives[0].attributes
    return {name: _accessor(gltf, blob, getattr(found, name)) for name in ("POSITION", "NORMAL", "TEXCOORD_0",
                                                                            "TANGENT")
            if getattr(found, name) is not None}


@pytest.fixture(scope="module")
def results(pipeline, tmp_path_factory):
    root = tmp_path_factory.mktemp("validator")
    textured = str(root / "mug")
    plain = str(root / "torus")
    pipeline.run(parse_request(dict(SMALL, image_path=data("mug", "input.png"))), textured)
    pipeline.run(parse_request(dict(SMALL, image_path=data("torus", "input.png"), texture=False)), plain)
    return {"textured": os.path.join(textured, "mesh.glb"), "plain": os.path.join(plain, "mesh.glb")}


@pytest.mark.parametrize("kind", ["textured", "plain"])
def test_builtin_glb_has_no_validator_error_or_warning(results, kind):
    report, code = validate(results[kind])
    assert (report["errors"], report["warnings"]) == (0, 0), report["messages"]
    assert code == 0


def test_the_validator_catches_a_missing_tangent_space(results, tmp_path):
    """Control: the same textured GLB without TANGENT gets the warning the issue saw."""
    gltf = pygltflib.GLTF2().load(results["textured"])
    gltf.meshes[0].primitives[0].attributes.TANGENT = None
    stripped = str(tmp_path / "no_tangents.glb")
    gltf.save_binary(stripped)
    report, code = validate(stripped)
    assert "MESH_PRIMITIVE_GENERATED_TANGENT_SPACE" in {m["code"] for m in report["messages"]}
    assert code == 1


def test_tangents_are_unit_perpendicular_and_follow_u(results):
    found = attributes(results["textured"])
    tangent, normal = found["TANGENT"].astype(np.float64), found["NORMAL"].astype(np.float64)
    assert np.allclose(np.linalg.norm(tangent[:, :3], axis=1), 1.0, atol=1e-5)
    assert np.abs((tangent[:, :3] * normal).sum(1)).max() < 1e-4
    assert set(np.unique(tangent[:, 3])) <= {-1.0, 1.0}


def test_tangent_is_the_direction_of_increasing_u_on_a_plane():
    # a quad in the XY plane facing +Z with u along +X and glTF v along -Y (v down): tangent +X, w +1
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    uvs = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    normals = np.tile([0.0, 0.0, 1.0], (4, 1))
    tangents = mikktspace_tangents(vertices, faces, normals, uvs)
    assert np.allclose(tangents, [[1, 0, 0, 1]] * 4)
    # mirrored UVs (u along -X): the bitangent sign flips, as MikkTSpace does it
    mirrored = mikktspace_tangents(vertices, faces, normals, uvs * [-1, 1] + [1, 0])
    assert np.allclose(mirrored[:, 3], -1.0)


def test_tangents_match_blenders_own_mikktspace(results, tmp_path):
    """Blender imports the GLB and computes its tangents (MikkTSpace); ours agree per loop."""
    out = str(tmp_path / "blender_tangents.json")
    run = subprocess.run([sys.executable, DUMP, results["textured"], out], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out) as handle:
        loops = np.asarray(json.load(handle)["loops"])
    found = attributes(results["textured"])
    distance, index = cKDTree(np.hstack([found["POSITION"], found["TEXCOORD_0"]])).query(loops[:, :5])
    assert distance.max() < 1e-5                     # every loop is one of our vertices
    ours = found["TANGENT"][index].astype(np.float64)
    theirs = loops[:, 5:8] / np.linalg.norm(loops[:, 5:8], axis=1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip((ours[:, :3] * theirs).sum(1), -1, 1)))
    assert np.median(angle) < 0.5 and np.percentile(angle, 99) < 2.0, (np.median(angle), np.percentile(angle, 99))
    assert (np.sign(ours[:, 3]) == np.sign(loops[:, 8])).mean() > 0.999
