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

import cv2
import numpy as np
import torch


def _blur(x, sigma):
    """Gaussian blur of an (H, W) float32 array (OpenCV: several times faster than a torch convolution on
    a small CPU, and these maps are image-sized, computed once per job)."""
    return cv2.GaussianBlur(x, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REPLICATE)


def _masked_blur(x, mask, sigma):
    """Blur that ignores pixels outside the mask (no background bleeding into the object)."""
    return _blur(x * mask, sigma) / np.maximum(_blur(mask, sigma), 1e-4)


def estimate(rgb, mask):
    """rgb: (3, H, W) float tensor in [0, 1]; mask: (H, W) float tensor in [0, 1].

    Returns dict of (H, W) tensors on the input's device: roughness, metallic in [0, 1]; and bump_dx,
    bump_dy, the height gradient per pixel (x right, y down) in units of image height per pixel.
    """
    device = rgb.device
    rgb_np = rgb.detach().cpu().numpy().astype(np.float32)
    size = rgb_np.shape[-1]
    scale = size / 512.0
    m = (mask.detach().cpu().numpy() > 0.5).astype(np.float32)
    value = rgb_np.max(axis=0)
    low = rgb_np.min(axis=0)
    saturation = (value - low) / np.maximum(value, 1e-3)
    luminance = 0.2126 * rgb_np[0] + 0.7152 * rgb_np[1] + 0.0722 * rgb_np[2]

    local_value = _masked_blur(value, m, 6 * scale)
    local_saturation = _masked_blur(saturation, m, 6 * scale)
    # Highlight: clearly brighter than surroundings and whiter than the local colour.
    highlight = np.clip((value - local_value - 0.06) / 0.2, 0, 1) * \
        np.clip((local_saturation - saturation + 0.05) / 0.25, 0, 1)
    highlight = highlight * m
    area = max(float(m.sum()), 1.0)
    gloss = float(np.clip((highlight > 0.2).sum() / area * 40.0, 0, 1))

    # Texture energy: local standard deviation of luminance at a fine scale.
    detail = luminance - _masked_blur(luminance, m, 2 * scale)
    energy = np.sqrt(_masked_blur(detail ** 2, m, 3 * scale))
    rough_detail = np.clip(energy / 0.06, 0, 1)

    base = 0.72 - 0.32 * gloss
    roughness = base + 0.2 * rough_detail - 0.35 * _masked_blur(highlight, m, 3 * scale)
    roughness = np.clip(_masked_blur(roughness.astype(np.float32), m, 2 * scale), 0.08, 0.95)

    coarse = luminance - _masked_blur(luminance, m, 8 * scale)
    contrast = np.sqrt(_masked_blur(coarse ** 2, m, 8 * scale))
    grey_object = np.clip(1.0 - _masked_blur(saturation, m, 8 * scale) / 0.25, 0, 1)
    metallic = np.clip((contrast - 0.08) / 0.12, 0, 1) * grey_object * (0.5 + 0.5 * gloss)
    metallic = np.clip(_masked_blur(metallic.astype(np.float32), m, 4 * scale), 0, 1)

    height = _masked_blur(detail.astype(np.float32), m, 0.75 * scale) * m
    bump_dx = np.zeros_like(height)
    bump_dy = np.zeros_like(height)
    bump_dx[:, 1:-1] = (height[:, 2:] - height[:, :-2]) / 2
    bump_dy[1:-1, :] = (height[2:, :] - height[:-2, :]) / 2
    maps = {"roughness": roughness, "metallic": metallic, "bump_dx": bump_dx, "bump_dy": bump_dy}
    return {key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).to(device)
            for key, value in maps.items()}
