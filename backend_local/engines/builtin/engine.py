"""The `builtin` engine adapter: needs no weights, runs on CPU or CUDA through torch."""

import numpy as np
import torch
import trimesh

from shared.errors import EMPTY_FOREGROUND, Gen3DError
from shared.request import VIEW_AZIMUTHS

from .. import base
from ...mesh_ops import decimate, drop_small_components, normalize
from ...texturing.bake import bake_textures
from . import learned_shape, shape as shape_model

# Marching cubes yields k * g^2 triangles on a grid of g cells along the object's largest side, with k
# set by the object's surface area relative to its bounding box (3.3 for a capsule to 9.1 for a sphere
# on the dev set). k is measured on a coarse probe grid (within ~3% of the fine grid's, for a few ms),
# and the grid sized so decimation starts from MC_SHARE times the requested face count: enough for
# quadric decimation to place faces where curvature needs them and for sharp creases (a cone's rim) to
# come out straight (at 1.5x they wobble visibly), without paying to simplify a mesh three or four
# times too fine.
MC_SHARE = 2.0
PROBE_GRID = 32
_MIN_GRID, _MAX_GRID = 64, 512   # below 64 cells the detail normals sampled from the grid blur


# Outward offsets (in grid cells, cumulative) tried when the surface is too thin to decimate closed.
THICKENING_CELLS = (0.5, 0.5, None)


def grid_for(field, face_count, octree_resolution):
    values, _origin, step = shape_model.sample_grid(field, PROBE_GRID)
    probe_faces = shape_model.count_surface_faces(values, step)
    per_cell2 = max(probe_faces, 1) / float(PROBE_GRID ** 2)
    wanted = int(np.ceil(np.sqrt(MC_SHARE * face_count / per_cell2)))
    return int(min(max(wanted, _MIN_GRID), max(octree_resolution, _MIN_GRID), _MAX_GRID))


def reach_face_count(vertices, faces, face_count):
    """A wire-thin object can yield fewer triangles than asked for even at the grid cap
    (octree_resolution): split every triangle in four (same surface) until decimation has enough to
    work from, so the result still has face_count triangles (within the contract's 10%)."""
    for _ in range(4):
        if len(faces) >= face_count:
            break
        vertices, faces = trimesh.remesh.subdivide(vertices, faces)
    return np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)


def estimated_elevation(field):
    """The input camera's elevation (degrees), or 0 when the image does not tell it.

    Only a solid of revolution chosen by the shading fit gives it: its discs (a rim, a base) project
    to ellipses whose axis ratio is sin(elevation), and the shading picks the sign. On the dev set that
    recovers the camera's 10-20 degrees within 1 degree for bowl, capsule, cone, donut and mug. A ring's
    hole (ball union, `ring_tilt`) is not used: it cannot tell a ring standing up from one lying down,
    and its sign was wrong on the dev torus, and an unknown elevation is better left at 0 (the object
    keeps the camera's lean) than turned the wrong way.
    """
    info = field.info
    if info.get("revolution") and info.get("shading_reliable"):
        return float(np.degrees(field.tilt))
    return 0.0


def _extra_views(field, scale, offset):
    """The registered views in the output frame (vertices = (pixel frame - offset) * scale)."""
    if field.multiview is None:
        return None
    views = {}
    for camera in field.multiview.cameras:
        shift = camera.rotation @ np.asarray(offset, dtype=np.float64)
        mapping = base.ViewMapping(scale=camera.scale / scale, cx=camera.cx + camera.scale * shift[0],
                                   cy=camera.cy - camera.scale * shift[1])
        views[camera.name] = base.ExtraView(camera.rotation, mapping, camera.image)
    return views


def _fitted_views(vertices, job):
    """The extra views of a mesh that came with no registration (a given mesh, in the input camera's
    frame): each view's camera circled about the vertical axis at the input camera's elevation
    (mesh_view's, DESIGN.md "Coordinates"), its projection fitted to the view's silhouette like the
    front's (base.fit_view)."""
    if not job.views:
        return None
    from ...texturing.mesh_view import view_record
    from .multiview import view_rotation

    elevation = view_record(job.request.mesh_view)["elevation_deg"] if job.request.has_mesh else 0.0
    views = {}
    for name, image in job.views.items():
        rotation = view_rotation(VIEW_AZIMUTHS[name], elevation)
        views[name] = base.ExtraView(rotation, base.fit_view(vertices @ rotation.T, image[..., 3]), image)
    return views


