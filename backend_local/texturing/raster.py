"""Triangle rasterization for baking: OpenCV fills the triangles (C++, ~60 ms for 40k triangles at 1024^2),
torch computes barycentric coordinates of the covered pixel centres on the job's device.

cv2.fillPoly covers every pixel the triangle touches (slightly conservative), which is what baking
wants: texels on chart borders get a value, so bilinear filtering never reads an empty texel.
"""

import cv2
import numpy as np
import torch

_SHIFT = 4  # sub-pixel bits for fillPoly


def face_ids(tri_xy, height, width, depth=None):
    """tri_xy: (F, 3, 2) numpy pixel coordinates (x right, y down, pixel centres at +0.5).

    depth: optional (F,) key; triangles are drawn in increasing depth so the largest (nearest) wins.
    Returns an int32 (H, W) array of face indices, -1 where empty.
    """
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
    ids_t = torch.from_numpy(ids).to(device)
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
