"""Ambient occlusion baked from the geometry.

The closed mesh is voxelized by ray parity (a ray along z through each column crosses the surface an
even number of times; a cell is inside when an odd number of crossings lie beyond it), then every
surface point marches a fixed set of cosine-weighted hemisphere directions through that occupancy
grid. Works for any engine's closed mesh, on CPU or CUDA.
"""

import math

import torch
import torch.nn.functional as F

GRID = 80
DIRECTIONS = 16
STEPS = (1.5, 3.0, 5.0, 8.0, 12.0, 18.0)   # in grid cells
EXTENT = 1.1                               # the grid spans [-EXTENT, EXTENT]^3 (meshes fit [-1, 1])


def occupancy(vertices, faces, device, res=GRID):
    """(res, res, res) float occupancy indexed [z, y, x] over [-EXTENT, EXTENT]^3."""
    v = torch.as_tensor(vertices, dtype=torch.float64, device=device)
    f = torch.as_tensor(faces, dtype=torch.long, device=device)
    cell = 2 * EXTENT / res
    # Column centres, nudged off the lattice so rays never pass exactly through vertices or edges.
    grid_xy = (v[:, :2] + EXTENT) / cell - 0.5 - 1e-4 * torch.tensor([math.sqrt(2), math.sqrt(3)], device=device,
                                                                        dtype=torch.float64)
    tri = grid_xy[f]                                   # (F, 3, 2) in column units
    tri_z = v[f, 2]
    low = torch.ceil(tri.min(dim=1).values).clamp(0, res - 1).long()
    high = torch.floor(tri.max(dim=1).values).clamp(0, res - 1).long()
    extent = (high - low + 1).clamp(min=0).max(dim=1).values
    counts = torch.zeros(res * res * res, device=device, dtype=torch.float32)
    size = 1
    while True:
        ids = torch.nonzero((extent > 0) & (extent <= size) & (extent > size // 2)).flatten()
        if len(ids):
            _count_crossings(ids, size, tri, tri_z, low, counts, res, cell)
        if not (extent > size).any():
            break
        size *= 2
    counts = counts.view(res, res, res)                 # [z, y, x]
    beyond = torch.flip(torch.cumsum(torch.flip(counts, [0]), 0), [0]) - counts
    return (torch.remainder(beyond, 2) > 0.5).to(torch.float32)


def _count_crossings(ids, size, tri, tri_z, low, counts, res, cell):
    device = tri.device
    offsets = torch.arange(size, device=device)
    oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
    cx = (low[ids, 0, None] + ox.reshape(1, -1)).to(torch.float64)
    cy = (low[ids, 1, None] + oy.reshape(1, -1)).to(torch.float64)
    t = tri[ids]
    x0, y0, x1, y1, x2, y2 = (t[:, 0, 0:1], t[:, 0, 1:2], t[:, 1, 0:1], t[:, 1, 1:2], t[:, 2, 0:1], t[:, 2, 1:2])
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    ok = area.abs() > 1e-12
    area = torch.where(ok, area, torch.ones_like(area))
    w0 = ((x1 - cx) * (y2 - cy) - (x2 - cx) * (y1 - cy)) / area
    w1 = ((x2 - cx) * (y0 - cy) - (x0 - cx) * (y2 - cy)) / area
    w2 = 1 - w0 - w1
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & ok & (cx < res) & (cy < res)
    if not inside.any():
        return
    z = w0 * tri_z[ids, 0:1] + w1 * tri_z[ids, 1:2] + w2 * tri_z[ids, 2:3]
    zi = ((z + EXTENT) / cell - 0.5).round().clamp(0, res - 1).long()
    index = (zi * res + cy.long()) * res + cx.long()
    counts.index_add_(0, index[inside], torch.ones_like(z[inside], dtype=torch.float32))


def _hemisphere(count, device):
    """Cosine-weighted directions around +Z (Fibonacci spiral on the disc, lifted)."""
    i = torch.arange(count, device=device, dtype=torch.float32) + 0.5
    r = torch.sqrt(i / count)
    phi = i * math.pi * (3 - math.sqrt(5))
    x, y = r * torch.cos(phi), r * torch.sin(phi)
    return torch.stack([x, y, torch.sqrt((1 - r * r).clamp(min=0))], dim=1)


def bake(points, normals, grid, strength=0.85):
    """AO in [0, 1] (1 = open) for (N, 3) surface points with unit normals, chunked for memory."""
    device = points.device
    res = grid.shape[0]
    cell = 2 * EXTENT / res
    local = _hemisphere(DIRECTIONS, device)
    volume = grid[None, None]
    out = torch.empty(len(points), device=device)
    for start in range(0, len(points), 65536):
        p, n = points[start:start + 65536], normals[start:start + 65536]
        helper = torch.where(n[:, 2:3].abs() < 0.9, torch.tensor([0.0, 0.0, 1.0], device=device),
                             torch.tensor([1.0, 0.0, 0.0], device=device))
        t = F.normalize(torch.cross(helper.expand_as(n), n, dim=1), dim=1)
        b = torch.cross(n, t, dim=1)
        dirs = local[None, :, 0:1] * t[:, None] + local[None, :, 1:2] * b[:, None] + local[None, :, 2:3] * n[:, None]
        occluded = torch.zeros(len(p), DIRECTIONS, device=device)
        base = p + n * cell
        for step in STEPS:
            q = base[:, None] + dirs * (step * cell)
            sample = F.grid_sample(volume, (q / EXTENT).view(1, 1, 1, -1, 3), mode="bilinear",
                                   padding_mode="zeros", align_corners=False).view(len(p), DIRECTIONS)
            occluded = torch.maximum(occluded, sample)
        out[start:start + len(p)] = 1.0 - strength * occluded.mean(dim=1)
    return out.clamp(0, 1)
