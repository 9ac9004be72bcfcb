"""A small CPU mesh renderer: orthographic camera, per-pixel z-buffer, key + fill + specular shading.

Used by bench/unseen_set.py to render test meshes the way the dev set is rendered (DESIGN.md "Test
data"): a camera circled about the vertical axis at some elevation, looking at the origin, up +Y.
Triangles are rasterized in torch on the CPU at pixel centres with depth interpolated per pixel
(nearest wins), supersampled and averaged so the alpha has true anti-aliased edges. Surfaces are
two-sided (open scans get their inside shaded, not holes).
"""

import math

import numpy as np
import torch

# Lights in the camera frame (x right, y up, z towards the viewer), so every view is lit alike.
KEY = np.array([0.5, 0.8, 0.6]) / np.linalg.norm([0.5, 0.8, 0.6])
FILL = np.array([-0.6, 0.2, 0.4]) / np.linalg.norm([-0.6, 0.2, 0.4])


def view_rotation(azimuth_deg, elevation_deg):
    """World -> camera rotation (rows: right, up, backward), as bench/metrics.py's view_rotation for a
    camera at this azimuth (0: on +Z, 90: on +X) and elevation looking at the origin."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    backward = np.array([math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e)])
    right = np.cross([0.0, 1.0, 0.0], backward)
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(backward, right), backward])


def to_pixels(points_cam, size, ortho_scale):
    """Camera-frame points -> pixel coordinates (x right, y down; pixel i spans [i, i + 1])."""
    x = (points_cam[:, 0] / ortho_scale + 0.5) * size
    y = (0.5 - points_cam[:, 1] / ortho_scale) * size
    return np.stack([x, y], 1)


def rasterize(tri_xy, tri_z, height, width, batch=1 << 22):
    """Z-buffered coverage of pixel centres.

    tri_xy: (F, 3, 2) pixel coordinates; tri_z: (F, 3) depth, larger is nearer.
    Returns (face (H*W,) long, -1 where empty; weights (H*W, 3) barycentric weights of that face).
    """
    tri = torch.as_tensor(np.asarray(tri_xy), dtype=torch.float64)
    z = torch.as_tensor(np.asarray(tri_z), dtype=torch.float64)
    low = torch.floor(tri.min(dim=1).values - 0.5).clamp(min=0)
    high = torch.ceil(tri.max(dim=1).values - 0.5)
    high[:, 0].clamp_(max=width - 1)
    high[:, 1].clamp_(max=height - 1)
    extent = (high - low + 1).max(dim=1).values
    (x0, y0), (x1, y1), (x2, y2) = [(tri[:, k, 0], tri[:, k, 1]) for k in range(3)]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    valid = (high[:, 0] >= low[:, 0]) & (high[:, 1] >= low[:, 1]) & (area.abs() > 1e-12)
    best = torch.full((height * width,), -math.inf, dtype=torch.float64)
    found = []
    # Triangles grouped by bounding-box size (steps of about 1.5x): each group tests a dense K x K block
    # of candidate pixels per triangle, so the work stays near the covered area.
    size, smaller = 1, 0
    while bool((valid & (extent > smaller)).any()):
        ids = torch.nonzero(valid & (extent <= size) & (extent > smaller)).flatten()
        offsets = torch.arange(size, dtype=torch.float64)
        oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
        ox, oy = ox.reshape(1, -1), oy.reshape(1, -1)
        step = max(1, batch // (size * size))
        for start in range(0, len(ids), step):
            f = ids[start:start + step]
            px, py = low[f, 0:1] + ox, low[f, 1:2] + oy
            cx, cy = px + 0.5, py + 0.5
            a = area[f, None]
            w0 = ((x1[f, None] - cx) * (y2[f, None] - cy) - (x2[f, None] - cx) * (y1[f, None] - cy)) / a
            w1 = ((x2[f, None] - cx) * (y0[f, None] - cy) - (x0[f, None] - cx) * (y2[f, None] - cy)) / a
            w2 = 1.0 - w0 - w1
            inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (px < width) & (py < height)
            if not bool(inside.any()):
                continue
            rows = torch.nonzero(inside, as_tuple=True)[0]
            face = f[rows]
            w = torch.stack([w0[inside], w1[inside], w2[inside]], 1)
            depth = (w * z[face]).sum(1)
            pixel = (py[inside] * width + px[inside]).long()
            best.scatter_reduce_(0, pixel, depth, reduce="amax")
            found.append((pixel, face, w, depth))
        size, smaller = max(size + 1, (size * 3) // 2), size
    out = torch.full((height * width,), -1, dtype=torch.long)
    weights = torch.zeros((height * width, 3), dtype=torch.float64)
    if not found:
        return out, weights
    pixel, face, w, depth = [torch.cat(parts) for parts in zip(*found)]
    win = depth >= best[pixel]
    pixel, face, w = pixel[win], face[win], w[win]
    out.scatter_reduce_(0, pixel, face, reduce="amax")     # ties (shared edges) to the highest index
    keep = face == out[pixel]
    weights[pixel[keep]] = w[keep]
    return out, weights


def render(vertices, faces, normals, colour, azimuth_deg, elevation_deg, size=512, ortho_scale=2.4,
           supersample=2, specular=0.3, shininess=40.0, metallic=0.0):
    """RGBA uint8 (straight alpha, RGB 0 where empty) of a mesh seen from this camera.

    vertices, normals: (V, 3) world (glTF axes); faces (F, 3); colour(points (N, 3) world) -> (N, 3)
    in 0..1, the albedo. Metallic surfaces get a darker diffuse and a highlight tinted by the albedo.
    """
    rotation = view_rotation(azimuth_deg, elevation_deg)
    cam = np.asarray(vertices, np.float64) @ rotation.T
    n = size * supersample
    tri_xy = to_pixels(cam, n, ortho_scale)[faces]
    face, w = rasterize(tri_xy, cam[:, 2][faces], n, n)
    hit = torch.nonzero(face >= 0).flatten()
    fid = face[hit].numpy()
    wt = w[hit].numpy()[:, :, None]
    tri = faces[fid]
    points = (np.asarray(vertices, np.float64)[tri] * wt).sum(1)
    normal = ((np.asarray(normals, np.float64) @ rotation.T)[tri] * wt).sum(1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    normal[normal[:, 2] < 0] *= -1          # two-sided: the side facing the camera
    base = np.clip(np.asarray(colour(points), np.float64), 0, 1)
    diffuse = (0.32 + 0.1 * normal[:, 1] + 0.7 * np.clip(normal @ KEY, 0, None)
               + 0.25 * np.clip(normal @ FILL, 0, None))
    half = KEY + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half)
    spec = specular * np.clip(normal @ half, 0, None) ** shininess
    tint = (1 - metallic) + metallic * base
    shaded = base * diffuse[:, None] * (1 - 0.6 * metallic) + spec[:, None] * tint
    rgb = np.zeros((n * n, 3))
    rgb[hit.numpy()] = np.clip(shaded, 0, 1)
    alpha = np.zeros(n * n)
    alpha[hit.numpy()] = 1.0
    # box filter over the supersamples: premultiplied colour, then back to straight alpha
    rgb = rgb.reshape(size, supersample, size, supersample, 3).mean((1, 3))
    alpha = alpha.reshape(size, supersample, size, supersample).mean((1, 3))
    straight = np.where(alpha[..., None] > 0, rgb / np.maximum(alpha[..., None], 1e-12), 0.0)
    out = np.concatenate([straight, alpha[..., None]], -1)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
