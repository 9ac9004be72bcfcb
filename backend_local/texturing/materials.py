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
import torch
import torch.nn.functional as F


def _gaussian_kernel(sigma, device):
    """OpenCV's kernel for float images with ksize (0, 0): radius 4 sigma, normalised."""
    radius = max(1, int(round(sigma * 4)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum(), radius


def _blur(x, sigma):
    """Gaussian blur of an (H, W) float32 tensor with replicated borders. On the CPU through OpenCV
    (several times faster than a torch convolution on a small CPU); on a GPU as two 1-D convolutions,
    so the maps never leave the device."""
    if x.device.type == "cpu":
        blurred = cv2.GaussianBlur(x.contiguous().numpy(), (0, 0), sigmaX=float(sigma),
                                   borderType=cv2.BORDER_REPLICATE)
        return torch.from_numpy(blurred)
    return _blur_conv(x, sigma)


def _blur_conv(x, sigma):
    kernel, radius = _gaussian_kernel(float(sigma), x.device)
    image = F.pad(x[None, None], (radius, radius, radius, radius), mode="replicate")
    image = F.conv2d(image, kernel.view(1, 1, 1, -1))
    image = F.conv2d(image, kernel.view(1, 1, -1, 1))
    return image[0, 0]


def _masked_blur(x, mask, sigma):
    """Blur that ignores pixels outside the mask (no background bleeding into the object)."""
    return _blur(x * mask, sigma) / _blur(mask, sigma).clamp(min=1e-4)


def estimate(rgb, mask):
    """rgb: (3, H, W) float tensor in [0, 1]; mask: (H, W) float tensor in [0, 1].

    Returns dict of (H, W) float32 tensors on the input's device: roughness, metallic in [0, 1]; and
    bump_dx, bump_dy, the height gradient per pixel (x right, y down) in units of image height per pixel.
    """
    rgb = rgb.detach().to(torch.float32)
    size = rgb.shape[-1]
    scale = size / 512.0
    m = (mask.detach() > 0.5).to(torch.float32)
    value = rgb.amax(dim=0)
    low = rgb.amin(dim=0)
    saturation = (value - low) / value.clamp(min=1e-3)
    luminance = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]

    local_value = _masked_blur(value, m, 6 * scale)
    local_saturation = _masked_blur(saturation, m, 6 * scale)
    # Highlight: clearly brighter than surroundings and whiter than the local colour.
    highlight = ((value - local_value - 0.06) / 0.2).clamp(0, 1) * \
        ((local_saturation - saturation + 0.05) / 0.25).clamp(0, 1)
    highlight = highlight * m
    area = max(float(m.sum()), 1.0)
    gloss = min(max(float((highlight > 0.2).sum()) / area * 40.0, 0.0), 1.0)

    # Texture energy: local standard deviation of luminance at a fine scale.
    detail = luminance - _masked_blur(luminance, m, 2 * scale)
    energy = torch.sqrt(_masked_blur(detail ** 2, m, 3 * scale).clamp(min=0))
    rough_detail = (energy / 0.06).clamp(0, 1)

    base = 0.72 - 0.32 * gloss
    roughness = base + 0.2 * rough_detail - 0.35 * _masked_blur(highlight, m, 3 * scale)
    roughness = _masked_blur(roughness, m, 2 * scale).clamp(0.08, 0.95)

    coarse = luminance - _masked_blur(luminance, m, 8 * scale)
    contrast = torch.sqrt(_masked_blur(coarse ** 2, m, 8 * scale).clamp(min=0))
    grey_object = (1.0 - _masked_blur(saturation, m, 8 * scale) / 0.25).clamp(0, 1)
    metallic = ((contrast - 0.08) / 0.12).clamp(0, 1) * grey_object * (0.5 + 0.5 * gloss)
    metallic = _masked_blur(metallic, m, 4 * scale).clamp(0, 1)

    height = _masked_blur(detail, m, 0.75 * scale) * m
    bump_dx = torch.zeros_like(height)
    bump_dy = torch.zeros_like(height)
    bump_dx[:, 1:-1] = (height[:, 2:] - height[:, :-2]) / 2
    bump_dy[1:-1, :] = (height[2:, :] - height[:-2, :]) / 2
    return {"roughness": roughness.contiguous(), "metallic": metallic.contiguous(),
            "bump_dx": bump_dx, "bump_dy": bump_dy}
