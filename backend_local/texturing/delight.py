"""Remove the input's baked-in lighting from the albedo.

A photo or render shows albedo x shading. Blender lights the object again, so a texture that keeps
the input's shading looks doubly shaded (dark undersides, a painted-on highlight direction). Smooth
lighting is well described by second-order spherical harmonics of the surface normal (Ramamoorthi &
Hanrahan), so we fit luminance = SH(normal) . c over the object's visible pixels, robustly (albedo
edges and highlights are outliers), and divide the fitted shading out. When the fit explains little
of the image (strong albedo texture, unusual light), the correction fades out instead of inventing one.
"""

import math

import torch
import torch.nn.functional as F

MAX_GAIN = 2.0          # never brighten or darken a pixel by more than this factor
MIN_EXPLAINED = 0.1     # R^2 below which no correction is applied
FULL_EXPLAINED = 0.5    # R^2 from which the full correction is applied
# The fitted shading is low-passed over the object (Gaussian, sigma this share of the image side) before
# it is divided out. Lighting varies smoothly over a surface, but the normals it is fitted from are the
# reconstruction's, and a reconstructed surface ripples at the grid's scale (a marching-cubes lid seen
# at a grazing angle): divided out unfiltered, each ripple's shading is printed into the albedo as a
# band of the opposite brightness.
SHADING_BLUR = 1.0 / 128


def _sh_basis(normals):
    x, y, z = normals.unbind(dim=1)
    return torch.stack([torch.ones_like(x), y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], dim=1)


def _smoothed(image, valid, sigma):
    """Gaussian low-pass of an (H, W) image over the `valid` pixels only (normalised convolution, so the
    outside is not pulled in at the outline); unchanged outside them."""
    if sigma < 0.5:
        return image
    radius = int(math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    weight = valid.to(image.dtype)
    stack = torch.stack([image * weight, weight])[:, None]
    stack = F.conv2d(F.pad(stack, (radius, radius, 0, 0)), kernel.view(1, 1, 1, -1))
    stack = F.conv2d(F.pad(stack, (0, 0, radius, radius)), kernel.view(1, 1, -1, 1))
    blurred = stack[:, 0]
    return torch.where(valid, blurred[0] / blurred[1].clamp(min=1e-6), image)


def shading_gain(rgb, normals, valid, iterations=4):
    """rgb (3, H, W) in [0, 1]; normals (3, H, W) unit view-space normals; valid (H, W) bool.

    Returns (gain (H, W) to multiply the image by, explained R^2)."""
    luminance = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    target = luminance[valid].to(torch.float64)
    if target.numel() < 100:
        return torch.ones_like(luminance), 0.0
    basis = _sh_basis(normals.permute(1, 2, 0)[valid].to(torch.float64))
    weights = torch.ones_like(target)
    for _ in range(iterations):       # iteratively reweighted least squares with a Huber weight
        sqrt_w = weights.sqrt()[:, None]
        coef = torch.linalg.lstsq(basis * sqrt_w, target[:, None] * sqrt_w).solution[:, 0]
        residual = target - basis @ coef
        scale = 1.4826 * residual.abs().median() + 1e-6
        weights = torch.clamp(1.345 * scale / residual.abs().clamp(min=1e-12), max=1.0)
    fitted = basis @ coef
    variance = ((target - target.mean()) ** 2 * weights).sum()
    explained = float(1 - ((target - fitted) ** 2 * weights).sum() / variance.clamp(min=1e-12))
    strength = min(max((explained - MIN_EXPLAINED) / (FULL_EXPLAINED - MIN_EXPLAINED), 0.0), 1.0)

    shading = torch.ones_like(luminance, dtype=torch.float64)
    shading[valid] = fitted.clamp(min=1e-3)
    shading = _smoothed(shading, valid, SHADING_BLUR * max(shading.shape))
    reference = fitted.median().clamp(min=1e-3)
    gain = (reference / shading).clamp(1 / MAX_GAIN, MAX_GAIN) ** strength
    gain[~valid] = 1.0
    return gain.to(rgb.dtype), explained
