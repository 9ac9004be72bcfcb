"""Inference with the learned shape model: framing, prediction, surface, and the way back to the engine's frame.

Frames, as in `model.py` and `shape.py`:
* crop frame: the square window of `frame_crop` (the training renders' framing: the alpha's bounding
  box, centred, its larger side times MARGIN), resized to S x S;
* normalised camera frame: x right, y up, z toward the camera, the window spanning [-1, 1] in x and
  y and the grid's depth spanning [-1, 1] in z at the same scale; occupancy cell [d, r, c] has its
  centre at x = (c + 0.5) / G * 2 - 1, y = 1 - (r + 0.5) / G * 2, z = (d + 0.5) / G * 2 - 1;
* pixel frame (the engine's, `shape.py`): x = image column direction, y = image up, z toward the
  camera, unit = one input pixel, origin at the image centre.

`reconstruct(model, rgba)` chains them: image in, closed mesh in the pixel frame out.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import weights
from .model import MASK_ALPHA, ShapeNet

# The window's side over the alpha bounding box's larger side (the training renders' framing).
MARGIN = 1.2
# Inside the input's outline every ray meets the object, but on thin parts (legs, handles, a key's blade)
# the network spreads its belief over several depths and no bin reaches 0.5, so the part would vanish
# from the mesh and the mesh's outline would no longer be the image's. Such a ray's probabilities are
# scaled up until their peak is RAY_PEAK: the bins within 1 / RAY_PEAK (two thirds) of the peak become
# solid, i.e. the network's own most likely depths, as thick as its belief is wide.
RAY_PEAK = 0.75
# A ray is inside the outline when its cell of the crop is at least this covered.
RAY_COVERAGE = 0.5
# The surface is extracted on a finer cubic grid than the network's (SURFACE_GRID cells a side over the
# same window), where the occupancy, interpolated, is cut by the input's own alpha at that resolution: the
# mesh's outline is then the image's to a fraction of a crop pixel, not a 64-cell staircase that loses legs
# and handles a cell or two wide. With v3 on the 19 dev inputs, the mesh's projection against the input's
# mask: IoU 0.961 -> 0.990 (chair 0.861 -> 0.973, hammer 0.910 -> 0.979); 256 cells gives no more (0.990).
SURFACE_GRID = 160
# Rays that the network left empty (peak under 0.5) take their neighbours' depths, this many cells out,
# so the band of the outline that the coarse rays do not cover still has a depth to be cut from.
EXTEND_RAYS = 2
# Marching cubes on the surface grid should give about this many times the faces asked for.
SURFACE_FACE_SHARE = 4.0


@dataclass(frozen=True)
class Framing:
    """Where the crop's window lies in the source image: top-left corner (x0 = column, y0 = row, on pixel
    edges, so pixel (r, c) covers [c, c + 1) x [r, r + 1)), side in source pixels, and the source's (H, W)."""

    x0: int
    y0: int
    side: int
    image_shape: tuple


@dataclass(frozen=True)
class Prediction:
    probabilities: torch.Tensor  # (G, G, G) [depth, row, col], on the model's device
    elevation_rad: float
    confidence: float  # the IoU the model expects of its own occupancy


def _unit_rgba(rgba: np.ndarray) -> np.ndarray:
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError("expected an (H, W, 4) RGBA image, got shape %s" % (rgba.shape,))
    if rgba.dtype == np.uint8:
        return rgba.astype(np.float32) / 255.0
    return np.clip(rgba.astype(np.float32), 0.0, 1.0)


def frame_crop(rgba: np.ndarray, size: int, margin: float = MARGIN) -> tuple[np.ndarray, Framing]:
    """The object's square crop (size, size, 4) float32 in [0, 1] (straight colour, 0 where alpha is 0) and its window.

    The window is centred on the bounding box of alpha >= 0.5 with side ceil(margin * larger side),
    rounded to whole source pixels (so the mapping back is exact); parts outside the image are
    transparent. Resampling averages premultiplied colour (antialiased when shrinking), so the
    background does not bleed into the edge colours."""
    image = _unit_rgba(rgba)
    h, w = image.shape[:2]
    rows = np.flatnonzero((image[..., 3] >= MASK_ALPHA).any(1))
    cols = np.flatnonzero((image[..., 3] >= MASK_ALPHA).any(0))
    if rows.size == 0:
        raise ValueError("no foreground (alpha >= %.1f) to frame" % MASK_ALPHA)
    side = max(1, int(math.ceil(margin * max(rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]) - 1e-9)))
    x0 = int(round((cols[0] + cols[-1] + 1) / 2.0 - side / 2.0))
    y0 = int(round((rows[0] + rows[-1] + 1) / 2.0 - side / 2.0))

    window = np.zeros((side, side, 4), np.float32)
    sr0, sr1 = max(0, y0), min(h, y0 + side)
    sc0, sc1 = max(0, x0), min(w, x0 + side)
    window[sr0 - y0:sr1 - y0, sc0 - x0:sc1 - x0] = image[sr0:sr1, sc0:sc1]
    t = resample_straight(torch.from_numpy(window).permute(2, 0, 1)[None], size)
    crop = t[0].permute(1, 2, 0).numpy()
    return np.ascontiguousarray(crop), Framing(x0, y0, side, (h, w))


