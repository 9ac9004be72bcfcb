"""The built-in texturer: UV unwrap, then bake albedo, normal, roughness, metallic and AO maps for any
closed mesh from the framed input image.

Each texel is traced back to its surface point; the point is projected into the input view and into
every extra view that sees it (blended by viewing angle, each view de-lit on its own)
(orthographic, camera looking down -Z). Points the camera sees take the image's colour; hidden points
(the far side, or behind another part) take the colour at the same image position, i.e. the visible
side mirrored through the object, which is how a single photo best predicts the back of most
objects, but only as far as that mirror can be trusted (see `hidden_trust`): where another part lies
in front (a handle in front of a mug's body) or the surface grazes the view (the unseen top and
bottom, which project onto the silhouette's edge), the mirrored sample is faded into a smooth
continuation of the trusted colours over the surface (`vertex_fill`). Chart borders and gutters are
filled by push-pull so nothing bleeds.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

from . import ao, delight, materials, raster
from .fill import fill_texture, push_pull
from .uv import unwrap
from ..mesh_ops import smooth_vertex_normals

AO_MAX_SIZE = 256
BUMP_STRENGTH = 6.0          # height (image heights per pixel) -> normal tilt
DETAIL_FULL_DEG, DETAIL_MAX_DEG = 20.0, 40.0   # detail normals trusted fully / not at all beyond
DEPTH_TOLERANCE = 0.02       # output-frame units: how far behind the visible surface still counts as seen
# Slope-scaled depth bias (as in shadow mapping): the z-buffer holds one depth per pixel, so a surface seen
# at a grazing angle changes depth by tan(angle) per pixel and its own texels fail the test against the
# pixel's depth in thin lines wherever it ripples (a marching-cubes lid seen from 20 degrees up was 9%
# "hidden" in stripes, shaded as the far side). The tolerance grows by one pixel's worth of that slope
# (the depth is read at the point's pixel, up to a pixel from where the point projects), capped at the
# slope of |n.z| = 0.24: beyond it the image says little anyway, and a wider tolerance would let a
# silhouette's rim count as seen farther round.
SLOPE_BIAS_PIXELS = 1.0
MAX_BIAS_SLOPE = 4.0


def _interpolate(values, faces, face_index, weights):
    """values: (V, C) tensor; returns (N, C) at the given faces/barycentrics."""
    corners = values[faces[face_index]]                  # (N, 3, C)
    return (corners * weights[:, :, None]).sum(dim=1)


def _accumulate(faces, per_face, count):
    """Sum per-face vectors onto their corners' vertices. Done with bincount on the CPU: CUDA's
    index_add_ on floats adds in a varying order, which would make the maps differ run to run."""
    index = faces.reshape(-1).cpu().numpy()
    values = per_face.detach().cpu().numpy().astype(np.float64)
    values = np.repeat(values, 3, axis=0)
    summed = np.stack([np.bincount(index, weights=values[:, k], minlength=count) for k in range(3)], axis=1)
    return torch.as_tensor(summed, dtype=per_face.dtype, device=per_face.device)


def vertex_tangents(positions, uvs, faces, normals):
    """Per-vertex tangent (along +u) and bitangent (along image-up, -v in glTF UVs), orthonormal to the
    normal: the OpenGL (+Y up) convention that glTF and Blender's Normal Map node use."""
    p = positions[faces]
    t = uvs[faces]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    du1, du2 = t[:, 1, 0] - t[:, 0, 0], t[:, 2, 0] - t[:, 0, 0]
    dv1, dv2 = -(t[:, 1, 1] - t[:, 0, 1]), -(t[:, 2, 1] - t[:, 0, 1])
    det = du1 * dv2 - du2 * dv1
    det = torch.where(det.abs() < 1e-20, torch.full_like(det, 1e-20), det)
    tangent_f = (e1 * dv2[:, None] - e2 * dv1[:, None]) / det[:, None]
    bitangent_f = (e2 * du1[:, None] - e1 * du2[:, None]) / det[:, None]
    tangent = _accumulate(faces, tangent_f, len(positions))
    bitangent = _accumulate(faces, bitangent_f, len(positions))
    tangent = F.normalize(tangent - normals * (tangent * normals).sum(1, keepdim=True), dim=1)
    handed = torch.sign((torch.cross(normals, tangent, dim=1) * bitangent).sum(1, keepdim=True))
    handed = torch.where(handed == 0, torch.ones_like(handed), handed)
    bitangent = torch.cross(normals, tangent, dim=1) * handed
    return tangent, bitangent


