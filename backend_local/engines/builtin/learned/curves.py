"""Random 2D outlines, revolved profiles and 3D curves (batched) for the object families."""

from __future__ import annotations

import math

import torch

from .rand import Rand
from .slots import POLY

PI = math.pi
PROFILE = 14  # profile points of a revolved section (two more vertices close it on the axis)


def profile_polygon(radius: torch.Tensor, height: torch.Tensor) -> torch.Tensor:
    """Half meridian section (n, P + 2, 2) of a profile r(y) sampled at P heights: from the axis
    at the bottom, along the profile, back to the axis at the top (sdf.revolve closes it)."""
    zero = torch.zeros_like(radius[:, :1])
    return torch.cat([torch.stack([zero, height[:, :1]], -1), torch.stack([radius, height], -1),
                      torch.stack([zero, height[:, -1:]], -1)], 1)


def smooth_profile(rand: Rand, n: int, points: int, y: torch.Tensor) -> torch.Tensor:
    """A low-frequency random radius curve over normalised heights y (n, P) in [0, 1]."""
    r = torch.ones_like(y)
    for j in range(1, 4):
        amp = rand.u(n, -0.4, 0.4)[:, None] / j
        r = r + amp * torch.cos(PI * j * y + rand.u(n, 0, 2 * PI)[:, None])
    return r


def random_outline(rand: Rand, n: int) -> torch.Tensor:
    """Random closed 2D outlines (n, V, 2) about the origin, radius about 0.5: stars, polygons,
    blobs, rounded rectangles."""
    style = rand.choice(n, [1.0, 1.0, 1.2, 1.0])
    star_points = rand.int(n, 4, 8)
    sides = rand.int(n, 3, 8)
    count = torch.where(style == 0, 2 * star_points, torch.where(style == 1, sides, torch.full_like(sides, POLY)))
    i = torch.arange(POLY, device=rand.device).expand(n, POLY)
    idx = torch.minimum(i, count[:, None] - 1)
    angle = 2 * PI * idx / count[:, None] + rand.u(n, 0, 2 * PI)[:, None]
    r = torch.ones(n, POLY, device=rand.device)
    inner = rand.u(n, 0.35, 0.7)[:, None]
    r = torch.where((style[:, None] == 0) & (idx % 2 == 1), inner, r)
    blob = torch.ones_like(r)
    for j in range(2, 5):
        blob = blob + rand.u(n, -0.25, 0.25)[:, None] / (j - 1) * torch.cos(j * angle + rand.u(n, 0, 2 * PI)[:, None])
    r = torch.where(style[:, None] == 2, blob.clamp_min(0.3), r)
    power = rand.u(n, 2.5, 8.0)[:, None]
    rect = (angle.cos().abs() ** power + angle.sin().abs() ** power) ** (-1 / power)
    r = torch.where(style[:, None] == 3, rect, r)
    stretch = torch.where(style == 0, 1.0, rand.u(n, 0.45, 1.0))[:, None]
    return 0.5 * torch.stack([r * angle.cos(), r * angle.sin() * stretch], -1)


def random_curve(rand: Rand, n: int, points: int):
    """Smooth 3D curves (n, P, 3) of size about 1: rings, arcs (handles), hooks, wandering paths.
    Also returns the style (0 ring, 1 arc, 2 hook, 3 wander) and the ring/arc's angular span."""
    style = rand.choice(n, [1.0, 1.0, 0.8, 1.2])
    t = torch.linspace(0, 1, points, device=rand.device).expand(n, points)
    zero = torch.zeros_like(t)
    # Ring and arc: an ellipse, closed or over part of a turn, slightly wavy out of its plane.
    span = torch.where(style == 0, 2 * PI, rand.u(n, 0.6 * PI, 1.6 * PI))[:, None]
    theta = t * span - span / 2
    aspect = rand.u(n, 0.6, 1.0)[:, None]
    wobble = rand.u(n, 0.0, 0.12)[:, None] * torch.sin(2 * theta + rand.u(n, 0, 2 * PI)[:, None])
    ellipse = torch.stack([0.5 * theta.sin(), 0.5 * aspect * theta.cos(), wobble], -1)
    # Hook: a straight shank, then a turn of about half a circle curling over.
    shank = rand.u(n, 0.4, 0.6)[:, None]
    length = 0.7
    hook_r = rand.u(n, 0.15, 0.3)[:, None]
    bend = ((t - shank) / (1 - shank)).clamp_min(0) * PI * rand.u(n, 0.8, 1.2)[:, None]
    hook = torch.stack([hook_r * (1 - bend.cos()),
                        torch.where(t <= shank, length * t / shank, length + hook_r * bend.sin()), zero], -1)
    # Wander: a sum of low sines per axis.
    wander = torch.zeros(n, points, 3, device=rand.device)
    for j in range(1, 3):
        amp = rand.u((n, 1, 3), -0.5, 0.5) / j
        wander = wander + amp * torch.sin(PI * j * t[..., None] + rand.u((n, 1, 3), 0, 2 * PI))
    wander = wander + rand.unit(n)[:, None, :] * t[..., None] * 0.8
    sel = style[:, None, None]
    return torch.where(sel <= 1, ellipse, torch.where(sel == 2, hook, wander)), style, span[:, 0]
