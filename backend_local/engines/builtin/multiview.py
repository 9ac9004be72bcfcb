"""Extra views for the built-in engine: register each view's camera to the front's, carve a visual hull
from all silhouettes, and let the single-view shape fill what no silhouette constrains.

Cameras (DESIGN.md "Coordinates"): every view is orthographic, at the front's elevation e, the camera
circled about the world's vertical axis by the view's azimuth. The shape lives in the front camera's
pixel frame (see shape.py), so a view sees the point p at q = C Ry(-a) C^T p, with C the front's
world -> camera rotation (backend_local/upright.py). Each view was cut out and framed on its own, so
its scale and offset are found here: the vertical extent of its silhouette against the current
shape's (the height of an object does not change as the camera circles it, and at e != 0 the current
shape predicts the change), and its horizontal centre against the current shape's, the side views
first (they fix the depth that the back view's framing needs at e != 0).

The hull is the intersection of the silhouettes' extrusions (a signed distance in each view, so the
field stays distance-like), intersected with the single-view shape: the true object lies inside every
extrusion, so carving only removes what a view rules out (the single-view guess's excess depth, seen
from the side), and the single-view shape keeps deciding what no silhouette constrains (the
cross-section between the views: a round object stays round; the depth, with a back view only).
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from shared.request import VIEW_AZIMUTHS
from ...upright import camera_to_upright

PROBE_CELLS = 72          # grid the views are registered on


def azimuth_rotation(azimuth_deg):
    """Rotation about the world's +Y taking the direction toward a camera at `azimuth_deg` to +Z."""
    a = math.radians(-azimuth_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def view_rotation(azimuth_deg, elevation_deg):
    """Front camera frame -> the camera frame of the view at `azimuth_deg` (same elevation)."""
    to_world = camera_to_upright(elevation_deg)
    return to_world.T @ azimuth_rotation(azimuth_deg) @ to_world


@dataclass
class ViewCamera:
    """One extra view registered to the front: pixel-frame point p -> view pixel (column, row) =
    (cx + scale * q_x, cy - scale * q_y) with q = rotation @ p; q_z grows toward the view's camera."""

    name: str
    rotation: np.ndarray
    scale: float
    cx: float
    cy: float
    image: np.ndarray          # framed RGBA uint8
    sdf: torch.Tensor = None   # (H, W) signed distance to the silhouette in view pixels (> 0 outside)

    def project(self, xyz):
        """(..., 3) torch pixel-frame points -> (..., 2) view pixel coordinates and (...,) depth."""
        rot = torch.as_tensor(self.rotation, dtype=xyz.dtype, device=xyz.device)
        q = xyz @ rot.T
        return torch.stack([self.cx + self.scale * q[..., 0], self.cy - self.scale * q[..., 1]], -1), q[..., 2]

    def distance(self, xyz):
        """Signed distance (front pixels) of points to the extrusion of this view's silhouette."""
        pixels, _ = self.project(xyz)
        h, w = self.sdf.shape
        grid = torch.stack([pixels[..., 0] / w * 2 - 1, pixels[..., 1] / h * 2 - 1], -1).reshape(1, -1, 1, 2)
        sdf = self.sdf.to(xyz.device, xyz.dtype)
        out = F.grid_sample(sdf[None, None], grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.reshape(xyz.shape[:-1]) / self.scale


def _silhouette_sdf(alpha):
    """Signed distance to the alpha > 127 outline, pixels (> 0 outside), from OpenCV's exact transform."""
    solid = (alpha > 127).astype(np.uint8)
    outside = cv2.distanceTransform(1 - solid, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    inside = cv2.distanceTransform(solid, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return torch.as_tensor(np.where(solid > 0, 0.5 - inside, outside - 0.5), dtype=torch.float32)


def _bbox(alpha):
    solid = alpha > 127
    rows, cols = np.flatnonzero(solid.any(1)), np.flatnonzero(solid.any(0))
    if rows.size == 0:
        raise ValueError("empty view")
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def register(views, points, step, elevation_deg):
    """ViewCameras for `views` (name -> framed RGBA) from the current shape's inside `points` (N, 3
    pixel frame, a grid of spacing `step`). Side views first; each one carves the points it rules out,
    so later views are framed against the tighter shape."""
    order = sorted(views, key=lambda n: abs(math.cos(math.radians(VIEW_AZIMUTHS[n]))))
    cameras = []
    for name in order:
        rotation = view_rotation(VIEW_AZIMUTHS[name], elevation_deg)
        q = points @ torch.as_tensor(rotation, dtype=points.dtype).T
        top, bottom, left, right = _bbox(views[name][..., 3])
        y_lo, y_hi = float(q[:, 1].min()) - step / 2, float(q[:, 1].max()) + step / 2
        x_lo, x_hi = float(q[:, 0].min()) - step / 2, float(q[:, 0].max()) + step / 2
        scale = (bottom - top) / max(y_hi - y_lo, 1e-6)
        cy = top + scale * y_hi
        cx = (left + right) / 2.0 - scale * (x_lo + x_hi) / 2.0
        camera = ViewCamera(name, rotation, float(scale), float(cx), float(cy), views[name],
                            _silhouette_sdf(views[name][..., 3]))
        cameras.append(camera)
        kept = camera.distance(points) < step / 2
        if int(kept.sum()) >= 8:
            points = points[kept]
    return cameras


class MultiViewField:
    """The final implicit solid: the single-view field intersected with every view's silhouette
    extrusion. Pixel frame, negative inside."""

    def __init__(self, cameras):
        self.cameras = cameras

    def hull(self, xyz):
        return torch.stack([c.distance(xyz) for c in self.cameras]).max(0).values

    def combine(self, xyz, prior):
        return torch.maximum(prior(xyz), self.hull(xyz))


def build(prior_field, views, elevation_deg, sample_grid):
    """Register the views to the single-view `prior_field`; returns the MultiViewField."""
    values, origin, step = sample_grid(prior_field, PROBE_CELLS)
    axes = [origin[k] + step * torch.arange(values.shape[k], dtype=torch.float32) for k in range(3)]
    X, Y, Z = torch.meshgrid(*axes, indexing="ij")
    inside = values < 0
    return MultiViewField(register(views, torch.stack([X, Y, Z], -1)[inside], step, elevation_deg))