def _core(mask):
    """The object's pixels less a 2-pixel fringe (anti-aliased edge pixels mix in the background)."""
    return -F.max_pool2d(-mask[None, None], 5, stride=1, padding=2)[0, 0]


def _extend_colours(rgb, core):
    """Fill the image outside the object's core (bool, `_core`) with the object's own edge colours, so
    samples that land a pixel outside the silhouette (rim texels) never pick up the background."""
    return push_pull(rgb, core)


def _sample(image, pixels, size):
    """Bilinear sample (C, H, W) at pixel coordinates (N, 2) (x, y with centres at +0.5)."""
    grid = (pixels / size * 2 - 1).view(1, 1, -1, 2).to(image.dtype)
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T


def view_buffers(view, vertices, faces, vertex_normals, size, device, detail_normals=None):
    """Render the mesh from the input view: per-pixel depth (nearest surface) and normal.

    Returns (zbuf (H*W,), normals (3, H, W), covered (H, W) bool)."""
    vertices_px = view.to_pixels(vertices)
    tri_px = vertices_px[faces]
    depth_key = vertices[faces][:, :, 2].max(axis=1)
    ids = raster.face_ids(tri_px, size, size, depth=depth_key, device=device)
    flat, face_index, weights = raster.barycentric(ids, tri_px, device)
    faces_t = torch.as_tensor(faces, device=device)
    surface = _interpolate(torch.as_tensor(vertices, dtype=torch.float32, device=device), faces_t, face_index, weights)
    if detail_normals is not None:
        normal = F.normalize(detail_normals(surface), dim=1)
    else:
        normal = F.normalize(_interpolate(torch.as_tensor(vertex_normals, dtype=torch.float32, device=device),
                                          faces_t, face_index, weights), dim=1)
    zbuf = torch.full((size * size,), -1e9, device=device)
    zbuf[flat] = surface[:, 2]
    normals = torch.zeros(3, size * size, device=device)
    normals[:, flat] = normal.T
    covered = torch.zeros(size * size, dtype=torch.bool, device=device)
    covered[flat] = True
    return zbuf, normals.view(3, size, size), covered.view(size, size)


def visible(view, zbuf, points, normals, size):
    """Which surface points the input camera sees: depth test against the view's z-buffer."""
    pix = torch.as_tensor(view.to_pixels(points.cpu().numpy()), device=points.device, dtype=torch.float32)
    col = pix[:, 0].long().clamp(0, size - 1)
    row = pix[:, 1].long().clamp(0, size - 1)
    front = zbuf[row * size + col]
    nz = normals[:, 2].clamp(min=1e-6)
    slope = (torch.sqrt((1.0 - nz * nz).clamp(min=0.0)) / nz).clamp(max=MAX_BIAS_SLOPE)
    tolerance = DEPTH_TOLERANCE + SLOPE_BIAS_PIXELS / float(view.scale) * slope
    return (points[:, 2] >= front - tolerance) & (normals[:, 2] > 0.0)


TEXEL_CHUNK = 1 << 20      # texels shaded per step: bounds memory at 4096^2 textures


def _unit(x):
    """Row-normalise (cheaper than F.normalize on the CPU)."""
    return x * torch.rsqrt((x * x).sum(dim=1, keepdim=True).clamp(min=1e-24))


