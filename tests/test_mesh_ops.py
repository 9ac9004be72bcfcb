"""The mesh checks that every engine's output goes through: merging, closedness, orientation, decimation."""

import numpy as np
import pytest
import trimesh

from backend_local import mesh_ops


def _sphere(subdivisions=3):
    mesh = trimesh.creation.icosphere(subdivisions)
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def test_closed_sphere_passes_and_is_unchanged():
    vertices, faces = _sphere()
    out_v, out_f = mesh_ops.decimate(vertices, faces, len(faces), require_closed=True)
    assert np.array_equal(out_v, vertices) and np.array_equal(out_f, faces)
    assert mesh_ops.signed_volume(out_v, out_f) == pytest.approx(trimesh.Trimesh(vertices, faces).volume)


def test_inside_out_mesh_is_turned_outwards():
    vertices, faces = _sphere()
    out_v, out_f = mesh_ops._checked(vertices, faces[:, ::-1], require_closed=True)
    assert mesh_ops.signed_volume(out_v, out_f) > 4.0        # unit sphere: 4.19
    assert trimesh.Trimesh(out_v, out_f, process=False).is_winding_consistent


def test_hole_flipped_face_and_non_manifold_edge_are_not_closed():
    vertices, faces = _sphere()
    assert mesh_ops.is_closed_and_oriented(faces, len(vertices))
    assert not mesh_ops.is_closed_and_oriented(faces[1:], len(vertices))          # a hole
    flipped = faces.copy()
    flipped[7] = flipped[7, ::-1]
    assert not mesh_ops.is_closed_and_oriented(flipped, len(vertices))            # inconsistent winding
    doubled = np.concatenate([faces, faces[:1, ::-1], faces[:1]])                  # an edge joins 4 faces
    assert not mesh_ops.is_closed_and_oriented(doubled, len(vertices))
    assert mesh_ops._checked(vertices, faces[1:], require_closed=True) is None
    kept = mesh_ops._checked(vertices, faces[1:], require_closed=False)
    assert len(kept[1]) == len(faces) - 1


def test_triangle_soup_is_merged_and_degenerate_faces_dropped():
    vertices, faces = _sphere(2)
    soup = vertices[faces].reshape(-1, 3)                 # every face has its own three vertices
    soup_faces = np.arange(len(soup)).reshape(-1, 3)
    soup_faces = np.concatenate([soup_faces, [[0, 0, 1]]])  # plus a face with a repeated corner
    out_v, out_f = mesh_ops._checked(soup, soup_faces, require_closed=True)
    assert len(out_v) == len(vertices) and len(out_f) == len(faces)
    assert mesh_ops.is_closed_and_oriented(out_f, len(out_v))
    assert np.allclose(np.sort(out_v, axis=0), np.sort(vertices, axis=0))


def test_decimation_hits_the_face_count_and_stays_closed():
    vertices, faces = _sphere(5)                           # 20480 faces
    out_v, out_f = mesh_ops.decimate(vertices, faces, 4000, require_closed=True)
    assert abs(len(out_f) - 4000) <= 400
    assert mesh_ops.is_closed_and_oriented(out_f, len(out_v))
    mesh = trimesh.Trimesh(out_v, out_f, process=False)
    assert mesh.is_watertight and mesh.volume > 4.0
