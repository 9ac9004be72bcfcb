"""Extra views for the built-in engine: register each view's camera to the front's, find the camera
elevation the silhouettes agree on, carve a visual hull from all silhouettes, and let the single-view
shape fill what no silhouette constrains.

Cameras (DESIGN.md "Coordinates"): every view is orthographic, at the front's elevation e, the camera
circled about the world's vertical axis by the view's azimuth. The shape lives in the front camera's
pixel frame (see shape.py), so a view sees the point p at q = C Ry(-a) C^T p, with C the front's
world -> camera rotation (backend_local/upright.py).

Registration. Each view was cut out and framed on its own (foreground.frame), so its scale and offset
in the framed image are not the front's. When the framing is known (the pipeline records it), the
views are taken as one turntable: the same camera (same zoom) circled about a vertical axis through
the point it looks at, which every raw image shows at its centre. Otherwise, or when the silhouettes
agree better that way (views zoomed or cropped differently), each view is framed by its silhouette's
height against the single-view shape's (`register`).

Elevation. The silhouettes of one object agree only when the cameras are right: the hull carved from
all of them then reproduces every one of them, and a wrong elevation carves away what some view shows.
The elevation is the one whose hull reproduces the silhouettes best (`consistency`); the single view's
own estimate only breaks ties (a sphere looks the same from every elevation).

Shape. The hull (intersection of every silhouette's extrusion, a signed distance in each view so the
field stays distance-like) bounds the object. The single-view shape, moved along the front camera's
rays to where the hull is (one image cannot tell the depth at which its object sits), is carved by
the hull and keeps deciding what no silhouette constrains (the cross-section between the views: a
round object stays round; the base that cameras above never see). Where a side view shows what the
single-view shape leaves out (its guessed depth too thin), the hull alone decides along those rays.
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from shared.request import VIEW_AZIMUTHS
from ...upright import camera_to_upright

PROBE_CELLS = 72          # grid (cells along the front silhouette's larger side) the depth shift is found on
SEARCH_CELLS = 32         # coarser grid for framing views on their own (`register`)
ELEVATION_RANGE_DEG = (-20.0, 60.0)
SEARCH_STEPS_DEG = (5.0, 2.0, 1.0)   # coarse scan, then finer steps around the best
# The single view's own elevation (when it has one: a solid of revolution) stands unless another
# elevation explains the silhouettes better by more than this: for an object symmetric about the
# vertical axis every elevation explains them equally well.
ELEVATION_TOLERANCE = 0.01
# Below this consistency the views are not taken as one turntable (zoomed or cropped differently):
# each is framed on its own too, and the better of the two is kept.
TURNTABLE_MIN = 0.9
# The per-view framing replaces the turntable only when better by more than this (it adapts to the
# shape guess, so it fits a little better by chance).
TURNTABLE_MARGIN = 0.02
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
    """One view registered to the front: pixel-frame point p -> view pixel (column, row) =
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


@dataclass
class Framing:
    """Where a framed image came from (foreground.frame's info): framed pixel c <-> raw pixel
    x0 + c * k (continuous coordinates, pixel centres at +0.5)."""

    x0: float
    y0: float
    k: float                   # raw pixels per framed pixel
    raw_w: float
    raw_h: float

    @classmethod
    def from_info(cls, info):
        x0, y0, side, _ = info["crop"]
        raw_h, raw_w = info["raw"]
        return cls(float(x0), float(y0), float(side) / float(info["size"]), float(raw_w), float(raw_h))

    def centre(self):
        """The raw image's centre in framed pixel coordinates."""
        return (self.raw_w / 2.0 - self.x0) / self.k, (self.raw_h / 2.0 - self.y0) / self.k


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


def front_camera(image):
    """The front itself as a ViewCamera: the pixel frame is its own image (origin at the centre)."""
    h, w = image.shape[:2]
    return ViewCamera("front", np.eye(3), 1.0, w / 2.0, h / 2.0, image, _silhouette_sdf(image[..., 3]))


