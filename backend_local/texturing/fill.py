"""Gutter filling: push-pull inpainting of empty texels so nothing bleeds at seams or mip levels."""

import torch
import torch.nn.functional as F


def push_pull(values, known):
    """values: (C, H, W) float tensor; known: (H, W) bool. Returns values with every unknown texel
    filled from a smooth blend of the nearest known ones (known texels unchanged)."""
    weight = known.to(values.dtype)[None]
    levels = []
    color, w = values * weight, weight
    while min(color.shape[-2:]) > 1:
        levels.append((color, w))
        color = F.avg_pool2d(color[None], 2, ceil_mode=True)[0]
        w = F.avg_pool2d(w[None], 2, ceil_mode=True)[0]
    filled = color / w.clamp(min=1e-8)
    for color, w in reversed(levels):
        up = F.interpolate(filled[None], size=color.shape[-2:], mode="bilinear", align_corners=False)[0]
        own = color / w.clamp(min=1e-8)
        mix = w.clamp(max=1.0)
        filled = own * mix + up * (1.0 - mix)
    return torch.where(known[None], values, filled)
