"""Gutter filling so nothing bleeds at seams or mip levels: the texels around each chart first take
the colour of the chart's nearest edge texel (up to DILATE_RINGS texels out), then push-pull
inpainting fills the rest of the atlas smoothly.

On the CPU this runs in OpenCV (its distance transform and resampling are several times faster than
torch on a small CPU); on a GPU the same steps run in torch (a jump-flood nearest-texel search and
area/bilinear resampling), so an atlas never leaves the device until it is 8-bit. The far gutters only
need a smooth colour, so the push-pull runs at a quarter of the resolution.
"""

import cv2
import numpy as np
import torch
import torch.nn.functional as F

DILATE_RINGS = 8
COARSE = 4           # push-pull resolution divisor


def dilate(values, known, rings=DILATE_RINGS):
    """values (H, W, C) float32; known (H, W) bool. Every unknown texel within `rings` texels of a known
    one takes its nearest known texel's value (one distance transform with labels, not ring by ring).
    Returns (values, newly known mask)."""
    distance, labels = cv2.distanceTransformWithLabels((~known).astype(np.uint8), cv2.DIST_L2, 5,
                                                       labelType=cv2.DIST_LABEL_PIXEL)
    sources = np.flatnonzero(known)                      # label k is the k-th known texel in raster order
    grow = (~known) & (distance <= rings)
    out = values.copy()
    flat = out.reshape(-1, values.shape[2])
    flat[np.flatnonzero(grow)] = flat[sources[labels[grow] - 1]]
    return out, known | grow


def _pyramid_fill(values, weight):
    levels = []
    colour, w = values * weight[..., None], weight
    while min(colour.shape[:2]) > 1:
        levels.append((colour, w))
        size = ((colour.shape[1] + 1) // 2, (colour.shape[0] + 1) // 2)
        colour = cv2.resize(colour, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        w = cv2.resize(w, size, interpolation=cv2.INTER_AREA)
    filled = colour / np.maximum(w, 1e-8)[..., None]
    for colour, w in reversed(levels):
        size = (colour.shape[1], colour.shape[0])
        up = cv2.resize(filled, size, interpolation=cv2.INTER_LINEAR).reshape(colour.shape)
        own = colour / np.maximum(w, 1e-8)[..., None]
        mix = np.minimum(w, 1.0)[..., None]
        filled = own * mix + up * (1.0 - mix)
    return filled


def fill_gutters(values, known):
    """values: (H, W, C) float32 array; known: (H, W) bool. Returns a new array with every unknown texel
    filled: near a chart from its nearest edge texel, far away from a smooth push-pull blend."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if not known.any():
        return values
    grown, grown_known = dilate(values, known)
    height, width = known.shape
    small = (max(1, width // COARSE), max(1, height // COARSE))
    weight = grown_known.astype(np.float32)
    coarse_colour = cv2.resize(grown * weight[..., None], small, interpolation=cv2.INTER_AREA)
    coarse_weight = cv2.resize(weight, small, interpolation=cv2.INTER_AREA)
    coarse_colour = coarse_colour.reshape(small[1], small[0], -1) / np.maximum(coarse_weight, 1e-8)[..., None]
    coarse = _pyramid_fill(coarse_colour, coarse_weight)
    far = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR).reshape(grown.shape)
    return np.where(grown_known[..., None], grown, far)


def fill_texture(values, known):
    """fill_gutters for tensors: values (H, W, C) float32, known (H, W) bool, on any device; the result
    is on the same device (OpenCV on the CPU, torch elsewhere)."""
    values = values.detach().to(torch.float32)
    if values.device.type == "cpu":
        return torch.from_numpy(fill_gutters(values.numpy(), known.numpy()))
    return _fill_gutters_torch(values.permute(2, 0, 1), known).permute(1, 2, 0)


def push_pull(values, known):
    """fill_texture for channel-first tensors: values (C, H, W), known (H, W) bool."""
    return fill_texture(values.permute(1, 2, 0), known).permute(2, 0, 1).contiguous()


def _shifted(index, dy, dx):
    """index (H, W) moved so out[y, x] = index[y + dy, x + dx], -1 where that falls outside."""
    height, width = index.shape
    pad = max(abs(dy), abs(dx))
    padded = F.pad(index, (pad, pad, pad, pad), value=-1)
    return padded[pad + dy:pad + dy + height, pad + dx:pad + dx + width]


def _nearest_known(known, rings):
    """Jump flooding: for every texel the flat index of a nearest known texel (exact for almost all
    texels within `rings`), and the squared distance to it (inf where none was found)."""
    height, width = known.shape
    device = known.device
    flat = torch.arange(height * width, device=device).view(height, width)
    best = torch.where(known, flat, torch.full_like(flat, -1))
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None]
    xs = torch.arange(width, device=device, dtype=torch.float32)[None, :]

    def distance2(index):
        found = index >= 0
        dy = torch.div(index, width, rounding_mode="floor").to(torch.float32) - ys
        dx = torch.remainder(index, width).to(torch.float32) - xs
        return torch.where(found, dy * dy + dx * dx, torch.full_like(dy, float("inf")))

    best_d2 = distance2(best)
    steps = [1 << k for k in reversed(range(int(rings).bit_length()))]     # e.g. 8, 4, 2, 1
    for step in steps + [1]:        # the extra 1-step pass (JFA+1) fixes most of jump flooding's misses
        for dy in (-step, 0, step):
            for dx in (-step, 0, step):
                if dy == 0 and dx == 0:
                    continue
                candidate = _shifted(best, dy, dx)
                d2 = distance2(candidate)
                better = d2 < best_d2
                best = torch.where(better, candidate, best)
                best_d2 = torch.where(better, d2, best_d2)
    return best, best_d2


def _area_resize(x, size):
    return F.interpolate(x[None], size=size, mode="area")[0]


def _linear_resize(x, size):
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def _pyramid_fill_torch(values, weight):
    levels = []
    colour, w = values * weight[None], weight[None]
    while min(colour.shape[-2:]) > 1:
        levels.append((colour, w))
        size = ((colour.shape[-2] + 1) // 2, (colour.shape[-1] + 1) // 2)
        colour, w = _area_resize(colour, size), _area_resize(w, size)
    filled = colour / w.clamp(min=1e-8)
    for colour, w in reversed(levels):
        up = _linear_resize(filled, colour.shape[-2:])
        mix = w.clamp(max=1.0)
        filled = colour / w.clamp(min=1e-8) * mix + up * (1.0 - mix)
    return filled


def _fill_gutters_torch(values, known):
    """values (C, H, W), known (H, W) bool: the torch twin of fill_gutters."""
    if not bool(known.any()):
        return values
    channels, height, width = values.shape
    nearest, d2 = _nearest_known(known, DILATE_RINGS)
    grown_known = known | (d2 <= DILATE_RINGS ** 2)
    source = torch.where(grown_known, nearest, torch.zeros_like(nearest)).reshape(-1)
    grown = values.reshape(channels, -1)[:, source].view(channels, height, width)
    weight = grown_known.to(torch.float32)
    small = (max(1, height // COARSE), max(1, width // COARSE))
    coarse_weight = _area_resize(weight[None], small)[0]
    coarse_colour = _area_resize(grown * weight[None], small) / coarse_weight.clamp(min=1e-8)[None]
    far = _linear_resize(_pyramid_fill_torch(coarse_colour, coarse_weight), (height, width))
    return torch.where(grown_known[None], grown, far)