def turntable(views, sdfs, framings, front_image, elevation_deg):
    """ViewCameras for one camera circled about a vertical axis through the point every raw image
    shows at its centre (the look-at point), at the same zoom. That point is put at depth 0 of the
    pixel frame (any depth along the front's central ray gives the same hull, only moved)."""
    front = framings["front"]
    h, w = front_image.shape[:2]
    fcx, fcy = front.centre()
    look_at = np.array([fcx - w / 2.0, h / 2.0 - fcy, 0.0])
    cameras = []
    for name in sorted(views):
        rotation = view_rotation(VIEW_AZIMUTHS[name], elevation_deg)
        framing = framings[name]
        scale = front.k / framing.k
        vcx, vcy = framing.centre()
        moved = rotation @ look_at
        cameras.append(ViewCamera(name, rotation, scale, vcx - scale * moved[0], vcy + scale * moved[1],
                                  views[name], sdfs[name]))
    return cameras


def register(views, sdfs, points, step, elevation_deg):
    """ViewCameras for `views` (name -> framed RGBA) framed on their own, from the single-view shape's
    inside `points` (N, 3 pixel frame, a grid of spacing `step`). The height comes from the single-view
    shape (exact for a level camera: turning the camera does not change it); the left view is framed
    against the right one, which sees the same depth mirrored."""
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
        cameras.append(ViewCamera(name, rotation, float(scale), float(cx), float(cy), views[name], sdfs[name]))
    return sorted(cameras, key=lambda c: c.name)


class ProbeGrid:
    """A regular grid over the front silhouette's box (x, y) and a depth range wide enough for every
    view (z): where the views are fitted and the hull's depth is measured."""

    def __init__(self, front, depth, cells):
        top, bottom, left, right = _bbox(front.image[..., 3])
        h, w = front.image.shape[:2]
        x_lo, x_hi = left - w / 2.0, right - w / 2.0
        y_lo, y_hi = h / 2.0 - bottom, h / 2.0 - top
        self.step = max(x_hi - x_lo, y_hi - y_lo) / float(cells)
        self.axes = [torch.arange(lo + self.step / 2, hi, self.step, dtype=torch.float32)
                     for lo, hi in ((x_lo, x_hi), (y_lo, y_hi), (depth[0], depth[1]))]
        X, Y, Z = torch.meshgrid(*self.axes, indexing="ij")
        self.points = torch.stack([X, Y, Z], -1)           # (nx, ny, nz, 3)


def _hull(cameras, xyz):
    return torch.stack([c.distance(xyz) for c in cameras]).max(0).values


def _coverage(camera, points, step):
    """The view's pixels covered by the projection of grid `points` (cells of `step`)."""
    h, w = camera.image.shape[:2]
    covered = np.zeros((h, w), np.uint8)
    if len(points):
        pixels, _ = camera.project(points)
        cols = pixels[:, 0].floor().long().clamp(0, w - 1).numpy()
        rows = pixels[:, 1].floor().long().clamp(0, h - 1).numpy()
        covered[rows, cols] = 1
    size = max(int(math.ceil(camera.scale * step)) | 1, 1)
    return cv2.dilate(covered, np.ones((size, size), np.uint8)) > 0


RAY_PIXELS = 500         # silhouette pixels per view whose rays are tested
RAY_SAMPLES = 64         # depth samples along each ray, then as many again around the nearest one
MISS_CAP = 0.02          # of the front silhouette's size: a ray missing by this much counts as missed