class _ImageSide:
    """Everything texels read from one view: de-lit colours, depth, and (front only) material estimates.

    An extra view sees output-frame points through `rotation` (its camera looks down -Z of the rotated
    frame); the front has none."""

    def __init__(self, job, view, vertices, faces, vertex_normals, detail_normals, image=None, rotation=None):
        device = job.device
        image = torch.as_tensor(job.image if image is None else image, device=device).permute(2, 0, 1)
        image = image.to(torch.float32) / 255.0
        self.size = image.shape[-1]
        self.rotation = None if rotation is None else torch.as_tensor(rotation, dtype=torch.float32, device=device)
        rgb, mask = image[:3], image[3]
        if rotation is not None:
            vertices = vertices @ np.asarray(rotation).T
            vertex_normals = vertex_normals @ np.asarray(rotation).T
            if detail_normals is not None:
                detail_normals = self._rotated(detail_normals)
        self.zbuf, view_normals, covered = view_buffers(view, vertices, faces, vertex_normals, self.size, device,
                                                        detail_normals)
        # Each view's own lighting is taken out, fitted on its own pixels, as for the front.
        gain, _explained = delight.shading_gain(rgb, view_normals, covered & (mask > 0.5))
        gain = _unclipped(gain, rgb, covered & (mask > 0.5))
        core = _core(mask) > 0.5
        self.colours = _extend_colours((rgb * gain[None]).clamp(0, 1), core)
        if rotation is None:
            self.core = core.to(torch.float32)[None]
            estimates = materials.estimate(rgb, mask)
            self.maps = torch.stack([estimates["roughness"], estimates["metallic"], estimates["bump_dx"],
                                     estimates["bump_dy"]])
        self.view = view

    def _rotated(self, detail_normals):
        rotation = self.rotation

        def rotated(points):
            return detail_normals(points @ rotation.to(points.dtype)) @ rotation.to(points.dtype).T
        return rotated

    def look(self, point, normal):
        """(albedo (N, 3), seen (N,) bool, facing (N,) cosine toward this camera) for output-frame texels."""
        if self.rotation is not None:
            point, normal = point @ self.rotation.T, normal @ self.rotation.T
        pixels = torch.as_tensor(self.view.to_pixels(point.cpu().numpy()), device=point.device, dtype=torch.float32)
        seen = visible(self.view, self.zbuf, point, normal, self.size)
        return _sample(self.colours, pixels, self.size), seen, normal[:, 2]


CLIP_SHARE = 0.02     # share of the object's pixels whose de-lit colour may reach the 8-bit ceiling


def _unclipped(gain, rgb, valid):
    """The de-lighting gain scaled so that no more than CLIP_SHARE of the object's pixels would leave
    [0, 1] (a light object whose shadows are brightened would otherwise flatten to white, its shading
    lost), then capped per pixel so the brightest channel reaches at most 1: clamping channels one by
    one would shift hues (a de-lit saturated blue turning cyan) instead of only losing brightness.
    One factor for the whole image keeps every colour's ratio to the others (on the dev set's
    ground-truth meshes it lifts the front view's PSNR from 31.7 to 36.6 dB for the white bowl)."""
    peak = rgb.amax(dim=0).clamp(min=1e-6)
    if bool(valid.any()):
        needed = torch.quantile((peak * gain)[valid].to(torch.float32), 1.0 - CLIP_SHARE)
        if float(needed) > 1.0:
            gain = gain / needed
    return torch.minimum(gain, 1.0 / peak)


def _trusted_detail(fine, normal):
    """The engine's high-resolution normal where it refines the mesh normal, fading to the mesh normal
    where the two disagree by more than DETAIL_MAX_DEG: a field sampled on a grid turns over a grid
    cell at a sharp crease (a cone's rim), which would shade a dark wobbly band along the edge."""
    cos = (fine * normal).sum(dim=1, keepdim=True)
    near, far = math.cos(math.radians(DETAIL_FULL_DEG)), math.cos(math.radians(DETAIL_MAX_DEG))
    trust = ((cos - far) / (near - far)).clamp(0.0, 1.0)
    return _unit(normal + trust * (fine - normal))


