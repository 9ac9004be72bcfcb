"""Signed distance functions of the generator's primitives, batched in torch.

Every function takes points in the primitive's local frame, shaped (M, N, 3) (M primitive instances,
N points each) and that instance's parameters shaped (M, ...), and returns (M, N): negative inside,
Lipschitz <= 1 (exact distances except the ellipsoid, which is a lower bound), so sphere tracing
through any union of them is safe.
"""

from __future__ import annotations

import torch

# Primitive kind codes stored in a slot table (scenes.Slots.kind). NONE marks an empty slot.
NONE, SPHERE, BOX, CYLINDER, CAPSULE, CONE, ELLIPSOID, TORUS, REVOLVE, EXTRUDE = range(10)
KIND_NAMES = ("none", "sphere", "box", "cylinder", "capsule", "cone", "ellipsoid", "torus",
              "revolve", "extrude")

# Slot combine operators, applied in slot order: d = op(d, d_slot).
UNION, SUBTRACT = 0, 1

FAR = 1.0e3  # stands in for +inf: keeps the smooth minimum's arithmetic finite (inf * 0 = nan)


def _length(v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((v * v).sum(-1).clamp_min(1e-12))


def sphere(p: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    return _length(p) - radius[:, None]


def box(p: torch.Tensor, half: torch.Tensor, rounding: torch.Tensor) -> torch.Tensor:
    """Axis-aligned box of half extents `half` (M, 3), edges rounded by `rounding` (M,)."""
    r = rounding[:, None]
    q = p.abs() - (half[:, None, :] - r[..., None])
    outside = _length(q.clamp_min(0.0))
    inside = q.max(-1).values.clamp_max(0.0)
    return outside + inside - r


def cylinder(p: torch.Tensor, radius: torch.Tensor, half_height: torch.Tensor,
             rounding: torch.Tensor) -> torch.Tensor:
    """Cylinder along local y, centred at the origin."""
    r = rounding[:, None]
    radial = _length(p[..., [0, 2]]) - radius[:, None] + r
    axial = p[..., 1].abs() - half_height[:, None] + r
    q = torch.stack([radial, axial], -1)
    return _length(q.clamp_min(0.0)) + q.max(-1).values.clamp_max(0.0) - r


def capsule(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Segment a-b (M, 3 each) thickened by `radius`."""
    pa = p - a[:, None, :]
    ba = (b - a)[:, None, :]
    h = ((pa * ba).sum(-1) / (ba * ba).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
    return _length(pa - ba * h[..., None]) - radius[:, None]


def cone(p: torch.Tensor, r_bottom: torch.Tensor, r_top: torch.Tensor,
         half_height: torch.Tensor) -> torch.Tensor:
    """Capped cone (frustum) along local y: radius r_bottom at y = -h, r_top at y = +h (exact)."""
    qx = _length(p[..., [0, 2]])
    qy = p[..., 1]
    r1, r2, h = r_bottom[:, None], r_top[:, None], half_height[:, None]
    k2x, k2y = r2 - r1, 2.0 * h
    cap_r = torch.where(qy < 0.0, r1, r2)
    cax = qx - torch.minimum(qx, cap_r)
    cay = qy.abs() - h
    t = (((r2 - qx) * k2x + (h - qy) * k2y) / (k2x * k2x + k2y * k2y)).clamp(0.0, 1.0)
    cbx = qx - r2 + k2x * t
    cby = qy - h + k2y * t
    sign = torch.where((cbx < 0.0) & (cay < 0.0), -1.0, 1.0)
    return sign * torch.sqrt(torch.minimum(cax * cax + cay * cay, cbx * cbx + cby * cby).clamp_min(1e-12))


def ellipsoid(p: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """(|p / r| - 1) * min(r): exact sign, a lower bound on the distance (Lipschitz <= 1)."""
    r = radii[:, None, :]
    return (_length(p / r) - 1.0) * r.min(-1).values


def torus(p: torch.Tensor, major: torch.Tensor, minor: torch.Tensor,
          half_angle: torch.Tensor) -> torch.Tensor:
    """Torus in the local xy plane, cut to an arc of +-half_angle about local +y (pi: closed ring).

    The cut ends are round (a capped torus, exact distance)."""
    sx, sy = torch.sin(half_angle)[:, None], torch.cos(half_angle)[:, None]
    x = p[..., 0].abs()
    y = p[..., 1]
    k = torch.where(sy * x > sx * y, x * sx + y * sy, torch.sqrt(x * x + y * y))
    ra = major[:, None]
    return torch.sqrt(((p * p).sum(-1) + ra * ra - 2.0 * ra * k).clamp_min(1e-12)) - minor[:, None]


def polygon(q: torch.Tensor, verts: torch.Tensor, open_last: bool = False) -> torch.Tensor:
    """Exact signed distance to a closed 2D polygon. q: (M, N, 2); verts: (M, V, 2).

    Padding by repeating a vertex is harmless: a zero-length edge adds neither distance nor a
    crossing. open_last leaves the closing edge (last vertex to first) out of the distance but
    not out of the inside test: the axis of a half meridian section, which is no surface."""
    vx, vy = verts[:, None, :, 0], verts[:, None, :, 1]
    nxt = torch.roll(verts, -1, dims=1)
    ex, ey = nxt[:, None, :, 0] - vx, nxt[:, None, :, 1] - vy
    inv = 1.0 / (ex * ex + ey * ey).clamp_min(1e-12)
    qx, qy = q[..., 0:1], q[..., 1:2]
    wx, wy = qx - vx, qy - vy
    t = ((wx * ex + wy * ey) * inv).clamp(0.0, 1.0)
    bx, by = wx - ex * t, wy - ey * t
    dist2 = bx * bx + by * by
    if open_last:
        dist2[..., -1] = float("inf")
    dist2 = dist2.min(-1).values
    # Crossing number: an edge counts when all three tests agree (iq's polygon formulation).
    above = qy >= vy
    below_next = qy < vy + ey
    left = ex * wy > ey * wx
    crossing = (above == below_next) & (above == left)
    inside = (crossing.sum(-1) % 2) == 1
    dist = torch.sqrt(dist2.clamp_min(1e-12))
    return torch.where(inside, -dist, dist)


def revolve(p: torch.Tensor, profile: torch.Tensor) -> torch.Tensor:
    """Solid of revolution about local y. `profile` (M, V, 2) is the half meridian section in
    (radius >= 0, y), closed along the axis from its last vertex back to its first; the 2D
    distance to its non-axis edges is the 3D distance."""
    q = torch.stack([_length(p[..., [0, 2]]), p[..., 1]], -1)
    return polygon(q, profile, open_last=True)


def extrude(p: torch.Tensor, outline: torch.Tensor, half_thickness: torch.Tensor,
            rounding: torch.Tensor) -> torch.Tensor:
    """2D outline (M, V, 2) in the local xz plane, extruded along local y to +-half_thickness."""
    r = rounding[:, None]
    d2 = polygon(p[..., [0, 2]], outline) + r
    axial = p[..., 1].abs() - half_thickness[:, None] + r
    q = torch.stack([d2, axial], -1)
    return _length(q.clamp_min(0.0)) + q.max(-1).values.clamp_max(0.0) - r


def smooth_union(a: torch.Tensor, b: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Quadratic smooth minimum min(a, b) - k/4 * max(1 - |a - b| / k, 0)^2. Written as
    mix(b, a, h) - k h (1 - h) its partial derivatives are h and 1 - h (h in [0, 1]), so it keeps
    Lipschitz <= 1; this form is exactly the plain minimum where the two are k apart (k = 0: hard)."""
    k = k.clamp_min(1e-6)
    w = (1.0 - (a - b).abs() / k).clamp_min(0.0)
    return torch.minimum(a, b) - 0.25 * k * w * w


def evaluate_kind(kind: int, p: torch.Tensor, params: torch.Tensor, poly: torch.Tensor) -> torch.Tensor:
    """One primitive kind on local points p (M, N, 3); params (M, 8) as laid out in scenes.Slots."""
    if kind == SPHERE:
        return sphere(p, params[:, 0])
    if kind == BOX:
        return box(p, params[:, 0:3], params[:, 3])
    if kind == CYLINDER:
        return cylinder(p, params[:, 0], params[:, 1], params[:, 2])
    if kind == CAPSULE:
        return capsule(p, params[:, 0:3], params[:, 3:6], params[:, 6])
    if kind == CONE:
        return cone(p, params[:, 0], params[:, 1], params[:, 2])
    if kind == ELLIPSOID:
        return ellipsoid(p, params[:, 0:3])
    if kind == TORUS:
        return torus(p, params[:, 0], params[:, 1], params[:, 2])
    if kind == REVOLVE:
        return revolve(p, poly)
    if kind == EXTRUDE:
        return extrude(p, poly, params[:, 0], params[:, 1])
    raise ValueError(f"unknown primitive kind {kind}")


def bounding_radius(kind: torch.Tensor, params: torch.Tensor, poly: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre (..., 3, local frame) and radius (...) of a sphere enclosing each primitive."""
    zeros = torch.zeros_like(params[..., 0])
    centre = torch.zeros_like(params[..., 0:3])
    poly_r = _length(poly).max(-1).values
    radius = torch.stack([
        zeros,                                                     # NONE
        params[..., 0],                                            # SPHERE
        _length(params[..., 0:3]),                                 # BOX
        torch.hypot(params[..., 0], params[..., 1]),               # CYLINDER
        0.5 * _length(params[..., 3:6] - params[..., 0:3]) + params[..., 6],  # CAPSULE
        torch.hypot(torch.maximum(params[..., 0], params[..., 1]), params[..., 2]),  # CONE
        params[..., 0:3].max(-1).values,                           # ELLIPSOID
        params[..., 0] + params[..., 1],                           # TORUS
        poly_r,                                                    # REVOLVE
        torch.hypot(poly_r, params[..., 0]),                       # EXTRUDE
    ], -1).gather(-1, kind[..., None]).squeeze(-1)
    is_capsule = (kind == CAPSULE)[..., None]
    centre = torch.where(is_capsule, 0.5 * (params[..., 0:3] + params[..., 3:6]), centre)
    return centre, radius
