"""A mesh the artist already has (request `mesh` / `mesh_url` / `mesh_path`): reading it exactly, and the
vertex layout the result keeps.

The files are read with our own small GLB and OBJ readers rather than trimesh, whose loaders merge,
split or reorder vertices (even with process=False, OBJ vertices are split per position/UV pair in
an order of its own). What is read is what the result holds:

* positions and faces in the file's order (a GLB's primitives concatenated, an OBJ's polygons
  fan-triangulated in file order);
* UVs per face corner (OBJ `vt`, or a GLB's per-vertex TEXCOORD_0).

glTF stores one UV per vertex, so a position with several UVs (an OBJ seam) must be written as
several vertices. The layout keeps vertex i of the file as vertex i of the result and appends the
extra seam copies after them; face k of the result is face k of the file, corner for corner. So the
result's positions at its faces equal the file's, its first V vertices are the file's vertices, and
nothing is merged, welded or reordered.
"""

import os
import struct
from dataclasses import dataclass

import numpy as np

from shared.errors import INVALID_INPUT, Gen3DError
from shared.request import MAX_MESH_FACES, glb_chunks, mesh_format

# UVs this far outside [0, 1] count as out of range (float noise at the borders does not).
UV_RANGE_TOLERANCE = 1e-4
# Share of the UV area covered twice or more above which the UVs count as overlapping: a projected
# texture cannot go to two places of the surface through one texel.
UV_OVERLAP_LIMIT = 0.01
# A triangle given less than this share of its fair UV area (its share of the surface) is collapsed in
# UV space: it would take one texel's colour. Above DEGENERATE_LIMIT of the surface collapsed, the UVs
# cannot hold a painted texture (e.g. a material-only model's placeholder UVs) and a new map is made.
COLLAPSED_SHARE = 0.01
DEGENERATE_LIMIT = 0.05
OVERLAP_GRID = 512

_GLTF_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_GLTF_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_NORMALIZED_SCALE = {np.uint8: 255.0, np.uint16: 65535.0, np.int8: 127.0, np.int16: 32767.0}


def bad_mesh(problem):
    return Gen3DError(INVALID_INPUT, "The mesh could not be used: %s." % problem, stage="preprocess", retryable=False)


@dataclass
class GivenMesh:
    vertices: np.ndarray            # (V, 3) float64, the file's order
    faces: np.ndarray               # (F, 3) int64
    corner_uvs: np.ndarray = None   # (F, 3, 2) glTF convention (v down), None when the file has no UVs
    normals: np.ndarray = None      # (V, 3) when the file gives one normal per vertex
    format: str = ""


