"""Procedural objects that are not in the dev set, rendered as RGBA with a true alpha, for
bench/foreground.py's check that the cut-out is not fitted to the dev cases.

Each object is a signed-distance composition (rings, a cup with a handle, a stool on legs, a turned
box, a star plate, linked rings, a lumpy blob, a desk lamp), sphere-traced with an orthographic camera
looking slightly down (like the dev renders), shaded with a key, a fill and a specular light, and
rendered 2x2 supersampled so the alpha has real anti-aliased edges. The colours are picked to be hard
for a cut-out: near-white, near-black and mid-grey surfaces, metallic highlights, textures.

    python bench/fg_objects.py OUT_DIR      writes OUT_DIR/<name>/input.png (RGBA)
"""

import math
import os
import sys

import numpy as np
import torch

SIZE = 512


# --- signed distances (points p: (N, 3) tensors) -------------------------------------------------

def sphere(p, c, r):
    return (p - torch.tensor(c)).norm(dim=1) - r


def box(p, c, half, radius=0.0, rot=None):
    q = p - torch.tensor(c)
    if rot is not None:
        q = q @ torch.tensor(rot, dtype=torch.float32)
    q = q.abs() - torch.tensor(half) + radius
    return q.clamp(min=0).norm(dim=1) + q.max(dim=1).values.clamp(max=0) - radius


def torus(p, c, major, minor, axis="z"):
    """Ring around `axis` (z: standing and facing the camera, y: lying flat, x: seen edge-on)."""
    q = p - torch.tensor(c)
    a = {"x": 0, "y": 1, "z": 2}[axis]
    plane = [i for i in range(3) if i != a]
    ring = q[:, plane].norm(dim=1) - major
    return torch.stack([ring, q[:, a]], 1).norm(dim=1) - minor


def cylinder(p, c, radius, half_height):
    q = p - torch.tensor(c)
    d = torch.stack([q[:, [0, 2]].norm(dim=1) - radius, q[:, 1].abs() - half_height], 1)
    return d.max(dim=1).values.clamp(max=0) + d.clamp(min=0).norm(dim=1)


def capsule(p, a, b, r):
    a, b = torch.tensor(a), torch.tensor(b)
    pa, ba = p - a, b - a
    h = ((pa @ ba) / (ba @ ba)).clamp(0, 1)
    return (pa - h[:, None] * ba).norm(dim=1) - r


def star_plate(p, c, outer, inner, half_depth, points=5):
    q = p - torch.tensor(c)
    angle = torch.atan2(q[:, 0], q[:, 1])
    sector = 2 * math.pi / points
    a = torch.remainder(angle + sector / 2, sector) - sector / 2
    rho = q[:, :2].norm(dim=1)
    x, y = rho * torch.sin(a.abs()), rho * torch.cos(a)
    # distance to the edge from the tip (0, outer) to the notch (inner at half a sector)
    px, py = 0.0, outer
    qx, qy = inner * math.sin(sector / 2), inner * math.cos(sector / 2)
    ex, ey = qx - px, qy - py
    t = (((x - px) * ex + (y - py) * ey) / (ex * ex + ey * ey)).clamp(0, 1)
    dist = torch.sqrt((x - px - t * ex) ** 2 + (y - py - t * ey) ** 2)
    inside = ((x - px) * ey - (y - py) * ex) > 0
    d2 = torch.where(inside, -dist, dist)
    d = torch.stack([d2, q[:, 2].abs() - half_depth], 1)
    return d.max(dim=1).values.clamp(max=0) + d.clamp(min=0).norm(dim=1) - 0.02


def smin(a, b, k=0.05):
    h = (0.5 + 0.5 * (b - a) / k).clamp(0, 1)
    return b * (1 - h) + a * h - k * h * (1 - h)


def rot_y(deg):
    t = math.radians(deg)
    return [[math.cos(t), 0, -math.sin(t)], [0, 1, 0], [math.sin(t), 0, math.cos(t)]]