def resample_straight(rgba: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """(B, 4, H, W) straight-colour RGBA in [0, 1] -> (B, 4, size, size), averaging premultiplied colour so
    the background does not bleed into the edge colours. "bilinear" antialiases when shrinking; "area" is
    a plain box average (an exact 2x2 mean for a halving)."""
    t = torch.cat([rgba[:, :3] * rgba[:, 3:], rgba[:, 3:]], 1)
    if t.shape[-2:] != (size, size):
        if mode == "area":
            t = F.interpolate(t, size=(size, size), mode="area")
        else:
            t = F.interpolate(t, size=(size, size), mode=mode, align_corners=False, antialias=t.shape[-1] > size)
    t = t.clamp(0.0, 1.0)
    alpha = t[:, 3:]
    rgb = torch.where(alpha > 0, t[:, :3] / alpha.clamp(min=1e-6), torch.zeros_like(t[:, :3])).clamp(0.0, 1.0)
    return torch.cat([rgb, alpha], 1)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, device: str) -> ShapeNet:
    return weights.load(path, device)


def load(path: str, device="cpu") -> ShapeNet:
    """The model from a `shape_model.safetensors`, loaded once per process for each (path, device)."""
    return _load_cached(os.path.abspath(path), str(torch.device(device)))


def predict_all(model: ShapeNet, rgba_crop: np.ndarray) -> Prediction:
    """Occupancy probabilities, elevation and confidence for one (S, S, 4) crop (uint8, or float in [0, 1])."""
    s = model.config.image_size
    crop = _unit_rgba(rgba_crop)
    if crop.shape[:2] != (s, s):
        raise ValueError("the model takes %d x %d crops, got %s" % (s, s, crop.shape[:2]))
    crop = np.where(crop[..., 3:] > 0, crop, 0.0).astype(np.float32)  # the training background: 0 everywhere
    device = next(model.parameters()).device
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].to(device)
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x)
        else:
            out = model(x)
        prob = torch.sigmoid(out["occupancy_logits"][0].float())
        return Prediction(prob, float(out["elevation"][0]), float(torch.sigmoid(out["confidence_logit"][0])))


def predict(model: ShapeNet, rgba_crop: np.ndarray) -> tuple[torch.Tensor, float]:
    """(probabilities (G, G, G) [depth, row, col], elevation in radians) for one crop."""
    p = predict_all(model, rgba_crop)
    return p.probabilities, p.elevation_rad


