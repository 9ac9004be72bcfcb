"""The add-on's "Texture selected object" core path inside Blender (the bpy module in the project venv):
a rigged mesh is textured in place, its vertex groups, geometry and UV maps survive, and no object is
added. Slow (Blender and a real job in one process), so one run covers both UV cases."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from backend_local.texturing.mesh_view import camera_matrix
from tests.conftest import ROOT, data

SCRIPT = os.path.join(ROOT, "tests", "blender_scripts", "texture_existing_check.py")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("bpy")
    out = str(tmp_path_factory.mktemp("texture_selected"))
    result = subprocess.run([sys.executable, SCRIPT, data("sphere", "input.png"), out], capture_output=True, text=True,
                            timeout=900, env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT "):])


@pytest.mark.parametrize("case", ["with_uvs", "without_uvs"])
def test_rigged_object_is_textured_in_place(report, case):
    row = report[case]
    assert row["same_vertices"] and row["same_polygons"] and row["same_groups"]
    assert row["group_names"] == ["top", "bottom"] and row["weighted_vertices"] == 98
    assert row["no_new_object"] and row["materials"] == [case + "_gen3d"]
    assert row["old_uvs_kept"] and row["image_nodes_on_uv"] == 5 and row["new_uv_in_range"]
    assert row["given"]["vertices"] == 98 and row["given"]["faces"] == 192 and row["apply_undo"]
    # the scene camera looks at the object's front (-Y in Blender): that direction faces the camera
    towards = camera_matrix(row["mesh_view"]) @ [0.0, -1.0, 0.0]
    assert np.allclose(towards / np.linalg.norm(towards), [0, 0, 1], atol=1e-6)


def test_object_uv_map_is_used_when_it_has_one(report):
    row = report["with_uvs"]
    assert row["given"]["uvs"] == "given" and row["uv_maps_after"] == row["uv_maps_before"] == ["UVMap"]
    assert row["uv_used"] == "UVMap" == row["exported_uv"]


def test_new_uv_map_is_added_when_it_has_none(report):
    row = report["without_uvs"]
    assert row["given"]["uvs"] == "new" and row["uv_maps_before"] == [] and row["uv_maps_after"] == ["Gen3D_UV"]
    assert row["uv_used"] == "Gen3D_UV"
