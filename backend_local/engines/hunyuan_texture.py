"""Turn a Hunyuan painter's result into our TextureResult.

The painters return the mesh they were given with their own UV atlas and texture images (2.1: albedo,
metallic, roughness; 2.0: albedo only). Our result needs all five maps in one layout, so the built-in
texturer bakes the mesh (UVs, tangent-space normal, AO, and its image-derived roughness/metallic), and
every map the painter did paint is resampled into that layout: each of our texels lies on one triangle
at known barycentrics, the painter's copy of that triangle gives its UV there, and the painter's image
is sampled at that UV. Triangles are matched by their corner positions, so the painter may reorder
faces or split vertices along its seams.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from shared.errors import INTERNAL, Gen3DError

from ..texturing import raster
from ..texturing.bake import bake_textures
from ..texturing.fill import push_pull
from . import base

MAX_PAINT_TEXTURE = 4096  # the painters bake at twice our size up to this, then halve their own output
MATCH_TOLERANCE = 1e-3     # output-frame units: corners closer than this are the same corner
MAX_UNMATCHED = 0.02       # share of triangles the painter may have changed before we refuse its result


# The 2.1 paint model's metallic-roughness image is laid out as in its training renders
# (hy3dshape/tools/render/render.py: R = 1 constant, G = roughness, B = metallic), which is also glTF's
# metallicRoughness convention. Its renderer's get_texture_mr/save_mesh take metallic from channel 0
# (the constant), so the painter's map_Pm file is not the metallic map.
MR_ROUGHNESS_CHANNEL, MR_METALLIC_CHANNEL = 1, 2


def _array(texture):
    if hasattr(texture, "detach"):
        texture = texture.detach().float().cpu().numpy()
    return np.asarray(texture, dtype=np.float32)


def _halved(image):
    """2x2 box average: the painter bakes at twice the asked size and halves on saving (save_mesh's
    downsample); done here too, so sampling at our texels does not skip three of every four of its texels."""
    height, width = image.shape[:2]
    if height % 2 or width % 2:
        return image
    return image.reshape(height // 2, 2, width // 2, 2, -1).mean(axis=(1, 3))


def painted_from_render(render):
    """The 2.1 painter's result straight from its renderer after a call: the mesh as it saves it (positions
    in the frame it was given, OBJ-convention UVs) and its float textures, roughness from the MR image's G
    and metallic from its B. None when the renderer does not hold them (another library version)."""
    if not hasattr(render, "get_mesh") or getattr(render, "tex", None) is None or \
            getattr(render, "tex_mr", None) is None:
        return None
    positions, faces, uvs, uv_faces = render.get_mesh(normalize=False)
    albedo, mr = _halved(_array(render.tex)), _halved(_array(render.tex_mr))
    return {"vertices": np.asarray(positions, np.float64), "uvs": np.asarray(uvs, np.float64),
            "faces": np.asarray(faces, np.int64), "uv_faces": np.asarray(uv_faces, np.int64),
            "images": {"albedo": np.clip(albedo[..., :3], 0, 1),
                       "roughness": np.clip(mr[..., MR_ROUGHNESS_CHANNEL:MR_ROUGHNESS_CHANNEL + 1], 0, 1),
                       "metallic": np.clip(mr[..., MR_METALLIC_CHANNEL:MR_METALLIC_CHANNEL + 1], 0, 1)}}


def read_textured_obj(path):
    """The 2.1 painter's OBJ: positions, UVs (OBJ convention, v up), per-corner indices into both, and the
    material's albedo (map_Kd) and roughness (map_Pr) files as absolute paths. Its map_Pm is skipped: it
    holds the MR image's constant red channel, not metallic (see MR_METALLIC_CHANNEL), so the built-in
    estimate stays."""
    positions, uvs, face_pos, face_uv, maps = [], [], [], [], {}
    folder = os.path.dirname(os.path.abspath(path))
    material_file = None
    with open(path) as handle:
        for line in handle:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                positions.append([float(x) for x in parts[1:4]])
            elif parts[0] == "vt":
                uvs.append([float(x) for x in parts[1:3]])
            elif parts[0] == "f":
                corners = [corner.split("/") for corner in parts[1:]]
                for k in range(1, len(corners) - 1):   # fan-triangulate polygons
                    tri = (corners[0], corners[k], corners[k + 1])
                    face_pos.append([int(c[0]) - 1 for c in tri])
                    face_uv.append([int(c[1]) - 1 for c in tri])
            elif parts[0] == "mtllib":
                material_file = os.path.join(folder, " ".join(parts[1:]))
    if material_file and os.path.isfile(material_file):
        keys = {"map_Kd": "albedo", "map_Pr": "roughness"}
        with open(material_file) as handle:
            for line in handle:
                parts = line.split()
                if parts and parts[0] in keys:
                    maps[keys[parts[0]]] = os.path.join(folder, parts[-1])
    return {"vertices": np.asarray(positions, np.float64), "uvs": np.asarray(uvs, np.float64),
            "faces": np.asarray(face_pos, np.int64), "uv_faces": np.asarray(face_uv, np.int64),
            "images": {key: read_image(file, 3 if key == "albedo" else 1) for key, file in maps.items()}}


def read_image(source, channels):
    """A file path or PIL image as float32 (H, W, channels) in [0, 1]."""
    from PIL import Image

    image = Image.open(source) if isinstance(source, str) else source
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    return array[..., None] if channels == 1 else array


def match_corners(ours, theirs):
    """ours (F, 3, 3), theirs (G, 3, 3) corner positions in one frame. For each of our triangles: the
    index of their same triangle, which of their corners each of ours is, and whether it matched."""
    from scipy.spatial import cKDTree

    _distance, index = cKDTree(theirs.mean(axis=1)).query(ours.mean(axis=1))
    candidate = theirs[index]
    gaps = np.linalg.norm(ours[:, :, None, :] - candidate[:, None, :, :], axis=-1)   # (F, 3 ours, 3 theirs)
    corner = gaps.argmin(axis=2)
    close = gaps.min(axis=2).max(axis=1) < MATCH_TOLERANCE
    permutation = (np.sort(corner, axis=1) == np.arange(3)).all(axis=1)
    return index, corner, close & permutation


def _sample_image(image, uv, device):
    """Bilinear samples of image (H, W, C) at OBJ-convention UVs (N, 2) -> (N, C)."""
    tensor = torch.as_tensor(image, device=device).permute(2, 0, 1)[None]
    grid = torch.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], dim=1).view(1, 1, -1, 2).to(tensor.dtype)
    return F.grid_sample(tensor, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T


def transfer(baked, painted, size, device):
    """Resample the painter's images into our baked layout. Returns {map name: (size, size[, 3]) uint8}."""
    ours = baked["vertices"][baked["faces"]]
    theirs = painted["vertices"][painted["faces"]]
    low, high = ours.reshape(-1, 3).min(0), ours.reshape(-1, 3).max(0)
    scale = 2.0 / max(float((high - low).max()), 1e-12)
    ours_n = (ours - (low + high) / 2) * scale
    theirs_n = (theirs - (low + high) / 2) * scale
    index, corner, matched = match_corners(ours_n, theirs_n)
    if 1.0 - matched.mean() > MAX_UNMATCHED:
        raise Gen3DError(INTERNAL, "The painter returned a different mesh than it was given (%.0f%% of the "
                         "triangles changed), so its texture cannot be placed. Try texture_engine 'builtin'."
                         % (100 * (1 - matched.mean())), stage="texture")
    their_uv = painted["uvs"][painted["uv_faces"][index]]                           # (F, 3 theirs, 2)
    corner_uv = np.take_along_axis(their_uv, corner[:, :, None], axis=1)            # (F, 3 ours, 2)

    tri_px = baked["uvs"][baked["faces"]] * size
    flat, face, weights = raster.barycentric(raster.face_ids(tri_px, size, size), tri_px, device)
    keep = torch.as_tensor(matched, device=device)[face]
    flat, face, weights = flat[keep], face[keep], weights[keep]
    uv = (torch.as_tensor(corner_uv, dtype=torch.float32, device=device)[face] * weights[:, :, None]).sum(1)
    known = torch.zeros(size * size, dtype=torch.bool, device=device)
    known[flat] = True
    maps = {}
    for name, image in painted["images"].items():
        values = _sample_image(image, uv, device)
        canvas = torch.zeros(values.shape[1], size * size, device=device)
        canvas[:, flat] = values.T
        canvas = push_pull(canvas.view(-1, size, size), known.view(size, size))
        array = (canvas.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        maps[name] = array.transpose(1, 2, 0) if array.shape[0] == 3 else array[0]
    return maps


def ready_painter(engine, job, message):
    """The loaded painter set to bake at twice the request's texture size (see _halved), and that size."""
    job.progress("texture", 0.02, message)
    painter = engine.model(base.TEXTURE, job.device)
    size = job.request.texture_size
    painter.config.texture_size = min(2 * size, MAX_PAINT_TEXTURE)
    painter.render.set_default_texture_resolution(painter.config.texture_size)
    return painter, size


class _QuietJob:
    """The job as the background bake sees it: the same fields, cancel still stops it, but no progress
    reports (the painter's progress owns the bar while both run)."""

    def __init__(self, job):
        self._job = job

    def __getattr__(self, name):
        return getattr(self._job, name)

    def progress(self, _stage, _fraction, _message=""):
        self._job.check_cancel()


def start_bake(job, shape, size):
    """The built-in bake of `shape` (UVs, normal, AO and the image-derived maps) started beside the painter:
    it needs only the mesh and the input image, and is mostly host work (xatlas, voxelizing) that the
    painter's GPU time hides; measured at full size it was about 1.3 s of the 2.1 texture stage when it ran
    after the painter. Returns a future for painted_result."""
    view = shape.view or base.fit_view(shape.vertices, job.image[..., 3])
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gen3d-bake")
    try:
        return pool.submit(bake_textures, _QuietJob(job), shape.vertices, shape.faces, view, size,
                           uv_layout=shape.uv_layout, vertex_normals=shape.normals)
    finally:
        pool.shutdown(wait=False)


def painted_result(job, shape, painted, size, baking=None):
    """Our five maps for `shape`: the built-in bake (`baking`: start_bake's future, else baked now), with each
    painted map (albedo; metallic and roughness when the painter made them) replacing the bake's own
    estimate."""
    if baking is None:
        baking = start_bake(job, shape, size)
    job.progress("texture", 0.88, "baking normal and AO maps")
    # The given mesh's own UVs (shape.uv_layout) are the layout everything is resampled into, so the
    # painter's re-unwrap never reaches the result.
    baked = baking.result()
    job.progress("texture", 0.9, "placing the painted maps")
    maps = dict(baked["maps"])
    maps.update(transfer(baked, painted, size, job.device))
    return base.TextureResult(baked["vertices"], baked["faces"], baked["uvs"], maps, baked["normals"])