def read_mesh(source):
    """A GivenMesh from file bytes or a path. Raises INVALID_INPUT for anything unusable."""
    if isinstance(source, str):
        try:
            with open(os.path.expanduser(source), "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise bad_mesh("%s cannot be read (%s)" % (source, exc.strerror or exc))
    else:
        data = bytes(source)
    kind = mesh_format(data)
    if kind is None:
        raise bad_mesh("it is neither a GLB (binary glTF) nor an OBJ file")
    try:
        mesh = _read_glb(data) if kind == "glb" else _read_obj(data)
    except Gen3DError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
        raise bad_mesh("the %s file is malformed (%s)" % (kind.upper(), exc))
    mesh.format = kind
    _check(mesh)
    return mesh


def _check(mesh):
    v, f = mesh.vertices, mesh.faces
    if len(f) == 0:
        raise bad_mesh("it has no triangles")
    if len(f) > MAX_MESH_FACES:
        raise bad_mesh("it has %d triangles; at most %d can be textured" % (len(f), MAX_MESH_FACES))
    if not np.isfinite(v).all():
        raise bad_mesh("some vertex positions are not finite numbers")
    if f.min() < 0 or f.max() >= len(v):
        raise bad_mesh("a face refers to a vertex that does not exist")
    extent = v[np.unique(f)].max(0) - v[np.unique(f)].min(0)
    if np.sort(extent)[-2] <= 0:
        raise bad_mesh("it is flat along two axes (a line or a point), so it has no surface to paint")
    if mesh.corner_uvs is not None and not np.isfinite(mesh.corner_uvs).all():
        mesh.corner_uvs = None     # unusable UVs: treated as none (reported as a new unwrap)


# -- GLB ----------------------------------------------------------------------------------------

def _read_glb(data):
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if version != 2:
        raise bad_mesh("only glTF 2.0 binaries are read (this one is version %d)" % version)
    document, blob = glb_chunks(data, min(length, len(data)))
    if document is None:
        raise bad_mesh("the GLB has no JSON chunk")
    for extension in document.get("extensionsRequired", []):
        raise bad_mesh("the GLB requires the extension %s (e.g. Draco compression); export it without "
                       "compression" % extension)
    meshes = document.get("meshes") or []
    if len(meshes) != 1:
        raise bad_mesh("the GLB holds %d meshes; send one object's mesh" % len(meshes))
    vertices, faces, uvs, normals = [], [], [], []
    base = 0
    for primitive in meshes[0]["primitives"]:
        if primitive.get("mode", 4) != 4:
            raise bad_mesh("a primitive is not made of triangles (glTF mode %d)" % primitive["mode"])
        attributes = primitive["attributes"]
        positions = _accessor(document, blob, attributes["POSITION"]).astype(np.float64)
        if "indices" in primitive:
            index = _accessor(document, blob, primitive["indices"]).astype(np.int64).reshape(-1)
        else:
            index = np.arange(len(positions), dtype=np.int64)
        if len(index) % 3:
            raise bad_mesh("a primitive's index count is not a multiple of 3")
        vertices.append(positions)
        faces.append(index.reshape(-1, 3) + base)
        uvs.append(_accessor(document, blob, attributes["TEXCOORD_0"]).astype(np.float64)
                   if "TEXCOORD_0" in attributes else None)
        normals.append(_accessor(document, blob, attributes["NORMAL"]).astype(np.float64)
                       if "NORMAL" in attributes else None)
        base += len(positions)
    vertices = np.concatenate(vertices)
    faces = np.concatenate(faces)
    corner_uvs = np.concatenate(uvs)[faces] if all(u is not None for u in uvs) else None
    normals = np.concatenate(normals) if all(n is not None for n in normals) else None
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise bad_mesh("a face refers to a vertex that does not exist")
    return GivenMesh(vertices, faces, corner_uvs, normals)


def _accessor(document, blob, index):
    accessor = document["accessors"][index]
    if "sparse" in accessor or "bufferView" not in accessor:
        raise bad_mesh("sparse or empty glTF accessors are not supported")
    view = document["bufferViews"][accessor["bufferView"]]
    if view.get("buffer", 0) != 0:
        raise bad_mesh("the GLB refers to an external buffer; embed all data in the .glb")
    dtype = np.dtype(_GLTF_COMPONENTS[accessor["componentType"]])
    width = _GLTF_WIDTH[accessor["type"]]
    count = accessor["count"]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    stride = view.get("byteStride") or dtype.itemsize * width
    end = start + stride * (count - 1) + dtype.itemsize * width if count else start
    if end > len(blob):
        raise bad_mesh("an accessor reaches past the end of the binary chunk")
    raw = np.frombuffer(blob, dtype=np.uint8, count=end - start, offset=start) if count else np.zeros(0, np.uint8)
    rows = np.lib.stride_tricks.as_strided(raw, shape=(count, dtype.itemsize * width), strides=(stride, 1))
    values = np.ascontiguousarray(rows).view(dtype).reshape(count, width)
    if accessor.get("normalized"):
        values = values.astype(np.float64) / _NORMALIZED_SCALE[dtype.type]
    return values[:, 0] if width == 1 else values


# -- OBJ ----------------------------------------------------------------------------------------

def _obj_index(token, count):
    value = int(token)
    return value - 1 if value > 0 else count + value


def _read_obj(data):
    positions, texcoords, normals = [], [], []
    face_v, face_t, face_n = [], [], []
    all_have_uv, all_have_normal = True, True
    for line in data.decode("utf-8", errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        head = parts[0]
        if head == "v":
            positions.append([float(x) for x in parts[1:4]])
        elif head == "vt":
            texcoords.append([float(x) for x in parts[1:3]])
        elif head == "vn":
            normals.append([float(x) for x in parts[1:4]])
        elif head == "f":
            corners = [corner.split("/") for corner in parts[1:]]
            if len(corners) < 3:
                raise bad_mesh("an OBJ face has fewer than 3 corners")
            v = [_obj_index(c[0], len(positions)) for c in corners]
            has_uv = all(len(c) > 1 and c[1] for c in corners)
            has_normal = all(len(c) > 2 and c[2] for c in corners)
            t = [_obj_index(c[1], len(texcoords)) for c in corners] if has_uv else [0] * len(corners)
            n = [_obj_index(c[2], len(normals)) for c in corners] if has_normal else [0] * len(corners)
            all_have_uv &= has_uv
            all_have_normal &= has_normal
            for k in range(1, len(corners) - 1):      # fan, as Blender and trimesh triangulate
                face_v.append((v[0], v[k], v[k + 1]))
                face_t.append((t[0], t[k], t[k + 1]))
                face_n.append((n[0], n[k], n[k + 1]))
    vertices = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(face_v, dtype=np.int64).reshape(-1, 3)
    corner_uvs = None
    if all_have_uv and texcoords and len(faces):
        t = np.asarray(face_t, dtype=np.int64)
        if t.min() < 0 or t.max() >= len(texcoords):
            raise bad_mesh("an OBJ face refers to a texture coordinate that does not exist")
        corner_uvs = np.asarray(texcoords, dtype=np.float64)[t]
        corner_uvs[..., 1] = 1.0 - corner_uvs[..., 1]     # OBJ's v points up, glTF's down
    vertex_normals = None
    if all_have_normal and normals and len(faces):
        n = np.asarray(face_n, dtype=np.int64)
        if n.min() >= 0 and n.max() < len(normals):
            per_corner = np.asarray(normals, dtype=np.float64)[n]
            # one normal per vertex only when every corner of a vertex agrees (else: smooth normals)
            candidate = np.zeros_like(vertices)
            candidate[faces.reshape(-1)] = per_corner.reshape(-1, 3)
            if np.array_equal(candidate[faces], per_corner) and np.isfinite(candidate).all():
                used = np.zeros(len(vertices), bool)
                used[faces.reshape(-1)] = True
                if used.all():
                    vertex_normals = candidate
    return GivenMesh(vertices, faces, corner_uvs, vertex_normals)


# -- UV checks and the result's layout ------------------------------------------------------------

def uv_problems(corner_uvs, corner_positions=None):
    """{"out_of_range": share of corners outside [0, 1], "overlap": share of the UV area covered more
    than once, "degenerate": share of the surface whose triangles collapse in UV space (with
    corner_positions)}; the UVs need a new map when any is above its limit."""
    import cv2

    outside = ((corner_uvs < -UV_RANGE_TOLERANCE) | (corner_uvs > 1 + UV_RANGE_TOLERANCE)).any(axis=2)
    tri = np.clip(corner_uvs, 0.0, 1.0) * OVERLAP_GRID
    area = 0.5 * np.abs((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
                        - (tri[:, 2, 0] - tri[:, 0, 0]) * (tri[:, 1, 1] - tri[:, 0, 1]))
    total = float(area.sum())
    union = np.zeros((OVERLAP_GRID, OVERLAP_GRID), np.uint8)
    points = np.round(tri * 16).astype(np.int32)
    for polygon in points[area > 1e-9]:
        cv2.fillConvexPoly(union, polygon, 1, lineType=cv2.LINE_8, shift=4)
    # fillConvexPoly covers every touched texel, so the union is slightly too large: the tolerance
    # below only catches real overlap (mirrored or stacked charts), not shared chart borders.
    covered = float(union.sum())
    overlap = max(0.0, 1.0 - covered / total) if total > OVERLAP_GRID else 0.0
    problems = {"out_of_range": round(float(outside.mean()), 4), "overlap": round(overlap, 4), "degenerate": 0.0}
    if corner_positions is not None:
        p = np.asarray(corner_positions, dtype=np.float64)
        surface = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
        if surface.sum() > 0 and total > 0:
            fair = surface / surface.sum()
            collapsed = area / total < COLLAPSED_SHARE * fair
            problems["degenerate"] = round(float(fair[collapsed].sum()), 4)
    return problems


def needs_new_uvs(problems):
    return (problems["out_of_range"] > 0 or problems["overlap"] > UV_OVERLAP_LIMIT
            or problems.get("degenerate", 0.0) > DEGENERATE_LIMIT)


def layout(vertex_count, faces, *corner_attributes):
    """The result's vertices for per-corner attributes (each (F, 3, K)): one vertex per distinct
    (file vertex, attribute values). Returns (vertex_map, new_faces, [per-vertex attributes]):
    vertex_map[:vertex_count] == arange(vertex_count) (file vertices keep their index; a vertex no face
    uses keeps its place with zero attributes), seam copies follow in first-use order, and
    new_faces[k] is faces[k] with corners pointing at their copies."""
    corners = faces.reshape(-1)
    columns = [np.ascontiguousarray(a, dtype=np.float64).reshape(len(corners), -1) for a in corner_attributes]
    values = np.concatenate(columns, axis=1) if columns else np.zeros((len(corners), 0))
    keys = np.concatenate([corners[:, None].astype(np.float64), values], axis=1)
    unique, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    unique_vertex = unique[:, 0].astype(np.int64)
    # Per file vertex: its copy used first keeps the vertex's own index; the others are appended.
    order = np.argsort(first, kind="stable")
    keeps = np.zeros(len(unique), bool)
    seen = np.zeros(vertex_count, bool)
    for u in order:
        if not seen[unique_vertex[u]]:
            seen[unique_vertex[u]] = True
            keeps[u] = True
    new_index = np.empty(len(unique), np.int64)
    new_index[keeps] = unique_vertex[keeps]
    extra = order[~keeps[order]]
    new_index[extra] = vertex_count + np.arange(len(extra))
    total = vertex_count + len(extra)
    vertex_map = np.arange(total, dtype=np.int64)
    vertex_map[new_index[extra]] = unique_vertex[extra]
    per_vertex = np.zeros((total, values.shape[1]))
    per_vertex[new_index] = unique[:, 1:]
    out, start = [], 0
    for column in columns:
        out.append(per_vertex[:, start:start + column.shape[1]])
        start += column.shape[1]
    return vertex_map, new_index[inverse].reshape(-1, 3), out


@dataclass
class Plan:
    """How a given mesh is textured: the camera-frame copy the texturers work on, the UV layout they
    bake into, and what meta.json says about it."""

    mesh: GivenMesh
    camera_vertices: np.ndarray
    camera_normals: np.ndarray      # None: smooth normals
    vertex_map: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    uvs_kept: np.ndarray            # the file's own UVs (TEXCOORD_1) when a new map replaced them
    record: dict


def plan(mesh, mesh_view, texture_size):
    """UVs: the file's own when usable; a new unwrap when it has none; a new unwrap baked into (the
    file's kept as TEXCOORD_1) when its UVs overlap or leave [0, 1], since one texel cannot hold the
    colour of two places of the surface."""
    from .mesh_view import camera_matrix, to_camera
    from .uv import unwrap

    camera_vertices = to_camera(mesh.vertices, mesh_view)
    camera_normals = None
    if mesh.normals is not None:
        # normals follow the inverse transpose of the view's linear map (a rotation: itself)
        normals = mesh.normals @ np.linalg.inv(camera_matrix(mesh_view))
        length = np.linalg.norm(normals, axis=1, keepdims=True)
        camera_normals = normals / np.maximum(length, 1e-12) if (length > 1e-9).all() else None
    problems = uv_problems(mesh.corner_uvs, mesh.vertices[mesh.faces]) if mesh.corner_uvs is not None else None
    count, faces = len(mesh.vertices), mesh.faces
    if mesh.corner_uvs is not None and not needs_new_uvs(problems):
        source, uvs_kept = "given", None
        vertex_map, new_faces, (uvs,) = layout(count, faces, mesh.corner_uvs)
    else:
        split_map, split_faces, split_uvs = unwrap(camera_vertices, faces, texture_size)
        if not np.array_equal(split_map[split_faces], faces):   # the unwrap keeps faces in order
            raise RuntimeError("the UV unwrap reordered the mesh's faces")
        corner_new = split_uvs[split_faces]
        if mesh.corner_uvs is None:
            source, uvs_kept = "new", None
            vertex_map, new_faces, (uvs,) = layout(count, faces, corner_new)
        else:
            source = "rebaked"
            vertex_map, new_faces, (uvs, uvs_kept) = layout(count, faces, corner_new, mesh.corner_uvs)
    record = {"format": mesh.format, "vertices": int(count), "faces": int(len(faces)), "uvs": source,
              "uv_problems": problems, "added_seam_vertices": int(len(vertex_map) - count),
              "original_uvs": "TEXCOORD_1" if uvs_kept is not None else None}
    return Plan(mesh, camera_vertices, camera_normals, vertex_map, new_faces, uvs, uvs_kept, record)