def _ray_pixels(camera, count):
    """Up to `count` silhouette pixel centres of `camera`'s image, evenly strided (deterministic)."""
    rows, cols = np.nonzero(camera.image[..., 3] > 127)
    stride = max(len(rows) // count, 1)
    return np.stack([cols[::stride] + 0.5, rows[::stride] + 0.5], 1)


def consistency(cameras, depth, size):
    """How well the hull of all `cameras` reproduces each one's silhouette, in [0, 1] (1: every
    silhouette explained). For each view, rays through its silhouette's pixels are marched through the
    hull of the other views: a ray that misses it shows a pixel no object seen by the others can
    cover. The miss distance (the hull's field is distance-like, in front pixels) is capped at
    MISS_CAP x `size` and averaged; depth sampling is allowed half a sample of slack."""
    lo, hi = depth
    coarse = torch.linspace(lo, hi, RAY_SAMPLES)
    step = float(coarse[1] - coarse[0])
    offsets = torch.linspace(-step, step, RAY_SAMPLES)
    slack = float(offsets[1] - offsets[0]) / 2
    cap = MISS_CAP * size
    losses = []
    for camera in cameras:
        others = [c for c in cameras if c is not camera]
        pix = torch.as_tensor(_ray_pixels(camera, RAY_PIXELS), dtype=torch.float32)
        # view pixel + depth -> q in the view's frame -> front pixel frame (rotation is orthonormal)
        qx = (pix[:, 0] - camera.cx) / camera.scale
        qy = (camera.cy - pix[:, 1]) / camera.scale
        rotation = torch.as_tensor(camera.rotation, dtype=torch.float32)

        def along(ts):
            q = torch.stack([qx[:, None].expand_as(ts), qy[:, None].expand_as(ts), ts], -1)
            return _hull(others, q @ rotation)

        nearest = coarse[along(coarse[None, :].expand(len(pix), -1)).argmin(1)]
        miss = along(nearest[:, None] + offsets[None, :]).min(1).values - slack
        losses.append(float(miss.clamp(0, cap).mean()) / cap)
    return 1.0 - float(np.mean(losses))


def _depth_range(front, views, framings):
    """A depth range (pixel frame, look-at point at 0) that holds the object: it lies inside every
    view's framed image."""
    reach = max(max(v.shape[:2]) for v in list(views.values()) + [front.image])
    if framings is not None:
        reach = max(reach * framings["front"].k / min(framings[n].k for n in views),
                    reach + abs(front.image.shape[0] / 2.0 - framings["front"].centre()[1]))
    return -reach, reach


def _search(make_cameras, depth, size, prior_elevation=None):
    """The elevation (degrees) whose cameras' hull reproduces the silhouettes best, and its score: a
    coarse scan, then steps halving around the best. `prior_elevation`: the single view's estimate,
    kept unless another explains the silhouettes clearly better."""
    scores = {}

    def score(e):
        e = round(float(e), 3)
        if e not in scores:
            scores[e] = consistency(make_cameras(e), depth, size)
        return scores[e]

    lo, hi = ELEVATION_RANGE_DEG
    for e in np.arange(lo, hi + 1e-6, SEARCH_STEPS_DEG[0]):
        score(e)
    for step in SEARCH_STEPS_DEG[1:]:
        best = max(scores, key=scores.get)
        for e in (best - step, best + step):
            if lo <= e <= hi:
                score(e)
    best = max(scores, key=scores.get)
    # Near ties: an object symmetric about the vertical axis looks alike from every elevation (they go
    # to the single view's estimate, or to a level camera when it has none), and one symmetric about a
    # horizontal plane alike from e and -e (they go to the camera above: photos look down on objects).
    near = [e for e, v in scores.items() if v >= scores[best] - ELEVATION_TOLERANCE]
    anchor = 0.0 if prior_elevation is None else round(float(prior_elevation), 3)
    if score(anchor) >= scores[best] - ELEVATION_TOLERANCE:
        best = anchor
    elif best < 0 and any(e > 0 for e in near):
        best = max((e for e in near if e > 0), key=scores.get)
    return float(best), scores[best]


def _depth_shift(grid, hull_inside, prior_inside):
    """The shift along the front camera's rays (pixel-frame z) that best overlaps the single-view shape
    with the hull (IoU over the grid, whole cells): one image cannot tell where its object sits in
    depth, the views can. Overlaps for every shift at once, as a cross-correlation along z."""
    count = hull_inside.shape[2]
    h = torch.fft.rfft(hull_inside.to(torch.float64), n=2 * count, dim=2)
    p = torch.fft.rfft(prior_inside.to(torch.float64), n=2 * count, dim=2)
    overlap = torch.fft.irfft(h * p.conj(), n=2 * count, dim=2).sum((0, 1))     # [k]: prior moved by k
    shifts = torch.arange(2 * count)
    shifts = torch.where(shifts < count, shifts, shifts - 2 * count)
    union = float(hull_inside.sum()) + float(prior_inside.sum()) - overlap
    best = int(torch.argmax(overlap / union.clamp(min=1)))
    return float(shifts[best]) * grid.step


def _gaps(cameras, points, step):
    """For each side view, the part of its silhouette that the (shifted, carved) single-view shape
    leaves out, as a ViewCamera whose sdf is that region: along those pixels' rays the hull decides."""
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
    return missing


class MultiViewField:
    """The final implicit solid, pixel frame, negative inside:

        hull  and  (single-view shape moved to the hull's depth  or  what a side view shows that it
                    leaves out)

    The hull is every view's silhouette extrusion and the front's. Where a side view's silhouette
    covers pixels that the single-view shape does not reach (its guessed depth is too thin), the hull
    alone decides along those pixels' rays (bounded by the other views), so the side outlines are
    reproduced."""

    def __init__(self, cameras, front, shift, missing, elevation_deg, info):
        self.cameras = cameras        # the extra views' ViewCameras
        self.front = front            # the front's ViewCamera
        self.shift = shift            # pixel-frame z the single-view shape is moved by
        self.missing = missing
        self.elevation_deg = elevation_deg
        self.info = info

    def hull(self, xyz):
        return _hull(self.cameras + [self.front], xyz)

    def combine(self, xyz, prior):
        moved = torch.stack([xyz[..., 0], xyz[..., 1], xyz[..., 2] - self.shift], -1)
        d = prior(moved)
        for extra in self.missing:
            d = torch.minimum(d, extra.distance(xyz))
        return torch.maximum(d, self.hull(xyz))


def build(prior_field, views, prior_elevation, front_image, framings=None):
    """Register the views (name -> framed RGBA) to the front, find the elevation and fit the
    single-view `prior_field` (pixel-frame points -> signed distance) to their hull.
    `framings`: name ("front" too) -> foreground.frame's info, when known. Returns a MultiViewField."""
    front = front_camera(front_image)
    sdfs = {name: _silhouette_sdf(image[..., 3]) for name, image in views.items()}
    for name, image in views.items():
        _bbox(image[..., 3])                             # an empty view is refused here, by name
    frames = None
    if framings is not None and all(n in framings for n in list(views) + ["front"]):
        frames = {name: Framing.from_info(info) for name, info in framings.items()}
    depth = _depth_range(front, views, frames)
    search_grid = ProbeGrid(front, depth, SEARCH_CELLS)
    top, bottom, left, right = _bbox(front_image[..., 3])
    size = max(bottom - top, right - left)
    candidates = {}
    if frames is not None:
        def table(e):
            return turntable(views, sdfs, frames, front_image, e) + [front]
        candidates["turntable"] = _search(table, depth, size, prior_elevation) + (table,)
    prior_inside = prior_field(search_grid.points) < 0
    if bool(prior_inside.any()) and candidates.get("turntable", (0, 0))[1] < TURNTABLE_MIN:
        points = search_grid.points[prior_inside]

        def framed(e):
            return register(views, sdfs, points, search_grid.step, e) + [front]
        elevation, score = _search(framed, depth, size, prior_elevation)
        if "turntable" not in candidates or score > candidates["turntable"][1] + TURNTABLE_MARGIN:
            candidates["framed"] = (elevation, score, framed)
    method = "framed" if "framed" in candidates else "turntable"
    elevation, score, make = candidates[method]
    cameras = make(elevation)

    grid = ProbeGrid(front, depth, PROBE_CELLS)
    hull_inside = _hull(cameras, grid.points) < 0
    shift = _depth_shift(grid, hull_inside, prior_field(grid.points) < 0)
    info = {"registration": method, "consistency": round(score, 4), "elevation_deg": round(elevation, 2),
            "depth_shift": round(shift, 2)}
    field = MultiViewField(cameras[:-1], front, shift, [], elevation, info)
    carved = grid.points[field.combine(grid.points, prior_field) < 0]
    field.missing = _gaps(field.cameras, carved, grid.step)
    solid = field.combine(grid.points, prior_field) < 0
    z = grid.axes[2][solid.any(0).any(0)]
    field.z_extent = ((float(z.min()) - 2 * grid.step, float(z.max()) + 2 * grid.step) if len(z) else depth)
    return field
