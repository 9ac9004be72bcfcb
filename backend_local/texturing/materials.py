"""Material estimates from the input image, in image space (sampled onto the surface later).

There is no way to measure roughness or metalness from one photo, so these are transparent heuristics
rather than constants: they follow what a texture artist reads from the image.
- Roughness: specular highlights (bright spots, whiter than the colour around them) mean a glossy
  surface; fine high-frequency texture means a rough one. A global gloss level from how much of the
  object shows highlights sets the base, local cues modulate it.
- Metallic: metals show high-contrast, desaturated reflections (dark and bright side by side) and
  tinted highlights; dielectrics keep their colour under shading. Default is non-metal.
- Bump: fine luminance detail (high-pass) becomes a height map whose gradient perturbs normals.
"""

import torch
import torch.nn.functional as F


def _blur(x, sigma):
    """Separable Gaussian blur of (C, H, W)."""
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[0]
    x = F.pad(x[None], (radius, radius, 0, 0), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def _masked_blur(x, mask, sigma):
    """Blur that ignores pixels outside the mask (no background bleeding into the object)."""
    weight = _blur(mask[None].to(x.dtype), sigma)
    return _blur(x * mask, sigma) / weight.clamp(min=1e-4)


def estimate(rgb, mask):
    """rgb: (3, H, W) float in [0, 1]; mask: (H, W) float in [0, 1].

    Returns dict of (H, W) tensors: roughness, metallic in [0, 1]; and bump_dx, bump_dy, the height
    gradient per pixel (x right, y down) in units of image height per pixel.
    """
    size = rgb.shape[-1]
    scale = size / 512.0
    m = (mask > 0.5).to(rgb.dtype)
    value = rgb.max(dim=0).values
    low = rgb.min(dim=0).values
    saturation = (value - low) / value.clamp(min=1e-3)
    luminance = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2])

    local_value = _masked_blur(value[None], m, 6 * scale)[0]
    local_saturation = _masked_blur(saturation[None], m, 6 * scale)[0]
    # Highlight: clearly brighter than surroundings and whiter than the local colour.
    highlight = ((value - local_value - 0.06) / 0.2).clamp(0, 1) * \
        ((local_saturation - saturation + 0.05) / 0.25).clamp(0, 1)
    highlight = highlight * m
    area = m.sum().clamp(min=1.0)
    gloss = ((highlight > 0.2).to(rgb.dtype).sum() / area * 40.0).clamp(0, 1)

    # Texture energy: local standard deviation of luminance at a fine scale.
    detail = luminance - _masked_blur(luminance[None], m, 2 * scale)[0]
    energy = _masked_blur((detail ** 2)[None], m, 3 * scale)[0].sqrt()
    rough_detail = (energy / 0.06).clamp(0, 1)

    base = 0.72 - 0.32 * gloss
    roughness = base + 0.2 * rough_detail - 0.35 * _masked_blur(highlight[None], m, 3 * scale)[0]
    roughness = _masked_blur(roughness[None], m, 2 * scale)[0].clamp(0.08, 0.95)

    contrast = _masked_blur(((luminance - _masked_blur(luminance[None], m, 8 * scale)[0]) ** 2)[None],
                            m, 8 * scale)[0].sqrt()
    grey_object = (1.0 - (_masked_blur(saturation[None], m, 8 * scale)[0] / 0.25)).clamp(0, 1)
    metallic = ((contrast - 0.08) / 0.12).clamp(0, 1) * grey_object * (0.5 + 0.5 * gloss)
    metallic = _masked_blur(metallic[None], m, 4 * scale)[0].clamp(0, 1)

    height = _masked_blur(detail[None], m, 0.75 * scale)[0] * m
    bump_dx = torch.zeros_like(height)
    bump_dy = torch.zeros_like(height)
    bump_dx[:, 1:-1] = (height[:, 2:] - height[:, :-2]) / 2
    bump_dy[1:-1, :] = (height[2:, :] - height[:-2, :]) / 2
    return {"roughness": roughness, "metallic": metallic, "bump_dx": bump_dx, "bump_dy": bump_dy}