def rot_xy(deg_y, deg_x):
    return (np.array(rot_y(deg_y)) @ np.array([[1, 0, 0], [0, math.cos(math.radians(deg_x)), -math.sin(
        math.radians(deg_x))], [0, math.sin(math.radians(deg_x)), math.cos(math.radians(deg_x))]])).tolist()


# --- the objects: (sdf, colour(p, n) -> (N,3) in 0..1, specular, elevation, azimuth) --------------

def plain(rgb):
    return lambda p, n: torch.tensor(rgb).expand(len(p), 3)


def stripes(a, b, freq, axis=1):
    def colour(p, n):
        s = (torch.sin(p[:, axis] * freq) > 0).float()[:, None]
        return torch.tensor(a) * s + torch.tensor(b) * (1 - s)
    return colour


def noise_colour(base, amp, seed):
    g = torch.Generator().manual_seed(seed)
    waves = torch.randn(12, 3, generator=g) * 9
    phases = torch.rand(12, generator=g) * 6.28

    def colour(p, n):
        v = torch.sin(p @ waves.T + phases).mean(dim=1, keepdim=True)
        return (torch.tensor(base) + amp * v * torch.tensor([1.0, 0.8, 0.6])).clamp(0, 1)
    return colour


OBJECTS = {
    # a thick standing ring, near white: its hole must stay background on a white backdrop
    "ring_white": (lambda p: torus(p, (0, 0, 0), 0.55, 0.22, "z"), plain((0.95, 0.95, 0.93)), 0.3, 12, 20),
    # a tall cup with a thin handle, white on white is the hard case
    "cup_white": (lambda p: torch.minimum(
        torch.maximum(cylinder(p, (0, 0, 0), 0.45, 0.6), -cylinder(p, (0, 0.1, 0), 0.39, 0.6)),
        torus(p, (0.55, 0, 0), 0.28, 0.06, "z")), plain((0.97, 0.97, 0.97)), 0.4, 18, 10),
    # a three-legged stool, dark wood
    "stool_dark": (lambda p: torch.minimum(cylinder(p, (0, 0.55, 0), 0.6, 0.06), torch.minimum(
        capsule(p, (0.45, 0.5, 0), (0.55, -0.75, 0), 0.05), torch.minimum(
            capsule(p, (-0.25, 0.5, 0.4), (-0.3, -0.75, 0.5), 0.05),
            capsule(p, (-0.25, 0.5, -0.4), (-0.3, -0.75, -0.5), 0.05)))),
        noise_colour((0.18, 0.11, 0.07), 0.06, 3), 0.2, 15, 30),
    # a box turned on two axes, mid grey with a stripe texture (hard on a grey backdrop)
    "box_grey": (lambda p: box(p, (0, 0, 0), (0.5, 0.35, 0.3), 0.03, rot_xy(35, 20)),
                 stripes((0.52, 0.52, 0.52), (0.42, 0.42, 0.44), 14, 0), 0.2, 20, 0),
    # a black star plate (hard on a black backdrop)
    "star_black": (lambda p: star_plate(p, (0, 0, 0), 0.8, 0.35, 0.1), plain((0.05, 0.05, 0.06)), 0.6, 10, 25),
    # two linked rings, metallic yellow
    "chain_gold": (lambda p: torch.minimum(torus(p, (-0.35, 0, 0), 0.4, 0.08, "z"),
                                           torus(p, (0.35, 0, 0), 0.4, 0.08, "x")),
                   plain((0.85, 0.65, 0.2)), 0.9, 15, 30),
    # an organic lumpy blob with a noisy texture
    "blob_green": (lambda p: sphere(p, (0, 0, 0), 0.7) + 0.08 * torch.sin(5 * p[:, 0]) * torch.sin(
        4 * p[:, 1] + 1) * torch.sin(6 * p[:, 2]), noise_colour((0.3, 0.55, 0.25), 0.25, 7), 0.3, 20, 45),
    # a desk lamp: base, thin arm, shade (thin parts)
    "lamp_red": (lambda p: torch.minimum(cylinder(p, (0, -0.8, 0), 0.35, 0.04), torch.minimum(
        capsule(p, (0, -0.8, 0), (0.2, 0.2, 0), 0.035), smin(capsule(p, (0.2, 0.2, 0), (-0.3, 0.6, 0), 0.035),
                                                             sphere(p, (-0.35, 0.55, 0), 0.22), 0.03))),
                 plain((0.8, 0.12, 0.1)), 0.5, 15, 60),
}


