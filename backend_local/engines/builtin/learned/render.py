"""Training batches rendered on the fly: an orthographic sphere tracer in plain torch (CPU or CUDA).

make_batch(count, generator, device) samples objects (scenes.py), a camera per object (elevation
0-30 degrees, a tenth 30-45, any azimuth), frames each object the way the engine frames its input
(projected bounding box centred in a square window of side margin * its larger side, margin
1.1-1.3) and returns the RGBA render plus the occupancy grid of the same window.

Frames. The upright frame is the object's own (y up, base on y = 0). The camera frame has x to the
image's right, y to the image's top, z towards the camera; camera_rotation(e, a) is the rotation
R with p_cam = R @ p_up: the camera stands at azimuth a about the vertical (a = 0 looks along -z
of the upright frame, a = 90 degrees from +x) and elevation e above the horizon, looking down.
So R = rot_x(e) @ rot_y(a)^T, and rot_x(e)^T @ p_cam (turning camera-frame points back by the
elevation about x) is the upright frame turned to face the camera: a vertical pole that leans
towards the camera in the camera frame stands straight again.

Window coordinates (occupancy): x, y in [-1, 1] are exactly the image (pixel (row, col)'s centre
at x = -1 + (2 col + 1) / S, y = 1 - (2 row + 1) / S), z in [-1, 1] the same scale about the
object's depth centre. occupancy[b, k, r, c] samples the cell centre x = -1 + (2c + 1) / G,
y = 1 - (2r + 1) / G, z = -1 + (2k + 1) / G: depth index 0 farthest from the camera.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .rand import Rand
from .lattice import compact, lattice_sdf, measure
from .scenes import Objects, sample_objects
from .slots import rot_x, rot_y

TRACE_STEPS = 64
SHADOW_STEPS = 12
COMPACT_EVERY = 6
TRUNCATE = 4  # the sdf target's band, in grid cells


def camera_rotation(elevation: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
    """World(upright)-to-camera rotations (B, 3, 3) for elevations and azimuths (B,) in radians."""
    return rot_x(elevation) @ rot_y(azimuth).transpose(-1, -2)


def _gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    if t.dim() == 2:
        return t.gather(1, index)
    return t.gather(1, index[..., None].expand(index.shape + t.shape[2:]))


class _CameraScene:
    """The objects seen through their cameras: distances at camera-frame points."""

    def __init__(self, objects: Objects, rotation: torch.Tensor):
        self.objects = objects
        self.rotation = rotation

    def to_upright(self, p_cam: torch.Tensor) -> torch.Tensor:
        return p_cam @ self.rotation  # R^T p for row vectors

    def sdf(self, p_cam: torch.Tensor) -> torch.Tensor:
        return self.objects.sdf(self.to_upright(p_cam))

    def sdf_and_part(self, p_cam: torch.Tensor):
        return self.objects.sdf_and_part(self.to_upright(p_cam))


def frame_objects(scene: _CameraScene) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-frame boxes (B, 3) lo / hi of each object: the measured extent widened by a fine
    grid cell (about 1.5% of the object), kept inside the conservative box."""
    lo, hi = scene.objects.lower - 0.03, scene.objects.upper + 0.03
    corners = torch.stack([torch.stack([(hi if (i >> a) & 1 else lo)[:, a] for a in range(3)], -1)
                           for i in range(8)], 1)
    cam = corners @ scene.rotation.transpose(1, 2)
    fine = 48
    outer_lo, outer_hi, est_lo, est_hi = measure(scene.sdf, cam.min(1).values, cam.max(1).values, 24, fine)
    cell = (outer_hi - outer_lo) / fine
    return torch.maximum(outer_lo, est_lo - cell), torch.minimum(outer_hi, est_hi + cell)