def _colour(side, extra_sides, point, normal, pixels):
    """(albedo (N, 3), seen (N,) bool) before any hidden-side treatment: the input image's colour at the
    point's pixel (the mirror where hidden). With extra views every view that sees a point contributes
    its colour, weighted by how squarely it faces that camera (cos^2: a grazing view says little and
    fades out without a seam); `seen` is then "some view sees it"."""
    seen = visible(side.view, side.zbuf, point, normal, side.size)
    albedo = _sample(side.colours, pixels, side.size)
    if extra_sides:
        facing_front = normal[:, 2].clamp(min=0)
        weight = seen.to(torch.float32) * facing_front ** 2
        total = albedo * weight[:, None]
        for extra in extra_sides:
            colour, seen_k, facing_k = extra.look(point, normal)
            w = seen_k.to(torch.float32) * facing_k.clamp(min=0) ** 2
            total, weight = total + colour * w[:, None], weight + w
            seen = seen | seen_k
        blended = weight > 1e-6
        albedo = torch.where(blended[:, None], total / weight.clamp(min=1e-6)[:, None], albedo)
        seen = seen & blended
    return albedo, seen


# How far the mirrored sample of a hidden point is trusted (see hidden_trust). None of these is fitted to
# any object; each follows from what the sample means.
# grid cells inside the surface where a point's own slab is read: the parity voxelization puts the surface
# within one cell of where it is, and a trilinear read spans half a cell more. Overshooting a thin wall
# toward -z is harmless (the cells behind a slab count its exit too).
SLAB_INSET = 1.5
GRAZE_NONE, GRAZE_FULL = 0.2, 0.5   # |normal.z|: the image stretched 5x (no trust) .. 2x (full trust)
FILL_SMOOTHING = 1.0         # edge-graph Laplacian weight against a fully trusted vertex (about one edge)
FILL_FLOOR = 1e-6            # pull toward the mean trusted colour: pieces with no trusted vertex at all


def slabs_in_front(grid):
    """(res, res, res) occupancy [z, y, x] -> for every cell, how many solid runs of its z column end
    (are left toward the camera, +z) at or beyond it, less one, never below zero.

    Read inside a surface point's own slab this counts the *other* parts between it and the camera: 0
    where the image pixel in front shows the same slab, 1 behind a handle, and so on."""
    after = torch.cat([grid[1:], torch.zeros_like(grid[:1])], dim=0)
    exits = grid * (1.0 - after)                                 # last solid cell of each run along +z
    beyond = torch.flip(torch.cumsum(torch.flip(exits, [0]), 0), [0])
    return (beyond - 1.0).clamp(min=0.0)


def hidden_trust(side, slabs, point, normal, pixels):
    """How far the mirrored sample of hidden surface points can stand for their colour, in [0, 1].

    A single image predicts the far side of an object by its near side at the same image position:
    right for the body of most objects (the colour goes through), wrong in two cases that hold for
    every object, whatever its kind, and that the geometry alone detects:
    - another part lies in front: the pixel shows that part, not this slab (the back of a mug's body
      behind its handle would get the handle's colour). Walking from the point toward the camera
      through the occupancy grid must leave the object exactly once (`slabs_in_front` read a little
      inside the surface, trilinear, so the edge of a part's "shadow" is a cell wide rather than a
      texel-sharp outline);
    - the surface grazes the view: a patch of area A covers A |n.z| of the image, so where |n.z| is
      small (the unseen top and bottom seen from level, the sides' rims) the whole surface reads one
      line of pixels at the silhouette's edge, smeared into streaks. The sample is trusted fully up to
      a stretch of 2 (|n.z| >= 0.5, within 60 degrees of facing the axis) and not at all from a stretch
      of 5 (|n.z| <= 0.2), smoothly between;
    - and the pixel must be the object's own (inside the silhouette less its anti-aliased fringe):
      beyond it the colours are only the edge's, extended.
    """
    cell = 2 * ao.EXTENT / slabs.shape[0]
    inner = point - normal * (SLAB_INSET * cell)
    extra = F.grid_sample(slabs[None, None], (inner / ao.EXTENT).view(1, 1, 1, -1, 3).to(slabs.dtype),
                          mode="bilinear", padding_mode="zeros", align_corners=False).view(-1)
    own = (1.0 - extra).clamp(0.0, 1.0)
    t = ((normal[:, 2].abs() - GRAZE_NONE) / (GRAZE_FULL - GRAZE_NONE)).clamp(0.0, 1.0)
    graze = t * t * (3.0 - 2.0 * t)
    inside = _sample(side.core, pixels, side.size)[:, 0]
    return own * graze * inside