class BuiltinEngine(base.Engine):
    name = "builtin"
    capabilities = frozenset({base.SHAPE, base.TEXTURE, base.MULTIVIEW, base.TEXTURE_EXISTING})
    vram_gb = {base.SHAPE: 0.5, base.TEXTURE: 1.0}

    def generate_shape(self, job):
        request = job.request
        learned = learned_shape.learned_surface(job, self.settings)
        if learned is not None:
            vertices, faces, elevation = learned
            vertices, faces = drop_small_components(vertices, faces)
            vertices, faces = reach_face_count(vertices, faces, request.face_count)
            try:
                vertices, faces = decimate(vertices, faces, request.face_count, require_closed=True)
            except Gen3DError:
                pass                # a surface too thin to simplify closed: the priors' shape instead
            else:
                job.progress("shape", 0.7, "surface extracted")
                return self._result(job, vertices, faces, elevation_deg=elevation)
        try:
            field = shape_model.reconstruct_field(job.image, job.device, seed=request.seed)
        except ValueError as exc:  # no usable outline left after framing
            raise Gen3DError(EMPTY_FOREGROUND, "No object outline to build a shape from (%s). Use an image where "
                             "the object stands out from its background." % exc, stage="shape", retryable=False)
        elevation = estimated_elevation(field)
        if job.views:
            try:
                known = elevation if field.info.get("revolution") and field.info.get("shading_reliable") else None
                elevation = shape_model.add_views(field, job.views, known, job.image, job.framing)
            except ValueError as exc:
                raise Gen3DError(EMPTY_FOREGROUND, "An extra view has no object outline (%s). Give views where the "
                                 "object stands out from its background." % exc, stage="shape", retryable=False)
        job.progress("shape", 0.4, "shape field")
        vertices, faces = self._surface(job, field, request)

        def detail_normals(points, scale, offset):
            pixel_points = points / scale + torch.as_tensor(offset, dtype=points.dtype, device=points.device)
            return shape_model.field_normals(field, pixel_points)

        return self._result(job, vertices, faces, elevation_deg=elevation, detail=detail_normals,
                            views=lambda scale, offset: _extra_views(field, scale, offset))

    @staticmethod
    def _result(job, vertices, faces, elevation_deg, detail=None, views=None):
        """ShapeResult of a pixel-frame mesh: normalised, with the view mapping back to the image; `detail`
        (points, scale, offset) and `views` (scale, offset) are given the normalisation they need."""
        vertices, scale, offset = normalize(vertices)
        size = job.image.shape[0]
        view = base.ViewMapping(scale=1.0 / scale, cx=size / 2.0 + offset[0], cy=size / 2.0 - offset[1])
        return base.ShapeResult(vertices, faces, view=view, elevation_deg=elevation_deg,
                                detail=None if detail is None else (lambda points: detail(points, scale, offset)),
                                views=None if views is None else views(scale, offset))

    @staticmethod
    def _surface(job, field, request):
        """The closed mesh at the face count. A part thinner than a grid cell (a leaf that the views carve
        down to a sheet) gives marching cubes sheets that decimation keeps tearing; then the surface is
        offset outwards by half a cell, then a whole one, so it has the thickness the grid can hold."""
        resolution = grid_for(field, request.face_count, request.octree_resolution)
        for thickening in THICKENING_CELLS:
            vertices, faces = shape_model.extract_mesh(field, resolution)
            job.progress("shape", 0.7, "surface extracted")
            vertices, faces = drop_small_components(vertices, faces)
            vertices, faces = reach_face_count(vertices, faces, request.face_count)
            try:
                # decimate() checks the result is closed and outward-facing (retrying if a collapse tore it)
                return decimate(vertices, faces, request.face_count, require_closed=True)
            except Gen3DError:
                if thickening is None:
                    raise
                field.values = field.values - thickening * field.grid_step
                field.gradient = None

    def generate_texture(self, job, shape):
        view = shape.view or base.fit_view(shape.vertices, job.image[..., 3])
        detail = shape.detail if callable(shape.detail) else None
        views = shape.views if shape.view is not None else _fitted_views(shape.vertices, job)
        baked = bake_textures(job, shape.vertices, shape.faces, view, job.request.texture_size, detail,
                              views=views, uv_layout=shape.uv_layout, vertex_normals=shape.normals)
        return base.TextureResult(baked["vertices"], baked["faces"], baked["uvs"], baked["maps"], baked["normals"])