def trace(scene: _CameraScene, origin_xy: torch.Tensor, z_start: torch.Tensor, t_max: torch.Tensor,
          pixel: torch.Tensor, steps: int = TRACE_STEPS):
    """Sphere-trace rays along -z from (x, y, z_start). origin_xy (B, R, 2); z_start, t_max,
    pixel (B,). Returns (hit (B, R) bool, t of the hit or of the closest approach (B, R),
    the closest approach's distance (B, R))."""
    b, r, _ = origin_xy.shape
    dev = origin_xy.device
    eps = (0.05 * pixel)[:, None]
    min_step = (0.15 * pixel)[:, None]
    t = torch.zeros(b, r, device=dev)
    best_t = torch.zeros(b, r, device=dev)
    best_d = torch.full((b, r), math.inf, device=dev)
    hit = torch.zeros(b, r, dtype=torch.bool, device=dev)
    live = torch.arange(r, device=dev).expand(b, r)
    for step in range(steps):
        if step and step % COMPACT_EVERY == 0:
            # Drop finished rays (hits and exits) so later steps only pay for the hard ones.
            live = compact(~hit & (t <= t_max[:, None]))
            if live.shape[1] == 0:
                break
        tt = t.gather(1, live)
        xy = _gather(origin_xy, live)
        p = torch.cat([xy, (z_start[:, None] - tt)[..., None]], -1)
        d = scene.sdf(p)
        inside_range = tt <= t_max[:, None]
        closer = (d < best_d.gather(1, live)) & inside_range
        best_d.scatter_(1, live, torch.where(closer, d, best_d.gather(1, live)))
        best_t.scatter_(1, live, torch.where(closer, tt, best_t.gather(1, live)))
        now_hit = (d < eps) & inside_range
        hit.scatter_(1, live, hit.gather(1, live) | now_hit)
        advance = torch.where(now_hit | ~inside_range, torch.zeros_like(d), torch.maximum(d, min_step))
        t.scatter_(1, live, tt + advance)
    t_final = torch.where(hit, t, best_t)
    return hit, t_final, best_d


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def _normals(scene: _CameraScene, p: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Unit SDF gradients (B, M, 3) by the four-point tetrahedron difference, step h (B,)."""
    k = torch.tensor([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], dtype=p.dtype, device=p.device)
    b, m, _ = p.shape
    probe = p[:, :, None, :] + h[:, None, None, None] * k
    d = scene.sdf(probe.reshape(b, m * 4, 3)).view(b, m, 4)
    return _normalize((d[..., None] * k).sum(2))


def _soft_shadow(scene: _CameraScene, p: torch.Tensor, light: torch.Tensor, start: torch.Tensor,
                 reach: float, sharpness: torch.Tensor) -> torch.Tensor:
    """Fraction of the key light reaching p (B, M, 3) along light (B, 3), by a short march."""
    t = start[:, None].expand(p.shape[:2]).clone()
    lit = torch.ones_like(t)
    for _ in range(SHADOW_STEPS):
        d = scene.sdf(p + t[..., None] * light[:, None, :])
        lit = torch.minimum(lit, (sharpness[:, None] * d / t).clamp(0.0, 1.0))
        t = t + d.clamp(0.01, reach / SHADOW_STEPS * 2)
    return lit * lit * (3 - 2 * lit)


def _occlusion(scene: _CameraScene, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Ambient occlusion from distances sampled along the normal (creases and cavities darken)."""
    occ = torch.zeros(p.shape[:2], device=p.device)
    for i, h in enumerate((0.02, 0.05, 0.1, 0.18)):
        d = scene.sdf(p + h * n)
        occ = occ + (h - d).clamp_min(0.0) * (0.8 ** i) / h * 0.35
    return (1.0 - occ).clamp(0.2, 1.0)


def _ggx(n, v, l, rough, f0):
    """Cook-Torrance GGX specular times n.l for unit vectors (B, M, 3); rough (B, M); f0 (B, M, 3)."""
    h = _normalize(v + l)
    nl = (n * l).sum(-1).clamp_min(0.0)
    nv = (n * v).sum(-1).clamp_min(1e-3)
    nh = (n * h).sum(-1).clamp_min(0.0)
    vh = (v * h).sum(-1).clamp_min(0.0)
    a2 = (rough * rough).clamp_min(2e-3) ** 2
    dist = a2 / (math.pi * (nh * nh * (a2 - 1) + 1) ** 2)
    k = (rough + 1) ** 2 / 8
    geom = nl / (nl * (1 - k) + k) * nv / (nv * (1 - k) + k)
    fresnel = f0 + (1 - f0) * ((1 - vh) ** 5)[..., None]
    return fresnel * (dist * geom / (4 * nv))[..., None]


def _lights(rand: Rand, b: int, rotation: torch.Tensor, device):
    """Random key, fill and sky/ground light, as camera-frame directions and linear colours."""
    def direction(elev_lo, elev_hi):
        e = rand.u(b, elev_lo, elev_hi)
        a = rand.u(b, 0, 2 * math.pi)
        up = torch.stack([e.cos() * a.sin(), e.sin(), e.cos() * a.cos()], -1).to(device)
        return (rotation @ up[..., None]).squeeze(-1)

    def tint(amount):
        return (1.0 + rand.u((b, 3), -amount, amount)).to(device)

    key = direction(0.25, 1.3)
    fill = direction(-0.1, 0.8)
    key_rgb = tint(0.08) * rand.u((b, 1), 1.6, 3.2).to(device)
    fill_rgb = tint(0.1) * (rand.u((b, 1), 0.0, 0.9) * (rand.u((b, 1)) < 0.6)).to(device)
    sky = tint(0.1) * rand.u((b, 1), 0.35, 0.8).to(device)
    ground = sky * rand.u((b, 1), 0.25, 0.6).to(device)
    up = rotation[:, :, 1]  # the upright frame's +y in camera coordinates
    sharp = rand.u(b, 4.0, 24.0).to(device)
    exposure = rand.u(b, 0.8, 1.35).to(device)
    gamma = rand.u(b, 2.0, 2.4).to(device)
    return dict(key=key, fill=fill, key_rgb=key_rgb, fill_rgb=fill_rgb, sky=sky, ground=ground, up=up,
                sharp=sharp, exposure=exposure, gamma=gamma)


def shade(scene: _CameraScene, p: torch.Tensor, pixel: torch.Tensor, light: dict, shadows: bool = True) -> torch.Tensor:
    """Display colour (B, M, 3) in [0, 1] at camera-frame surface points (B, M, 3)."""
    n = _normals(scene, p, 0.5 * pixel)
    _, part = scene.sdf_and_part(p)
    albedo, rough, metal = scene.objects.materials.surface(part, scene.to_upright(p))
    v = torch.zeros_like(p)
    v[..., 2] = 1.0
    key, fill = light["key"][:, None, :], light["fill"][:, None, :]
    up = light["up"][:, None, :]
    lit = (_soft_shadow(scene, p + 2 * pixel[:, None, None] * n, light["key"], 2 * pixel, 1.0, light["sharp"])
           if shadows else torch.ones(p.shape[:2], device=p.device))
    ao = _occlusion(scene, p, n)
    f0 = 0.04 + (albedo - 0.04) * metal[..., None]
    diffuse_albedo = albedo * (1 - metal[..., None])
    key_nl = (n * key).sum(-1).clamp_min(0.0)
    fill_nl = (n * fill).sum(-1).clamp_min(0.0)
    hemi = 0.5 + 0.5 * (n * up).sum(-1)
    ambient = light["ground"][:, None, :] + (light["sky"][:, None, :] - light["ground"][:, None, :]) * hemi[..., None]
    colour = diffuse_albedo * (light["key_rgb"][:, None, :] * (key_nl * lit)[..., None]
                               + light["fill_rgb"][:, None, :] * fill_nl[..., None] + ambient * ao[..., None])
    colour = colour + light["key_rgb"][:, None, :] * _ggx(n, v, key, rough, f0) * lit[..., None]
    colour = colour + light["fill_rgb"][:, None, :] * _ggx(n, v, fill, rough, f0)
    # Environment reflection (what makes metal read as metal): the sky/ground gradient seen along
    # the mirror direction, blurred towards the average by roughness.
    refl = 2 * (n * v).sum(-1, keepdim=True) * n - v
    env_t = (0.5 + 0.5 * (refl * up).sum(-1)).clamp(0, 1) ** 2
    env = light["ground"][:, None, :] + (1.6 * light["sky"][:, None, :] - light["ground"][:, None, :]) * env_t[..., None]
    env = env + (ambient - env) * rough[..., None]
    nv = (n * v).sum(-1).clamp(0, 1)
    env_f = f0 + (1 - f0) * ((1 - nv) ** 5)[..., None] * (1 - rough[..., None]) ** 2
    colour = colour + env * env_f * ao[..., None]
    colour = 1.0 - torch.exp(-colour * light["exposure"][:, None, None])
    return colour.clamp(0, 1) ** (1.0 / light["gamma"][:, None, None])


def _window_points(centre: torch.Tensor, half: torch.Tensor, size: int) -> torch.Tensor:
    """Camera-frame x, y (B, size*size, 2) of pixel centres, row-major, row 0 at the top."""
    k = (2 * torch.arange(size, device=centre.device, dtype=centre.dtype) + 1) / size - 1
    y, x = torch.meshgrid(-k, k, indexing="ij")
    grid = torch.stack([x, y], -1).reshape(1, -1, 2)
    return centre[:, None, :] + half[:, None, None] * grid


def occupancy_grid(scene: _CameraScene, centre: torch.Tensor, z_mid: torch.Tensor, half: torch.Tensor,
                   size: int, depth_range: float = 1.0) -> torch.Tensor:
    """Truncated signed distances (B, G, G, G) in window units at the cell centres, [depth, row,
    col], clamped to +-TRUNCATE cells (exact within that band, sign exact everywhere)."""
    b = centre.shape[0]
    cell = 2.0 * half / size
    origin = torch.stack([centre[:, 0] - half, centre[:, 1] + half, z_mid - depth_range * half], -1)
    steps = torch.zeros(b, 3, 3, device=centre.device, dtype=centre.dtype)
    steps[:, 0, 2] = depth_range * cell    # depth index: far (-z) to near
    steps[:, 1, 1] = -cell                 # row: top (+y) to bottom
    steps[:, 2, 0] = cell                  # col: left (-x) to right
    band = TRUNCATE * cell
    d = lattice_sdf(scene.sdf, origin, steps, size, band)
    return (torch.maximum(torch.minimum(d, band[:, None, None, None]), -band[:, None, None, None])
            / half[:, None, None, None])


def make_batch(count: int, generator: torch.Generator, device: torch.device | str = "cpu",
               image_size: int = 128, grid: int = 64, families: Sequence[str] | None = None,
               shadows: bool = True, steps: int = TRACE_STEPS, depth_range: float = 1.0) -> dict:
    """A batch of `count` random objects (scenes.sample_objects), each under a random camera and
    lighting, rendered by render(); see render() for the keys. Everything is drawn from
    `generator`: the same seed gives the same batch."""
    device = torch.device(device)
    objects = sample_objects(count, generator, device, families)
    rand = Rand(generator)
    steep = rand.u(count) < 0.1
    elevation = torch.where(steep, rand.u(count, 30.0, 45.0), rand.u(count, 0.0, 30.0)) * (math.pi / 180)
    azimuth = rand.u(count, 0.0, 2 * math.pi)
    margin = rand.u(count, 1.1, 1.3)
    return render(objects, elevation.to(device), azimuth.to(device), margin.to(device), rand,
                  image_size, grid, shadows, steps, depth_range)


def render(objects: Objects, elevation: torch.Tensor, azimuth: torch.Tensor, margin: torch.Tensor,
           rand: Rand, image_size: int = 128, grid: int = 64, shadows: bool = True,
           steps: int = TRACE_STEPS, depth_range: float = 1.0) -> dict:
    """Render given objects from given cameras (elevation, azimuth radians, margin; (B,) each on
    the objects' device), lights drawn from `rand`. The grid's depth axis spans depth_range times
    the window's half side about the object's depth centre (1: a cube, as the image). Keys:
      rgba (B, 4, S, S) float32 in [0, 1], straight colour, alpha = coverage, background 0;
      occupancy (B, G, G, G) float32 0/1, [depth (0 = far), row (top first), col (left first)],
        the cell centres' inside test (parts thinner than a cell can fall between centres);
      sdf (B, G, G, G) float32 the signed distance at those cell centres in window units (the
        window's half side = 1), truncated to +-4 cells (8 / G), exact within; occupancy = sdf < 0;
      elevation, azimuth (B,) float32 radians; rotation (B, 3, 3) camera_rotation of them;
      window (B, 4) float32 (cx, cy, cz, h): window point w (cell centres: x, y as above, z
        depth_range * (-1 + (2k + 1) / G)) is the camera-frame point (cx, cy, cz) + h * w, and
        camera-frame p is rotation^T @ p in the upright frame;
      margin (B,) the window's side over the larger side of the (conservative, up to ~3% wide)
        projected bounding box: the true margin is this or a little more;
      depth_clipped (B,) bool: the object reaches past the grid's depth range (longer along the
        view axis than depth_range times the window's side);
      family list[str]."""
    count = len(objects)
    device = elevation.device
    rotation = camera_rotation(elevation, azimuth)
    scene = _CameraScene(objects, rotation)
    light = _lights(rand, count, rotation, device)

    lo, hi = frame_objects(scene)
    centre = 0.5 * (lo[:, :2] + hi[:, :2])
    side = (hi[:, :2] - lo[:, :2]).max(-1).values * margin
    half = 0.5 * side
    z_mid = 0.5 * (lo[:, 2] + hi[:, 2])
    pixel = side / image_size

    rays = _window_points(centre, half, image_size)
    hit, t, closest = trace(scene, rays, hi[:, 2] + pixel, (hi[:, 2] - lo[:, 2]) + 2 * pixel, pixel, steps)
    # Coverage: a hit pixel is covered; a miss fades out over one pixel by how near it passed
    # (the distance at its closest approach), which anti-aliases the silhouette without supersampling.
    alpha = torch.where(hit, torch.ones_like(closest), (0.5 - closest / pixel[:, None]).clamp(0.0, 1.0))

    seen = compact(alpha > 0)
    rgb = torch.zeros(count, image_size * image_size, 3, device=device)
    if seen.shape[1]:
        ts = t.gather(1, seen)
        p = torch.cat([_gather(rays, seen), (hi[:, 2] + pixel)[:, None, None] - ts[..., None]], -1)
        colour = shade(scene, p, pixel, light, shadows)
        rgb.scatter_(1, seen[..., None].expand(-1, -1, 3), colour)
    rgb = rgb * (alpha[..., None] > 0)
    rgba = torch.cat([rgb, alpha[..., None]], -1).view(count, image_size, image_size, 4).permute(0, 3, 1, 2)

    sdf = occupancy_grid(scene, centre, z_mid, half, grid, depth_range)
    return {
        "rgba": rgba.contiguous().float(),
        "occupancy": (sdf < 0).float(),
        "sdf": sdf.float(),
        "elevation": elevation.float(),
        "azimuth": azimuth.float(),
        "rotation": rotation.float(),
        "window": torch.cat([centre, z_mid[:, None], half[:, None]], -1).float(),
        "margin": margin.float(),
        "depth_clipped": (hi[:, 2] - lo[:, 2]) > side * depth_range,
        "family": list(objects.family),
    }