def _edge_laplacian(faces, count):
    """The mesh's vertex graph Laplacian (unit edge weights), CSR float64."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    adjacency = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(count, count)).tocsr()
    adjacency = adjacency + adjacency.T
    adjacency.data[:] = 1.0
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    return sp.diags(degree) - adjacency


def vertex_fill(side, extra_sides, slabs, vertices, faces, vertex_normals, device):
    """(V, 3) per-vertex colours: the trusted colours continued smoothly over the surface.

    Every vertex some view sees carries its seen colour with weight 1; a hidden vertex carries its
    mirrored colour (muted) weighted by `hidden_trust`. The fill c minimises
    sum_i w_i |c_i - m_i|^2 + FILL_SMOOTHING sum_edges |c_i - c_j|^2 over the vertices not fully trusted
    (a screened harmonic fill on the vertex graph, one sparse solve): where trust is high c follows the colours within about an edge,
    where it is nil c is harmonic, the smoothest continuation of its surroundings (streaks and patterns
    cannot grow into it; a harmonic function has no interior extremes). On the vertex graph of the mesh
    itself, not the UV atlas, so the fill is continuous across UV seams."""
    point = torch.as_tensor(vertices, dtype=torch.float32, device=device)
    normal = _unit(torch.as_tensor(vertex_normals, dtype=torch.float32, device=device))
    pixels = torch.as_tensor(side.view.to_pixels(vertices), device=device, dtype=torch.float32)
    albedo, seen = _colour(side, extra_sides, point, normal, pixels)
    albedo = torch.where(seen[:, None], albedo, _muted(albedo))
    trust = torch.where(seen, torch.ones_like(albedo[:, 0]), hidden_trust(side, slabs, point, normal, pixels))
    m = albedo.detach().cpu().numpy().astype(np.float64)
    w = trust.detach().cpu().numpy().astype(np.float64)
    filled = m.copy()
    free = w < 1.0
    if free.any():
        # Fully trusted vertices keep their colour exactly (c = m); only the others are solved for, with
        # the trusted ones as boundary values: a smaller system (typically a third of the vertices) in
        # separate patches, which factorizes several times faster than the whole graph.
        mean = (m * w[:, None]).sum(0) / max(w.sum(), 1e-12)
        laplacian = _edge_laplacian(np.asarray(faces), len(m))
        rows = laplacian[free]
        inner, coupling = rows[:, free], rows[:, ~free]
        system = (sp.diags(w[free] + FILL_FLOOR) + FILL_SMOOTHING * inner).tocsc()
        rhs = (m[free] * w[free, None] + FILL_FLOOR * mean[None]
               - FILL_SMOOTHING * (coupling @ m[~free]))
        filled[free] = spla.splu(system, permc_spec="COLAMD").solve(rhs)
    return torch.as_tensor(np.clip(filled, 0.0, 1.0), dtype=torch.float32, device=device)


def _muted(mirrored):
    """A mirrored colour a little desaturated and darker, so the back reads as plausible rather than as
    a duplicate of the front. Only the mirror is muted: the fill continues the colours around it as they
    are, so it meets the seen side without a step."""
    grey = mirrored.mean(dim=1, keepdim=True)
    return mirrored * 0.9 + (grey - mirrored) * 0.1


def _shade(side, attributes, faces_t, face_index, weights, detail_normals, extra_sides, fill):
    """Channels for a batch of texels: albedo RGB, tangent-space normal RGB, roughness, metallic.

    attributes: per-vertex position, normal, tangent, bitangent. Texels a view sees take its colour
    (`_colour`); hidden ones the mirrored colour as far as `hidden_trust` holds, and beyond it the
    per-vertex colour `fill` = (slabs, (V, 3) colours) interpolated (only where needed: the gather is
    one of the bake's costly steps)."""
    frame = _interpolate(attributes, faces_t, face_index, weights)
    point, normal = frame[:, 0:3], _unit(frame[:, 3:6])
    tangent, bitangent = _unit(frame[:, 6:9]), _unit(frame[:, 9:12])
    pixels = torch.as_tensor(side.view.to_pixels(point.cpu().numpy()), device=point.device, dtype=torch.float32)
    albedo, seen = _colour(side, extra_sides, point, normal, pixels)
    roughness, metallic, bump_dx, bump_dy = _sample(side.maps, pixels, side.size).unbind(dim=1)

    # Normals: the smooth high-resolution surface (if the engine has one) plus fine image detail,
    # fading out where the view grazes the surface and the image says little. A height field h(x, y)
    # on either the front or the mirrored back tilts the normal by (-dh/dx, -dh/dy_up) alike.
    fine = normal if detail_normals is None else _trusted_detail(_unit(detail_normals(point)), normal)
    facing = normal[:, 2].abs()
    tilt = BUMP_STRENGTH * torch.stack([-bump_dx, bump_dy, torch.zeros_like(bump_dx)], dim=1) * facing[:, None]
    shading_normal = _unit(fine + tilt)
    tangent_space = _unit(torch.stack([(shading_normal * tangent).sum(1), (shading_normal * bitangent).sum(1),
                                       (shading_normal * normal).sum(1)], dim=1))

    hidden = torch.nonzero(~seen).flatten()
    if len(hidden):
        mirrored = _muted(albedo[hidden])
        slabs, colours = fill
        trust = hidden_trust(side, slabs, point[hidden], normal[hidden], pixels[hidden])
        doubt = torch.nonzero(trust < 1.0).flatten()
        if len(doubt):
            texels = hidden[doubt]
            continued = _interpolate(colours, faces_t, face_index[texels], weights[texels])
            t = trust[doubt, None]
            mirrored[doubt] = t * mirrored[doubt] + (1.0 - t) * continued
        albedo[hidden] = mirrored
    return torch.cat([albedo, tangent_space * 0.5 + 0.5, roughness[:, None], metallic[:, None]], dim=1)


def bake_textures(job, vertices, faces, view, size, detail_normals=None, views=None, uv_layout=None,
                  vertex_normals=None):
    """Returns a TextureResult-like dict: vertices, faces, uvs, normals and the five uint8 maps.

    `views`: name -> engines.base.ExtraView, the extra views registered to this mesh (projected too);
    uv_layout: (vertex_map, faces, uvs) to bake into instead of a new unwrap (a given mesh's own UVs);
    vertex_normals: the mesh's own (the tangent space of the normal map is built on them)."""
    device = job.device
    if vertex_normals is None:
        vertex_normals = smooth_vertex_normals(vertices, faces)
    # The UV unwrap (xatlas and numpy, GIL mostly released) runs beside the work that needs only the
    # mesh and the image: reading the input view and voxelizing for AO.
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        unwrapping = pool.submit(unwrap, vertices, faces, size) if uv_layout is None else None
        side = _ImageSide(job, view, vertices, faces, vertex_normals, detail_normals)
        extra_sides = [_ImageSide(job, extra.mapping, vertices, faces, vertex_normals, detail_normals,
                                  image=extra.image, rotation=extra.rotation)
                       for _name, extra in sorted((views or {}).items())]
        job.progress("texture", 0.15, "read the image")
        occupancy = ao.occupancy(vertices, faces, device)
        vertex_map, uv_faces, uvs = unwrapping.result() if unwrapping is not None else uv_layout
    finally:
        pool.shutdown(wait=False)   # a cancelled job does not wait for the unwrap it no longer needs
    job.progress("texture", 0.3, "unwrapped UVs" if uv_layout is None else "the mesh's own UVs")

    positions = torch.as_tensor(vertices[vertex_map], dtype=torch.float32, device=device)
    normals_v = torch.as_tensor(vertex_normals[vertex_map], dtype=torch.float32, device=device)
    uvs_t = torch.as_tensor(uvs, dtype=torch.float32, device=device)
    faces_t = torch.as_tensor(uv_faces, device=device)
    tangent_v, bitangent_v = vertex_tangents(positions, uvs_t, faces_t, normals_v)
    slabs = slabs_in_front(occupancy)
    fill_v = vertex_fill(side, extra_sides, slabs, vertices, faces, vertex_normals, device)
    job.progress("texture", 0.4, "continued the hidden side")
    fill = (slabs, fill_v[torch.as_tensor(vertex_map, device=device, dtype=torch.long)].contiguous())
    attributes = torch.cat([positions, normals_v, tangent_v, bitangent_v], dim=1)    # one gather per texel

    tri_uv = uvs[uv_faces] * size
    ids = raster.face_ids(tri_uv, size, size, device=device)
    flat, face_index, weights = raster.barycentric(ids, tri_uv, device)
    job.progress("texture", 0.45, "rasterized texels")

    canvas = torch.zeros((size * size, 8), dtype=torch.float32, device=device)
    for start in range(0, len(flat), TEXEL_CHUNK):
        part = slice(start, start + TEXEL_CHUNK)
        canvas[flat[part]] = _shade(side, attributes, faces_t, face_index[part], weights[part], detail_normals,
                                     extra_sides, fill)
        job.progress("texture", 0.45 + 0.3 * min(1.0, (start + TEXEL_CHUNK) / max(len(flat), 1)), "painting texels")

    occlusion = _bake_ao(occupancy, tri_uv, positions, normals_v, faces_t, size, device)
    job.progress("texture", 0.85, "ambient occlusion")

    maps = (_filled_atlas(canvas, flat, size).clamp(0, 1) * 255 + 0.5).to(torch.uint8)

    def host(channels):
        return channels.contiguous().cpu().numpy()

    return {
        "vertices": vertices[vertex_map], "faces": uv_faces, "uvs": uvs,
        "normals": vertex_normals[vertex_map],
        "maps": {"albedo": host(maps[..., 0:3]), "normal": host(maps[..., 3:6]), "roughness": host(maps[..., 6]),
                 "metallic": host(maps[..., 7]), "ao": occlusion},
    }


def _filled_atlas(canvas, flat, size):
    """canvas (size*size, C) with the texels at `flat` written: the (size, size, C) atlas with its
    gutters filled, on the canvas's device."""
    known = torch.zeros(size * size, dtype=torch.bool, device=canvas.device)
    known[flat] = True
    return fill_texture(canvas.view(size, size, -1), known.view(size, size))


def _bake_ao(grid, tri_uv, positions, normals_v, faces_t, size, device):
    """AO (uint8, size x size) baked at up to AO_MAX_SIZE texels (it is smooth), then gutter-filled and
    upsampled."""
    ao_size = min(size, AO_MAX_SIZE)
    factor = ao_size / size
    ids = raster.face_ids(tri_uv * factor, ao_size, ao_size, device=device)
    flat, face_index, weights = raster.barycentric(ids, tri_uv * factor, device)
    point = _interpolate(positions, faces_t, face_index, weights)
    normal = _unit(_interpolate(normals_v, faces_t, face_index, weights))
    canvas = torch.zeros((ao_size * ao_size, 1), dtype=torch.float32, device=device)
    canvas[flat, 0] = ao.bake(point, normal, grid)
    filled = _filled_atlas(canvas, flat, ao_size)[..., 0].cpu().numpy()
    if ao_size != size:
        filled = cv2.resize(filled, (size, size), interpolation=cv2.INTER_LINEAR)
    return (np.clip(filled, 0, 1) * 255 + 0.5).astype(np.uint8)
