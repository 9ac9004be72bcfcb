"""Per-vertex tangents in the MikkTSpace convention, exported as the GLB's TANGENT attribute.

glTF says a normal map without TANGENT makes the viewer generate MikkTSpace tangents itself (Khronos's
validator warns about it), and Blender always computes its own; writing the same tangents removes the
warning and makes viewers that trust the file agree with Blender.

This follows MikkTSpace's per-vertex evaluation (Morten Mikkelsen's reference, as in Blender): each
triangle's tangent is the direction of increasing u, computed in the UV convention MikkTSpace uses
(v up, so glTF's v is flipped), normalised and flipped with the triangle's UV orientation; at each
corner it is projected onto the vertex normal's tangent plane, normalised again and weighted by the
corner's angle (also measured in that plane); the vertex's tangent is the normalised sum. w is the
bitangent sign: +1 where the UV map keeps the triangle's orientation. Our meshes are split at UV seams
already, so a vertex index is what MikkTSpace's welding would group (the reference also splits a vertex
whose triangles disagree in orientation; we take the angle-weighted majority there).
"""

import numpy as np

_EPS = 1e-20


def _unit(vectors):
    length = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(length, _EPS), length[..., 0]


def _project(vectors, normals):
    return vectors - normals * (vectors * normals).sum(-1, keepdims=True)


def _any_perpendicular(normals):
    """A unit vector perpendicular to each normal (for vertices whose UVs give no direction)."""
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    return _unit(np.cross(normals, helper))[0]


def mikktspace_tangents(vertices, faces, normals, uvs):
    """(V, 4) float32 tangents (xyz unit, w = +-1) for glTF-convention UVs (v down)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    normals = _unit(np.asarray(normals, dtype=np.float64))[0]
    st = np.asarray(uvs, dtype=np.float64) * [1.0, -1.0] + [0.0, 1.0]    # MikkTSpace's v is up

    p = vertices[faces]                                                  # (F, 3 corners, 3)
    t = st[faces]                                                        # (F, 3 corners, 2)
    d1, d2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    t21, t31 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    signed_area = t21[:, 0] * t31[:, 1] - t21[:, 1] * t31[:, 0]
    orient = np.where(signed_area > 0, 1.0, -1.0)
    face_tangent = t31[:, 1:2] * d1 - t21[:, 1:2] * d2                   # d(position)/du, up to scale
    face_tangent, length = _unit(face_tangent * orient[:, None])
    usable = (np.abs(signed_area) > _EPS) & (length > _EPS)              # degenerate in UV: no say

    accumulated = np.zeros_like(vertices)
    orientation = np.zeros(len(vertices))
    for corner in range(3):
        index = faces[:, corner]
        n = normals[index]
        tangent = _unit(_project(face_tangent, n))[0]
        edge_a = _unit(_project(p[:, (corner + 1) % 3] - p[:, corner], n))[0]
        edge_b = _unit(_project(p[:, (corner + 2) % 3] - p[:, corner], n))[0]
        angle = np.arccos(np.clip((edge_a * edge_b).sum(-1), -1.0, 1.0)) * usable
        np.add.at(accumulated, index, tangent * angle[:, None])
        np.add.at(orientation, index, orient * angle)

    tangents, length = _unit(_project(accumulated, normals))
    missing = length < 1e-12
    if missing.any():
        tangents[missing] = _any_perpendicular(normals[missing])
    w = np.where(orientation >= 0, 1.0, -1.0)
    return np.concatenate([tangents, w[:, None]], axis=1).astype(np.float32)
