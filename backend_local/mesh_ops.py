"""Mesh utilities shared by engines: normalisation to the output frame, decimation, checks."""

import fast_simplification
import numpy as np
import scipy.sparse as sp
import trimesh
from scipy.sparse.csgraph import connected_components

from shared.errors import INTERNAL, Gen3DError


def normalize(vertices):
    """Centre on the bounding box and scale so the largest side is 2. Returns (vertices, scale, offset)
    with new = (old - offset) * scale."""
    vertices = np.asarray(vertices, dtype=np.float64)
    low, high = vertices.min(0), vertices.max(0)
    offset = (low + high) / 2.0
    scale = 2.0 / max(float((high - low).max()), 1e-12)
    return (vertices - offset) * scale, scale, offset


def drop_small_components(vertices, faces, min_volume_fraction=0.01):
    """Remove closed pieces far smaller than the main body (bubbles and floaters that a level-set
    surface can grow); they waste faces and collapse into holes under decimation."""
    faces = np.asarray(faces, dtype=np.int64)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(vertices),) * 2)
    labels = connected_components(graph, directed=False)[1]
    if len(np.unique(labels[faces[:, 0]])) <= 1:
        return np.asarray(vertices, dtype=np.float64), faces       # one piece: the common case, kept cheap
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return np.asarray(vertices, dtype=np.float64), faces
    volumes = np.array([abs(part.volume) for part in parts])
    kept = [part for part, volume in zip(parts, volumes) if volume >= min_volume_fraction * volumes.max()]
    merged = trimesh.util.concatenate(kept)
    return np.asarray(merged.vertices, dtype=np.float64), np.asarray(merged.faces, dtype=np.int64)


# (aggressiveness, share of the target) tried in turn when a decimation pinches the surface: the
# collapse order changes with both, and all stay within the contract's 10% of the face count.
_DECIMATION_TRIES = ((7.0, 1.0), (5.0, 1.0), (7.0, 0.98), (7.0, 1.02), (3.0, 1.0), (7.0, 0.95), (7.0, 1.05))


def decimate(vertices, faces, target, require_closed=False):
    """Quadric decimation to `target` triangles (no-op when already at or under it). Returns merged,
    outward-facing (positive volume) arrays.

    With require_closed, a result with a hole or a non-manifold edge (rare: an edge collapse can pinch
    two sheets together) is thrown away and the decimation retried with another collapse order."""
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) <= target:
        result = _checked(np.asarray(vertices, dtype=np.float64), faces, require_closed)
        if result is not None:
            return result
    else:
        for aggressiveness, share in _DECIMATION_TRIES:
            out_v, out_f = fast_simplification.simplify(np.asarray(vertices, dtype=np.float32),
                                                        faces.astype(np.int32), target_count=int(target * share),
                                                        agg=aggressiveness)
            result = _checked(out_v.astype(np.float64), out_f.astype(np.int64), require_closed)
            if result is not None:
                return result
    raise Gen3DError(INTERNAL, "Simplifying the mesh to %d faces kept tearing it; try a different face count."
                     % target)


def _checked(vertices, faces, require_closed):
    """Merged arrays (duplicate vertices joined, degenerate faces dropped, turned outwards when the
    volume is negative), or None when a closed mesh was required and this one is not.

    Plain numpy rather than trimesh's processing, which computed far more than these checks need
    (~70 ms of a 40k-face job)."""
    vertices, faces = _merged(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64))
    closed = is_closed_and_oriented(faces, len(vertices))
    if require_closed and not closed:
        return None
    if closed and signed_volume(vertices, faces) < 0:
        faces = faces[:, ::-1].copy()
    return vertices, faces


def _merged(vertices, faces):
    """Join vertices at the same position (to 1e-8, as trimesh does), drop faces that became
    degenerate (a repeated corner or zero area) and vertices no face uses."""
    keys = np.round(vertices * 1e8).astype(np.int64)
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    starts = np.ones(len(order), bool)
    starts[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    if not starts.all():                              # duplicates: point each at its group's first copy
        group_first = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
        target = np.empty_like(order)
        target[order] = order[group_first]
        faces = target[faces]
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    e1, e2 = vertices[b] - vertices[a], vertices[c] - vertices[a]
    cross = np.stack([e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1], e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2],
                      e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]], axis=1)
    faces = faces[(a != b) & (b != c) & (c != a) & (np.einsum("ij,ij->i", cross, cross) > 1e-32)]
    used = np.zeros(len(vertices), bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[faces]


def is_closed_and_oriented(faces, vertex_count):
    """True when every edge joins exactly two faces that run along it in opposite directions: a closed,
    2-manifold-along-edges surface with consistent winding."""
    if len(faces) == 0:
        return False
    starts = faces.reshape(-1)
    ends = faces[:, [1, 2, 0]].reshape(-1)
    directed = np.sort(starts * vertex_count + ends)
    if np.any(directed[1:] == directed[:-1]):      # an edge walked twice the same way
        return False
    # with no edge walked twice, every edge has its opposite exactly when the sorted keys match
    return bool(np.array_equal(np.sort(ends * vertex_count + starts), directed))


def signed_volume(vertices, faces):
    tri = vertices[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def clean_closed_mesh(vertices, faces):
    """Merge duplicate vertices, drop degenerate faces, fix winding so normals point outwards."""
    mesh = trimesh.Trimesh(vertices, faces, process=True)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    trimesh.repair.fix_normals(mesh)
    return mesh


def mesh_summary(vertices, faces):
    vertices = np.asarray(vertices)
    return {"vertices": int(len(vertices)), "faces": int(len(faces)),
            "bounds": [np.round(vertices.min(0), 6).tolist(), np.round(vertices.max(0), 6).tolist()]}


def smooth_vertex_normals(vertices, faces):
    """Area-weighted vertex normals."""
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.maximum(length, 1e-12)
