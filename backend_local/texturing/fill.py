"""Gutter filling so nothing bleeds at seams or mip levels: the texels around each chart first take
the colour of the chart's nearest edge texel (up to DILATE_RINGS texels out), then push-pull
inpainting fills the rest of the atlas smoothly.

This runs in OpenCV on the CPU whatever the job's device: its distance transform and resampling are
several times faster than torch on a small CPU, and on a GPU machine the copy of a finished atlas
costs a few milliseconds. The far gutters only need a smooth colour, so the push-pull runs at a
quarter of the resolution.
"""

import cv2
import numpy as np
import torch

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


def push_pull(values, known):
    """Torch front end of fill_gutters: values (C, H, W) tensor, known (H, W) bool tensor; the result
    comes back on the same device."""
    array = values.detach().permute(1, 2, 0).cpu().numpy()
    filled = fill_gutters(array, known.cpu().numpy())
    return torch.from_numpy(np.ascontiguousarray(filled.transpose(2, 0, 1))).to(values.device)
