"""The `builtin` engine adapter: needs no weights, runs on CPU or CUDA through torch."""

import numpy as np
import torch

from shared.errors import EMPTY_FOREGROUND, Gen3DError

from .. import base
from ...mesh_ops import decimate, drop_small_components, normalize
from ...texturing.bake import bake_textures
from . import shape as shape_model

# Marching cubes yields about this many triangles per (grid cells along the largest side)^2 for a
# compact object; the grid is sized so decimation always has at least 1.5x the target to work from.
_FACES_PER_CELL2 = 3.0
_MIN_GRID, _MAX_GRID = 96, 512


def grid_for(face_count, octree_resolution):
    wanted = int(np.ceil(np.sqrt(1.5 * face_count / _FACES_PER_CELL2)))
    return int(min(max(wanted, _MIN_GRID), max(octree_resolution, _MIN_GRID), _MAX_GRID))


class BuiltinEngine(base.Engine):
    name = "builtin"
    capabilities = frozenset({base.SHAPE, base.TEXTURE})
    vram_gb = {base.SHAPE: 0.5, base.TEXTURE: 1.0}

    def generate_shape(self, job):
        request = job.request
        try:
            field = shape_model.reconstruct_field(job.image, job.device, seed=request.seed)
        except ValueError as exc:  # no usable outline left after framing
            raise Gen3DError(EMPTY_FOREGROUND, "No object outline to build a shape from (%s). Use an image where "
                             "the object stands out from its background." % exc, stage="shape", retryable=False)
        job.progress("shape", 0.4, "shape field")
        vertices, faces = shape_model.extract_mesh(field, grid_for(request.face_count, request.octree_resolution))
        job.progress("shape", 0.7, "surface extracted")
        vertices, faces = drop_small_components(vertices, faces)
        # decimate() checks the result is closed and outward-facing (retrying if a collapse tore it)
        vertices, faces = decimate(vertices, faces, request.face_count, require_closed=True)
        vertices, scale, offset = normalize(vertices)
        size = job.image.shape[0]
        view = base.ViewMapping(scale=1.0 / scale, cx=size / 2.0 + offset[0], cy=size / 2.0 - offset[1])

        def detail_normals(points):
            pixel_points = points / scale + torch.as_tensor(offset, dtype=points.dtype, device=points.device)
            return shape_model.field_normals(field, pixel_points)

        return base.ShapeResult(vertices, faces, view=view,
                                detail=detail_normals)

    def generate_texture(self, job, shape):
        view = shape.view or base.fit_view(shape.vertices, job.image[..., 3])
        detail = shape.detail if callable(shape.detail) else None
        baked = bake_textures(job, shape.vertices, shape.faces, view, job.request.texture_size, detail)
        return base.TextureResult(baked["vertices"], baked["faces"], baked["uvs"], baked["maps"], baked["normals"])
