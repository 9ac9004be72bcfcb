"""Extra views for the built-in engine: register each view's camera to the front's, carve a visual hull
from all silhouettes, and let the single-view shape fill what no silhouette constrains.

Cameras (DESIGN.md "Coordinates"): every view is orthographic, at the front's elevation e, the camera
circled about the world's vertical axis by the view's azimuth. The shape lives in the front camera's
pixel frame (see shape.py), so a view sees the point p at q = C Ry(-a) C^T p, with C the front's
world -> camera rotation (backend_local/upright.py). Each view was cut out and framed on its own, so
its scale and offset are found here: the vertical extent of its silhouette against the current
shape's (the height of an object does not change as the camera circles it; at e != 0 the single-view
shape predicts the change), and its horizontal centre against the current shape's (the back: the
front's width, mirrored) or against the opposite view's outline (left against right).

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
OPPOSITE = {"right": "left", "left": "right"}
# Only views this far round (|sin azimuth|) fill what the single view leaves out: their rays cross the
# front silhouette's extrusion, which bounds the fill.
SIDE_VIEW = 0.5


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
    """ViewCameras for `views` (name -> framed RGBA) from the single-view shape's inside `points` (N, 3
    pixel frame, a grid of spacing `step`). The height comes from the single-view shape (exact for a
    level camera: turning the camera does not change it); the left view is framed against the right
    one, which sees the same depth mirrored."""
    order = sorted(views, key=lambda n: abs(math.cos(math.radians(VIEW_AZIMUTHS[n]))))
    cameras = []
    seen = {}                 # name -> its silhouette's horizontal range in its camera frame
    for name in order:
        rotation = view_rotation(VIEW_AZIMUTHS[name], elevation_deg)
        q = points @ torch.as_tensor(rotation, dtype=points.dtype).T
        top, bottom, left, right = _bbox(views[name][..., 3])
        y_lo, y_hi = float(q[:, 1].min()) - step / 2, float(q[:, 1].max()) + step / 2
        x_lo, x_hi = float(q[:, 0].min()) - step / 2, float(q[:, 0].max()) + step / 2
        scale = (bottom - top) / max(y_hi - y_lo, 1e-6)
        cy = top + scale * y_hi
        cx = (left + right) / 2.0 - scale * (x_lo + x_hi) / 2.0
        opposite = seen.get(OPPOSITE.get(name))
        if opposite is not None:
            # The camera opposite this one sees the same horizontal extent mirrored (both cameras' right
            # vectors are horizontal and opposite): frame against its outline, not the current guess.
            cx = (left + right) / 2.0 + scale * (opposite[0] + opposite[1]) / 2.0
        seen[name] = ((left - cx) / scale, (right - cx) / scale)
        camera = ViewCamera(name, rotation, float(scale), float(cx), float(cy), views[name],
                            _silhouette_sdf(views[name][..., 3]))
        cameras.append(camera)
    return cameras


class MultiViewField:
    """The final implicit solid, pixel frame, negative inside:

        hull  and  (single-view shape  or  what a view shows that the single-view shape leaves out)

    The hull is every view's silhouette extrusion and the front's. Where a side view's silhouette
    covers pixels that the single-view shape does not reach (its guessed depth is too thin), the hull
    alone decides along those pixels' rays (bounded by the front's outline), so the side outlines are
    reproduced. A back view only carves: nothing bounds its rays' depth."""

    def __init__(self, cameras, front, missing):
        self.cameras = cameras
        self.front = front            # signed distance to the front silhouette's extrusion
        self.missing = missing        # ViewCameras whose sdf is the region the single view leaves out

    def hull(self, xyz):
        return torch.stack([c.distance(xyz) for c in self.cameras] + [self.front(xyz)]).max(0).values

    def combine(self, xyz, prior):
        d = prior(xyz)
        for extra in self.missing:
            d = torch.minimum(d, extra.distance(xyz))
        return torch.maximum(d, self.hull(xyz))


def _coverage(camera, points, step):
    """The view's pixels covered by the projection of grid `points` (cells of `step`)."""
    h, w = camera.image.shape[:2]
    pixels, _ = camera.project(points)
    cols = pixels[:, 0].floor().long().clamp(0, w - 1).numpy()
    rows = pixels[:, 1].floor().long().clamp(0, h - 1).numpy()
    covered = np.zeros((h, w), np.uint8)
    covered[rows, cols] = 1
    size = max(int(math.ceil(camera.scale * step)) | 1, 1)
    return cv2.dilate(covered, np.ones((size, size), np.uint8)) > 0


def build(prior_field, views, elevation_deg, sample_grid, front):
    """Register the views to the single-view `prior_field`; returns the MultiViewField."""
    values, origin, step = sample_grid(prior_field, PROBE_CELLS)
    axes = [origin[k] + step * torch.arange(values.shape[k], dtype=torch.float32) for k in range(3)]
    X, Y, Z = torch.meshgrid(*axes, indexing="ij")
    points = torch.stack([X, Y, Z], -1)[values < 0]
    cameras = register(views, points, step, elevation_deg)
    missing = []
    for camera in cameras:
        if abs(math.sin(math.radians(VIEW_AZIMUTHS[camera.name]))) < SIDE_VIEW:
            continue          # a back view's rays run along the depth, which no silhouette bounds
        solid = camera.image[..., 3] > 127
        gap = (solid & ~_coverage(camera, points, step)).astype(np.uint8)
        # Slivers along the outline are the grid's, not the shape's: keep what survives an opening.
        size = max(int(math.ceil(camera.scale * step)) | 1, 3)
        gap = cv2.morphologyEx(gap, cv2.MORPH_OPEN, np.ones((size, size), np.uint8))
        if gap.any():
            missing.append(ViewCamera(camera.name, camera.rotation, camera.scale, camera.cx, camera.cy,
                                      camera.image, _silhouette_sdf(gap * 255)))
    return MultiViewField(cameras, front, missing)