def fill_outline_rays(probabilities: torch.Tensor, crop_alpha) -> torch.Tensor:
    """Probabilities (..., G, G, G) [depth, row, col] with every ray inside the crop's outline reaching at
    least RAY_PEAK (see above); crop_alpha (..., S, S) is the crop's alpha, S a multiple of G."""
    g = probabilities.shape[-1]
    alpha = torch.as_tensor(crop_alpha, device=probabilities.device).float()
    s = alpha.shape[-1]
    coverage = F.avg_pool2d(alpha.reshape(-1, 1, s, s), s // g).reshape(alpha.shape[:-2] + (g, g))
    peak = probabilities.amax(-3)
    scale = torch.where((coverage >= RAY_COVERAGE) & (peak < RAY_PEAK),
                        RAY_PEAK / peak.clamp(min=1e-6), torch.ones_like(peak))
    return (probabilities * scale[..., None, :, :]).clamp(max=1.0)


def extend_rays(probabilities: torch.Tensor, cells: int = EXTEND_RAYS) -> torch.Tensor:
    """(G, G, G) [depth, row, col] with each empty ray (no bin over 0.5) given the bin-wise maximum of its
    non-empty neighbours (3 x 3), `cells` times over; rays the network filled are left as they are."""
    p = probabilities
    for _ in range(cells):
        filled = p.amax(0) > 0.5
        grown = F.max_pool2d((p * filled[None]).unsqueeze(0), 3, stride=1, padding=1)[0]
        p = torch.where(filled[None], p, torch.maximum(p, grown))
    return p


def outline_cut_volume(probabilities: torch.Tensor, window_alpha, size: int = SURFACE_GRID) -> torch.Tensor:
    """(size,)*3 [depth, row, col] occupancy over the same window: the network's probabilities (rays extended,
    trilinearly resampled) capped by the window's alpha (size, size) at this resolution, so the level set's
    outline follows the input's anti-aliased edge."""
    p = extend_rays(probabilities.float())
    fine = F.interpolate(p[None, None], size=(size, size, size), mode="trilinear", align_corners=False)[0, 0]
    alpha = torch.as_tensor(np.asarray(window_alpha, np.float32), device=fine.device)
    if alpha.shape != (size, size):
        raise ValueError("window alpha must be %d x %d, got %s" % (size, size, tuple(alpha.shape)))
    return torch.minimum(fine, alpha[None])


def occupancy_to_mesh(probabilities, level: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Closed, outward-facing triangle mesh of {p > level} in the normalised camera frame (float64, int64).

    The grid is padded with one empty cell on every side so the surface closes at the window's
    edges; marching cubes is skimage's, as in `shape.py`."""
    from skimage import measure

    prob = probabilities.detach().to("cpu", torch.float32).numpy() if torch.is_tensor(probabilities) else np.asarray(probabilities, np.float32)
    g = prob.shape[0]
    if prob.shape != (g, g, g):
        raise ValueError("expected a cubic (G, G, G) grid, got %s" % (prob.shape,))
    if not (prob > level).any():
        raise ValueError("the occupancy grid has no cell above %.2f" % level)
    vol = np.pad(prob, 1)
    # Keep grid nodes off the level: a node on it makes coincident vertices that merge into non-manifold edges.
    eps = np.float32(1e-4)
    vol = np.where(np.abs(vol - level) < eps, level - eps, vol)
    verts, faces = measure.marching_cubes(vol, level)[:2]
    d, r, c = (verts[:, k].astype(np.float64) - 1.0 for k in range(3))
    xyz = np.stack([(c + 0.5) / g * 2 - 1, 1 - (r + 0.5) / g * 2, (d + 0.5) / g * 2 - 1], 1)
    faces = faces.astype(np.int64)
    tri = xyz[faces]
    if np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() < 0:
        faces = faces[:, ::-1].copy()
    return xyz, faces


def to_pixel_frame(vertices: np.ndarray, framing: Framing) -> np.ndarray:
    """Normalised-camera-frame points of a crop -> the engine's pixel frame of the source image."""
    v = np.asarray(vertices, np.float64)
    h, w = framing.image_shape
    half = framing.side / 2.0
    col = framing.x0 + (v[:, 0] + 1) * half
    row = framing.y0 + (1 - v[:, 1]) * half
    return np.stack([col - w / 2.0, h / 2.0 - row, v[:, 2] * half], 1)


def surface_grid_for(coarse_faces: int, grid: int, face_count: int | None, cap: int = SURFACE_GRID) -> int:
    """Cells a side of the surface grid: `cap`, or fewer when the face count asked for is small, so
    marching cubes gives about SURFACE_FACE_SHARE times that many faces (the network's grid at least).
    Decimating ~100 times down (a 227k-face cylinder to 2,000) stalls at several times the target."""
    if face_count is None:
        return cap
    wanted = grid * math.sqrt(SURFACE_FACE_SHARE * face_count / max(coarse_faces, 1))
    return int(min(cap, max(grid, math.ceil(wanted))))


def reconstruct(model: ShapeNet, rgba: np.ndarray, level: float = 0.5, surface_grid: int | None = SURFACE_GRID,
                face_count: int | None = None):
    """Image (H, W, 4) -> (vertices in the pixel frame, faces, elevation_rad, confidence).
    The surface is cut by the image's outline on a `surface_grid` grid, made coarser for a small `face_count`
    (`surface_grid_for`); `surface_grid` None: marching cubes on the network's own grid, without the cut."""
    crop, framing = frame_crop(rgba, model.config.image_size)
    p = predict_all(model, crop)
    filled = fill_outline_rays(p.probabilities, crop[..., 3])
    vertices, faces = occupancy_to_mesh(filled, level)
    size = surface_grid_for(len(faces), model.config.grid, face_count, surface_grid) if surface_grid else 0
    if size > model.config.grid:
        fine_alpha = frame_crop(rgba, size)[0][..., 3]   # same window (it depends on the alpha only)
        vertices, faces = occupancy_to_mesh(outline_cut_volume(filled, fine_alpha, size), level)
    return to_pixel_frame(vertices, framing), faces, p.elevation_rad, p.confidence