def render(sdf, colour, specular, elevation, azimuth, size=SIZE, supersample=2):
    """Orthographic sphere tracing; returns RGBA uint8 (straight alpha)."""
    n = size * supersample
    e, a = math.radians(elevation), math.radians(azimuth)
    forward = torch.tensor([-math.sin(a) * math.cos(e), -math.sin(e), -math.cos(a) * math.cos(e)])
    right = torch.tensor([math.cos(a), 0.0, -math.sin(a)])
    up = torch.linalg.cross(right, forward)
    coords = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2.4 - 1.2
    yy, xx = torch.meshgrid(-coords, coords, indexing="ij")
    origin = -3 * forward + xx.reshape(-1, 1) * right + yy.reshape(-1, 1) * up
    t = torch.zeros(n * n)
    hit = torch.zeros(n * n, dtype=torch.bool)
    active = torch.arange(n * n)
    for _ in range(160):
        if len(active) == 0:
            break
        d = sdf(origin[active] + t[active, None] * forward)
        done = d < 5e-4
        hit[active[done]] = True
        t[active] += d * 0.9
        active = active[~done & (t[active] < 6)]
    idx = torch.nonzero(hit).flatten()
    p = origin[idx] + t[idx, None] * forward
    h = 1e-3
    grad = torch.stack([sdf(p + torch.tensor(v) * h) - sdf(p - torch.tensor(v) * h)
                        for v in ([1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0])], 1)
    normal = grad / grad.norm(dim=1, keepdim=True).clamp(min=1e-8)
    key = torch.nn.functional.normalize(torch.tensor([0.5, 0.8, 0.6]), dim=0)
    fill = torch.nn.functional.normalize(torch.tensor([-0.6, 0.2, 0.4]), dim=0)
    base = colour(p, normal)
    lambert = 0.25 + 0.75 * (normal @ key).clamp(min=0) + 0.25 * (normal @ fill).clamp(min=0)
    half = torch.nn.functional.normalize(key - forward, dim=0)
    spec = specular * (normal @ half).clamp(min=0) ** 40
    shaded = (base * lambert[:, None] + spec[:, None]).clamp(0, 1)
    rgb = torch.zeros(n * n, 3)
    rgb[idx] = shaded
    alpha = hit.float()
    rgb = rgb.reshape(n, n, 3).permute(2, 0, 1)[None]
    alpha = alpha.reshape(1, 1, n, n)
    pooled_rgb = torch.nn.functional.avg_pool2d(rgb, supersample)[0].permute(1, 2, 0)
    pooled_a = torch.nn.functional.avg_pool2d(alpha, supersample)[0, 0]
    straight = pooled_rgb / pooled_a[..., None].clamp(min=1e-6)
    out = torch.cat([straight, pooled_a[..., None]], -1).clamp(0, 1).numpy()
    return (out * 255 + 0.5).astype(np.uint8)


def generate(out_dir):
    from PIL import Image
    paths = {}
    for name, (sdf, colour, specular, elevation, azimuth) in OBJECTS.items():
        path = os.path.join(out_dir, name, "input.png")
        if not os.path.isfile(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with torch.no_grad():
                Image.fromarray(render(sdf, colour, specular, elevation, azimuth)).save(path)
        paths[name] = path
    return paths


if __name__ == "__main__":
    for name, path in generate(sys.argv[1] if len(sys.argv) > 1 else "bench/out/fg_objects").items():
        print(name, path)
