"""Triangle rasterization for baking, and barycentric coordinates of the covered pixel centres.

On the CPU OpenCV fills the triangles (C++, ~60 ms for 40k triangles at 1024^2); cv2.fillPoly covers
every pixel a triangle touches (slightly conservative), which suits baking: texels on chart borders
get a value. On CUDA a torch rasterizer does it in a few milliseconds instead (pixel-centre coverage;
the gutter fill covers the border texels).
"""

import cv2
import numpy as np
import torch

_SHIFT = 4  # sub-pixel bits for fillPoly


def face_ids(tri_xy, height, width, depth=None, device=None):
    """tri_xy: (F, 3, 2) numpy pixel coordinates (x right, y down, pixel centres at +0.5).

    depth: optional (F,) key; where triangles overlap, the largest (nearest) wins.
    Returns (H, W) face indices, -1 where empty: an int32 array, or a tensor on CUDA devices.
    """
    if device is not None and torch.device(device).type == "cuda":
        return _face_ids_torch(tri_xy, height, width, depth, torch.device(device))
    ids = np.full((height, width), -1, np.int32)
    points = np.round((np.asarray(tri_xy, np.float64) - 0.5) * (1 << _SHIFT)).astype(np.int32)
    order = np.argsort(depth, kind="stable") if depth is not None else range(len(points))
    for index in order:
        cv2.fillPoly(ids, [points[index]], int(index), lineType=cv2.LINE_8, shift=_SHIFT)
    return ids


def barycentric(ids, tri_xy, device):
    """Barycentric coordinates of each covered pixel centre in its face (clamped into the triangle,
    since conservative coverage puts some centres just outside). Returns (pixels (N,) long flat index,
    faces (N,) long, weights (N, 3) float32) as torch tensors on `device`."""
    ids_t = ids.to(device) if torch.is_tensor(ids) else torch.from_numpy(ids).to(device)
    flat = torch.nonzero(ids_t.reshape(-1) >= 0).flatten()
    faces = ids_t.reshape(-1)[flat].long()
    width = ids.shape[1]
    px = (flat % width).to(torch.float32) + 0.5
    py = (flat // width).to(torch.float32) + 0.5
    tri = torch.as_tensor(np.asarray(tri_xy, np.float32), device=device)[faces]
    x0, y0, x1, y1, x2, y2 = (tri[:, 0, 0], tri[:, 0, 1], tri[:, 1, 0], tri[:, 1, 1], tri[:, 2, 0], tri[:, 2, 1])
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    area = torch.where(area.abs() < 1e-12, torch.full_like(area, 1e-12), area)
    w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area
    w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area
    weights = torch.stack([w0, w1, 1.0 - w0 - w1], dim=1).clamp(min=0.0)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)
    return flat, faces, weights


def _face_ids_torch(tri_xy, height, width, depth, device):
    """GPU rasterizer: triangles grouped by bounding-box size (powers of two), each group one dense test
    of K x K candidate pixel centres per triangle, so the work stays near the covered area."""
    tri = torch.as_tensor(np.asarray(tri_xy, np.float32), device=device)
    key = (torch.as_tensor(np.asarray(depth, np.float32), device=device) if depth is not None
           else torch.arange(len(tri), device=device, dtype=torch.float32))
    low = torch.floor(tri.min(dim=1).values - 0.5).clamp(min=0)
    high = torch.ceil(tri.max(dim=1).values - 0.5)
    high[:, 0].clamp_(max=width - 1)
    high[:, 1].clamp_(max=height - 1)
    extent = (high - low + 1).max(dim=1).values
    valid = (high[:, 0] >= low[:, 0]) & (high[:, 1] >= low[:, 1])
    best = torch.full((height * width,), -float("inf"), device=device)
    found = []
    size = 1
    while bool((valid & (extent > size // 2)).any()):
        ids = torch.nonzero(valid & (extent <= size) & (extent > size // 2)).flatten()
        step = max(1, (1 << 24) // (size * size))       # candidates per batch, bounds memory
        for start in range(0, len(ids), step):
            hit = _covered(ids[start:start + step], size, tri, low, height, width)
            if hit is not None:
                pixel, face = hit
                best.scatter_reduce_(0, pixel, key[face], reduce="amax")
                found.append((pixel, face))
        size *= 2
    # Ties in depth (faces meeting at the nearest vertex) go to the highest face index, through a second
    # reduction rather than plain writes, whose order on CUDA would vary from run to run.
    out = torch.full((height * width,), -1, dtype=torch.long, device=device)
    for pixel, face in found:
        win = key[face] >= best[pixel]
        out.scatter_reduce_(0, pixel[win], face[win], reduce="amax")
    return out.to(torch.int32).view(height, width)


def _covered(ids, size, tri, low, height, width):
    offsets = torch.arange(size, device=tri.device, dtype=torch.float32)
    oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
    px = low[ids, 0:1] + ox.reshape(1, -1)
    py = low[ids, 1:2] + oy.reshape(1, -1)
    cx, cy = px + 0.5, py + 0.5
    t = tri[ids]
    x0, y0, x1, y1, x2, y2 = (t[:, 0, 0:1], t[:, 0, 1:2], t[:, 1, 0:1], t[:, 1, 1:2], t[:, 2, 0:1], t[:, 2, 1:2])
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    sign = torch.where(area < 0, -1.0, 1.0)
    e0 = ((x1 - cx) * (y2 - cy) - (x2 - cx) * (y1 - cy)) * sign
    e1 = ((x2 - cx) * (y0 - cy) - (x0 - cx) * (y2 - cy)) * sign
    e2 = ((x0 - cx) * (y1 - cy) - (x1 - cx) * (y0 - cy)) * sign
    inside = (e0 >= 0) & (e1 >= 0) & (e2 >= 0) & (area.abs() > 1e-12) & (px < width) & (py < height)
    if not bool(inside.any()):
        return None
    rows, _ = torch.nonzero(inside, as_tuple=True)
    pixel = (py[inside] * width + px[inside]).long()
    return pixel, ids[rows]
