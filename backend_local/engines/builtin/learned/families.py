"""Random object families, each a function (n, rand) -> Slots, vectorized over the n objects.

Objects are built in a raw frame at roughly unit size, standing roughly on y = 0 with +y up;
scenes.py measures each one and scales it to its exact upright frame. Every family draws all of
its shape from the generator: no fixed model of any particular object is stored here.
"""

from __future__ import annotations

import math

import torch

from . import sdf
from .curves import PROFILE, profile_polygon, random_curve, random_outline, smooth_profile
from .rand import Rand, eye, mix_rotation, pad, vec
from .slots import Slots, align_y, rot_x, rot_y, rot_z

PI = math.pi


def _primitive(rand: Rand, n: int, kind: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Parameters (n, 8) of a primitive of the given kinds with sizes around `scale`."""
    a, b, c = (scale[:, None] * rand.u((n, 3), 0.45, 1.0)).unbind(-1)
    zero = torch.zeros_like(a)
    rounding = torch.where(rand.bern(n, 0.5), rand.u(n, 0.05, 0.35), zero) * torch.minimum(torch.minimum(a, b), c)
    table = {
        sdf.SPHERE: pad(a),
        sdf.BOX: pad(a, b, c, rounding),
        sdf.CYLINDER: pad(a, b, rounding),
        sdf.CAPSULE: pad(zero, -b, zero, zero, b, zero, 0.6 * a),
        sdf.CONE: pad(a, a * rand.u(n, 0.0, 0.7), b),
        # Elongation at most 3:1 keeps the ellipsoid's distance bound useful for marching.
        sdf.ELLIPSOID: pad(a, torch.maximum(b, a / 3), torch.maximum(c, a / 3).clamp(max=3 * a)),
        sdf.TORUS: pad(a + 0.05, (a + 0.05) * rand.u(n, 0.15, 0.4), torch.full_like(a, PI)),
    }
    out = torch.zeros(n, 8, device=a.device)
    for k, p in table.items():
        out = torch.where((kind == k)[:, None], p, out)
    return out


def _chain_positions(rand: Rand, n: int, count: int, radius: torch.Tensor, reach=(0.5, 0.9)) -> torch.Tensor:
    """Centres (n, count, 3): each one on a random earlier part, near its bounding sphere."""
    pos = torch.zeros(n, count, 3, device=rand.device)
    arange = torch.arange(n, device=rand.device)
    for j in range(1, count):
        parent = (rand.u(n) * j).long().clamp(max=j - 1)
        offset = rand.unit(n) * (radius[arange, parent] * rand.u(n, *reach))[:, None]
        pos[:, j] = pos[arange, parent] + offset
    return pos


def primitives(n: int, rand: Rand) -> Slots:
    """2-6 random primitives placed against each other, smooth or hard unions, a few cut away."""
    s = Slots.empty(n, rand.device)
    count = 6
    used = rand.int(n, 2, count)
    kinds = torch.tensor([sdf.SPHERE, sdf.BOX, sdf.CYLINDER, sdf.CAPSULE, sdf.CONE, sdf.ELLIPSOID,
                          sdf.TORUS], device=rand.device)
    kind = kinds[rand.choice(n * count, [1, 1.5, 1.2, 1, 0.8, 1, 0.6]).view(n, count)]
    scale = rand.u((n, count), 0.25, 0.5) * torch.where(torch.arange(count, device=rand.device) == 0, 1.0, 0.75)
    params = torch.stack([_primitive(rand, n, kind[:, j], scale[:, j]) for j in range(count)], 1)
    radius = sdf.bounding_radius(kind, params, torch.zeros(n, count, 1, 2, device=rand.device))[1]
    pos = _chain_positions(rand, n, count, radius)
    blend = torch.where(rand.bern(n, 0.6), rand.u(n, 0.02, 0.12), torch.zeros(n, device=rand.device))
    for j in range(count):
        cut = rand.bern(n, 0.12) & (j > 0)
        s.put(j, kind[:, j], params[:, j], pos=pos[:, j], rot=mix_rotation(rand, n, 0.5),
              op=torch.where(cut, sdf.SUBTRACT, sdf.UNION), blend=torch.where(cut, 0.0, blend),
              part=rand.int(n, 0, 1) if j else 0, mask=j < used)
    return s


def revolution(n: int, rand: Rand) -> Slots:
    """A random profile revolved about y: vases, bottles, lamps, stacked turned pieces."""
    s = Slots.empty(n, rand.device)
    points = PROFILE
    height = rand.u(n, 0.6, 2.4)
    style = rand.choice(n, [1.0, 1.0, 0.7])  # smooth curve, stacked steps, taper with a neck
    t = torch.linspace(0, 1, points, device=rand.device).expand(n, points)
    smooth = smooth_profile(rand, n, points, t)
    # Stacked: piecewise-constant radii over random bands (each band is two profile points).
    bands = points // 2
    band_r = rand.u((n, bands), 0.15, 1.0)
    band_y = torch.sort(rand.u((n, bands - 1), 0.0, 1.0), 1).values
    band_y = torch.cat([torch.zeros(n, 1, device=rand.device), band_y, torch.ones(n, 1, device=rand.device)], 1)
    stack_y = torch.stack([band_y[:, :-1], band_y[:, 1:]], -1).reshape(n, points)
    stack_r = band_r.repeat_interleave(2, 1)
    neck_at = rand.u(n, 0.4, 0.9)[:, None]
    neck = 1.0 - rand.u(n, 0.2, 0.7)[:, None] * torch.exp(-((t - neck_at) / 0.12) ** 2)
    taper = (1.0 + (rand.u(n, 0.3, 1.5)[:, None] - 1.0) * t) * neck
    radius = torch.where(style[:, None] == 0, smooth, torch.where(style[:, None] == 1, stack_r, taper))
    y = torch.where(style[:, None] == 1, stack_y, t)
    radius = radius.clamp(0.12, 1.6) * 0.5
    # Closed tops: some pieces narrow to a point or a dome at the top.
    dome = rand.bern(n, 0.3)
    radius[:, -1] = torch.where(dome, radius[:, -1] * 0.15, radius[:, -1])
    s.put(0, sdf.REVOLVE, poly=profile_polygon(radius, y * height[:, None]), part=0)
    knob = rand.bern(n, 0.3)
    knob_r = rand.u(n, 0.06, 0.16)
    s.put(1, sdf.SPHERE, pad(knob_r), pos=vec(torch.zeros_like(height), height + knob_r * 0.6, torch.zeros_like(height)),
          blend=0.03, part=1, mask=knob)
    return s


def extrusion(n: int, rand: Rand) -> Slots:
    """An outline extruded to a thickness: thin plates (2-5% of their size) to thick cut-outs, lying,
    standing or at any angle."""
    s = Slots.empty(n, rand.device)
    thin = rand.bern(n, 0.45)
    half = torch.where(thin, rand.u(n, 0.01, 0.025), rand.u(n, 0.05, 0.3))
    rounding = rand.u(n, 0.0, 0.6) * half
    orient = rand.choice(n, [0.4, 0.3, 0.3])  # standing, lying, any
    standing = rot_y(rand.u(n, 0, 2 * PI)) @ rot_x(torch.full((n,), PI / 2, device=rand.device))
    lying = rot_y(rand.u(n, 0, 2 * PI))
    rot = torch.where((orient == 0)[:, None, None], standing,
                      torch.where((orient == 1)[:, None, None], lying, rand.rotation(n)))
    s.put(0, sdf.EXTRUDE, pad(half, rounding), rot=rot, poly=random_outline(rand, n), part=0)
    return s


def tube(n: int, rand: Rand) -> Slots:
    """A tube along a random smooth curve: rings, handles, hooks, bent rods. A chain of capsules;
    half of the rings and arcs are exact (capped) tori instead, which no chain makes this round."""
    s = Slots.empty(n, rand.device)
    points = 15
    curve, style, span = random_curve(rand, n, points)
    rot = mix_rotation(rand, n, 0.6)
    curve = curve @ rot.transpose(1, 2)
    radius = rand.u(n, 0.025, 0.1)
    taper = rand.u(n, -0.4, 0.4)
    round_ = (style <= 1) & rand.bern(n, 0.5)
    for j in range(points - 1):
        r = radius * (1 + taper * ((j + 0.5) / (points - 1) - 0.5))
        # Hard union: consecutive capsules meet in a shared sphere (a blend would bead the joints).
        s.put(j, sdf.CAPSULE, torch.cat([curve[:, j], curve[:, j + 1], r[:, None]], 1), part=0, mask=~round_)
    s.put(0, sdf.TORUS, pad(torch.full_like(radius, 0.5), radius, span / 2), rot=rot, part=0, mask=round_)
    ends = rand.bern(n, 0.25)  # a knob at one end (a cane, a key-ring bead)
    end_r = radius * rand.u(n, 1.5, 3.0)
    s.put(points - 1, sdf.SPHERE, pad(end_r), pos=curve[:, -1], blend=0.5 * radius, part=1, mask=ends)
    return s


def legs(n: int, rand: Rand) -> Slots:
    """A top (slab, disc or seat) on 1, 3 or 4 legs: stools, tables, chairs with backs, pedestals."""
    s = Slots.empty(n, rand.device)
    dev = rand.device
    disc = rand.bern(n, 0.4)
    width = rand.u(n, 0.5, 1.0)
    depth = width * rand.u(n, 0.55, 1.0)
    depth = torch.where(disc, width, depth)
    thick = rand.u(n, 0.025, 0.1)
    leg_h = rand.u(n, 0.3, 1.1)
    zero = torch.zeros(n, device=dev)
    top_y = leg_h + thick / 2
    top_round = rand.u(n, 0.0, 0.5) * thick
    s.put(0, sdf.BOX, pad(width / 2, thick / 2, depth / 2, top_round), pos=vec(zero, top_y, zero), part=1,
          mask=~disc)
    s.put(0, sdf.CYLINDER, pad(width / 2, thick / 2, top_round), pos=vec(zero, top_y, zero), part=1, mask=disc)
    count = torch.where(disc, torch.where(rand.bern(n, 0.5), 3, 4), torch.where(rand.bern(n, 0.85), 4, 3))
    pedestal = rand.bern(n, 0.12)
    count = torch.where(pedestal, 1, count)
    leg_r = rand.u(n, 0.015, 0.045)
    inset = rand.u(n, 0.6, 0.92)
    splay = torch.where(rand.bern(n, 0.5), rand.u(n, 0.0, 0.25), zero)
    square = rand.bern(n, 0.35) & (splay == 0)
    phase = rand.u(n, 0, 2 * PI)
    corners = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], device=dev, dtype=torch.float32)
    three = torch.tensor([[0, 1], [-1, -1], [1, -1], [0, 0]], device=dev, dtype=torch.float32)
    foot = []
    for j in range(4):
        angle = phase + 2 * PI * j / count
        on_disc = vec(angle.cos() * width / 2, zero, angle.sin() * width / 2)
        on_box = vec(corners[j, 0] * width / 2, zero, corners[j, 1] * depth / 2)
        three_on_box = vec(three[j, 0] * width / 2, zero, three[j, 1] * depth / 2)
        top = torch.where(disc[:, None], on_disc, torch.where((count == 3)[:, None], three_on_box, on_box)) * inset[:, None]
        top = torch.where(pedestal[:, None], torch.zeros_like(top), top)
        bottom = top * (1 + splay)[:, None]
        top = top + vec(zero, leg_h, zero)
        bottom = bottom + vec(zero, leg_r, zero)
        live = j < count
        radius = torch.where(pedestal, leg_r * 2.5, leg_r)
        s.put(1 + j, sdf.CAPSULE, torch.cat([bottom, top, radius[:, None]], 1), part=0, mask=live & ~square)
        s.put(1 + j, sdf.BOX, pad(leg_r, leg_h / 2, leg_r), pos=vec(bottom[:, 0], leg_h / 2, bottom[:, 2]),
              part=0, mask=live & square)
        foot.append(bottom)
    # A pedestal stands on a foot disc.
    s.put(5, sdf.CYLINDER, pad(width * rand.u(n, 0.2, 0.4), leg_r * 1.2, leg_r), pos=vec(zero, leg_r * 1.2, zero),
          blend=0.02, part=0, mask=pedestal)
    # Chairs: a back rising from the rear edge, as one slab or posts with a rail.
    chair = ~disc & ~pedestal & (count == 4) & rand.bern(n, 0.5)
    back_h = rand.u(n, 0.4, 0.9) * width
    back_t = rand.u(n, 0.02, 0.06)
    tilt = rot_x(rand.u(n, 0.0, 0.25))
    rail = rand.bern(n, 0.4)
    back_y = top_y + back_h / 2
    back_z = -depth / 2 * inset - back_t
    slab_h = torch.where(rail, back_h * rand.u(n, 0.25, 0.5), back_h)
    slab_y = torch.where(rail, top_y + back_h - slab_h / 2, back_y)
    s.put(6, sdf.BOX, pad(width / 2 * inset + leg_r, slab_h / 2, back_t, back_t * 0.4),
          pos=vec(zero, slab_y, back_z), rot=tilt, part=2, mask=chair)
    for j, side in enumerate((-1.0, 1.0)):
        x = side * width / 2 * inset
        s.put(7 + j, sdf.CAPSULE, torch.cat([vec(x, top_y, back_z), vec(x, top_y + back_h, back_z),
                                             leg_r[:, None]], 1), part=0, mask=chair & rail)
    # Stretchers between neighbouring legs, low down.
    rungs = rand.bern(n, 0.3) & ~pedestal
    rung_y = leg_h * rand.u(n, 0.15, 0.4)
    for j in range(3):
        a = foot[j] * 0.8 + vec(zero, rung_y, zero)
        b = foot[j + 1] * 0.8 + vec(zero, rung_y, zero)
        s.put(9 + j, sdf.CAPSULE, torch.cat([a, b, 0.7 * leg_r[:, None]], 1), part=0, mask=rungs & (j + 1 < count))
    return s


def _body(rand: Rand, n: int, s: Slots):
    """A body standing on y = 0 for things with handles/arms: cylinder, box, ellipsoid or capsule.
    Returns (radius, height, kind) so attachments can be placed against its side."""
    kind = rand.choice(n, [1.4, 0.6, 0.6, 0.4])
    radius = rand.u(n, 0.22, 0.45)
    height = radius * rand.u(n, 1.0, 3.2)
    zero = torch.zeros(n, device=rand.device)
    centre = vec(zero, height / 2, zero)
    rounding = rand.u(n, 0.0, 0.3) * radius
    s.put(0, sdf.CYLINDER, pad(radius, height / 2, rounding), pos=centre, mask=kind == 0)
    s.put(0, sdf.BOX, pad(radius, height / 2, radius * rand.u(n, 0.5, 1.0), rounding), pos=centre, mask=kind == 1)
    s.put(0, sdf.ELLIPSOID, pad(radius, height / 2, radius), pos=centre, mask=kind == 2)
    s.put(0, sdf.CAPSULE, torch.cat([vec(zero, radius, zero), vec(zero, height - radius, zero), radius[:, None]], 1),
          mask=kind == 3)
    return radius, height, kind


def handles(n: int, rand: Rand) -> Slots:
    """A body with attachments: arc handles on its side or top, arms or spouts, a lid knob; cylinder
    bodies may be hollow (open at the top)."""
    s = Slots.empty(n, rand.device)
    zero = torch.zeros(n, device=rand.device)
    radius, height, kind = _body(rand, n, s)
    hollow = (kind == 0) & rand.bern(n, 0.5)
    wall = rand.u(n, 0.03, 0.07) * radius / 0.3
    s.put(1, sdf.CYLINDER, pad(radius - wall, height / 2 + 0.1, zero), pos=vec(zero, height / 2 + wall + 0.1, zero),
          op=sdf.SUBTRACT, part=1, mask=hollow)
    count = rand.int(n, 1, 3)
    for j in range(3):
        live = j < count
        side = rand.u(n, 0, 2 * PI) if j else zero
        kind_j = rand.choice(n, [1.5, 1.0, 0.7])  # side handle, arm/spout, top handle
        # Side handle: an arc in the vertical plane through the body's axis, ends sunk in the wall.
        major = height * rand.u(n, 0.2, 0.38)
        minor = rand.u(n, 0.025, 0.06)
        reach = rand.u(n, 0.2, 0.65)
        cy = height * rand.u(n, 0.4, 0.6)
        half_angle = torch.acos((-(reach + 0.5 * wall / major)).clamp(-0.99, 0.99))
        yaw = rot_y(side)
        outward = (yaw @ vec(1.0 + zero, zero, zero)[..., None]).squeeze(-1)
        torus_rot = yaw @ rot_z(torch.full((n,), -PI / 2, device=rand.device))
        s.put(2 + j, sdf.TORUS, pad(major, minor, half_angle), pos=outward * (radius + major * reach)[:, None]
              + vec(zero, cy, zero), rot=torus_rot, blend=0.01, part=1, mask=live & (kind_j == 0))
        # Arm or spout: a tapered cone leaving the side, angled up.
        up = rand.u(n, -0.2, 1.0)
        length = rand.u(n, 0.25, 0.6)
        direction = outward + vec(zero, up, zero)
        direction = direction / direction.norm(dim=-1, keepdim=True)
        start = outward * (radius * 0.6)[:, None] + vec(zero, height * rand.u(n, 0.2, 0.7), zero)
        r0 = rand.u(n, 0.04, 0.1)
        r1 = r0 * rand.u(n, 0.3, 1.0)
        s.put(2 + j, sdf.CONE, pad(r0, r1, length / 2), pos=start + direction * (length / 2)[:, None],
              rot=align_y(direction), blend=0.03, part=0, mask=live & (kind_j == 1))
        # Top handle: an arc over the top, ends sunk into it (bags, baskets, kettles).
        top_major = radius * rand.u(n, 0.5, 0.9)
        top_reach = rand.u(n, 0.0, 0.5)
        top_half = torch.acos((-(top_reach + 0.3 * minor / top_major)).clamp(-0.99, 0.99))
        s.put(2 + j, sdf.TORUS, pad(top_major, minor, top_half), pos=vec(zero, height + top_major * top_reach - 0.02, zero),
              rot=rot_y(side), blend=0.01, part=1, mask=live & (kind_j == 2) & ~hollow)
    knob = ~hollow & rand.bern(n, 0.35)
    knob_r = rand.u(n, 0.04, 0.1)
    s.put(5, sdf.SPHERE, pad(knob_r), pos=vec(zero, height + knob_r * 0.4, zero), blend=0.02, part=2, mask=knob)
    return s


def boxes(n: int, rand: Rand) -> Slots:
    """One or two (rounded) boxes of any proportions turned to any angle."""
    s = Slots.empty(n, rand.device)
    half = rand.u((n, 3), 0.08, 0.5)
    flat = rand.bern(n, 0.3)  # books, tiles, boards
    half[:, 1] = torch.where(flat, half[:, 1] * 0.25, half[:, 1])
    rounding = torch.where(rand.bern(n, 0.5), rand.u(n, 0.02, 0.3), torch.zeros(n, device=rand.device)) * half.min(-1).values
    rot = rand.rotation(n)
    s.put(0, sdf.BOX, pad(half[:, 0], half[:, 1], half[:, 2], rounding), rot=rot, part=0)
    second = rand.bern(n, 0.3)
    half2 = half * rand.u((n, 3), 0.4, 1.0)
    extent = (rot.abs() @ half[..., None]).squeeze(-1)
    offset = vec(rand.u(n, -0.5, 0.5) * extent[:, 0], extent[:, 1] + half2[:, 1] * 0.8, rand.u(n, -0.5, 0.5) * extent[:, 2])
    s.put(1, sdf.BOX, pad(half2[:, 0], half2[:, 1], half2[:, 2], rounding * 0.5), pos=offset,
          rot=mix_rotation(rand, n, 0.5), part=1, mask=second)
    return s


def cavity(n: int, rand: Rand) -> Slots:
    """Hollow things open to view: cups and bowls (a revolved wall), boxes with a hole or an open
    top, pipes."""
    s = Slots.empty(n, rand.device)
    dev = rand.device
    zero = torch.zeros(n, device=dev)
    style = rand.choice(n, [1.6, 1.0, 0.5])
    # Cups and bowls: outer profile, inner = the same profile moved in by the wall, open on top.
    points = PROFILE
    t = torch.linspace(0, 1, points, device=dev).expand(n, points)
    height = rand.u(n, 0.25, 1.2)
    top_r = rand.u(n, 0.35, 0.6)
    bottom_frac = rand.u(n, 0.3, 1.0)
    bowl = rand.u(n, 0.5, 3.0)  # curve exponent: bulging bowl (<1) to flared cone (>1)
    radius = top_r[:, None] * (bottom_frac[:, None] + (1 - bottom_frac[:, None]) * t ** (1 / bowl[:, None]))
    wall = rand.u(n, 0.02, 0.06)
    base = wall * rand.u(n, 1.0, 2.5)
    y = t * height[:, None]
    s.put(0, sdf.REVOLVE, poly=profile_polygon(radius, y), part=0, mask=style == 0)
    inner_y = base[:, None] + t * (height - base + 0.2)[:, None]
    inner_t = ((inner_y / height[:, None]).clamp(0, 1))
    inner_r = top_r[:, None] * (bottom_frac[:, None] + (1 - bottom_frac[:, None]) * inner_t ** (1 / bowl[:, None]))
    inner_r = (inner_r - wall[:, None]).clamp_min(0.02)
    s.put(1, sdf.REVOLVE, poly=profile_polygon(inner_r, inner_y), op=sdf.SUBTRACT, part=1, mask=style == 0)
    # Boxes: a through hole (round or square) along a random axis, or an open top (a tray, a crate).
    half = rand.u((n, 3), 0.2, 0.5)
    s.put(0, sdf.BOX, pad(half[:, 0], half[:, 1], half[:, 2], rand.u(n, 0.0, 0.3) * wall), pos=vec(zero, half[:, 1], zero),
          part=0, mask=style == 1)
    open_top = rand.bern(n, 0.5)
    s.put(1, sdf.BOX, pad(half[:, 0] - wall, half[:, 1], half[:, 2] - wall, zero),
          pos=vec(zero, half[:, 1] + wall, zero), op=sdf.SUBTRACT, part=1, mask=(style == 1) & open_top)
    axis = rand.choice(n, [1.0, 1.0, 1.0])
    hole_r = half.min(-1).values * rand.u(n, 0.3, 0.7)
    axis_rot = torch.where((axis == 0)[:, None, None], rot_z(torch.full((n,), PI / 2, device=dev)),
                           torch.where((axis == 1)[:, None, None], eye(n, dev), rot_x(torch.full((n,), PI / 2, device=dev))))
    square_hole = rand.bern(n, 0.4)
    hole_centre = vec(zero, half[:, 1], zero)
    s.put(1, sdf.CYLINDER, pad(hole_r, torch.full_like(zero, 2.0), zero), pos=hole_centre, rot=axis_rot, op=sdf.SUBTRACT, part=1,
          mask=(style == 1) & ~open_top & ~square_hole)
    s.put(1, sdf.BOX, pad(hole_r, torch.full_like(zero, 2.0), hole_r, zero), pos=hole_centre, rot=axis_rot, op=sdf.SUBTRACT, part=1,
          mask=(style == 1) & ~open_top & square_hole)
    # Pipes: a tube, standing or lying.
    pipe_r = rand.u(n, 0.2, 0.5)
    pipe_h = rand.u(n, 0.3, 1.0)
    lying = rand.bern(n, 0.5)
    pipe_rot = torch.where(lying[:, None, None], rot_x(torch.full((n,), PI / 2, device=dev)), eye(n, dev))
    centre = vec(zero, torch.where(lying, pipe_r, pipe_h), zero)
    s.put(0, sdf.CYLINDER, pad(pipe_r, pipe_h, zero), pos=centre, rot=pipe_rot, part=0, mask=style == 2)
    s.put(1, sdf.CYLINDER, pad(pipe_r - wall * 1.5, pipe_h + 0.5, zero), pos=centre, rot=pipe_rot, op=sdf.SUBTRACT,
          part=1, mask=style == 2)
    return s


def organic(n: int, rand: Rand) -> Slots:
    """Several random ellipsoids smooth-unioned into a blob, with low-frequency displacement."""
    s = Slots.empty(n, rand.device)
    count = 6
    used = rand.int(n, 3, count)
    radii = rand.u((n, count, 3), 0.12, 0.4)
    radii = torch.maximum(radii, radii.max(-1, keepdim=True).values / 2.5)
    pos = _chain_positions(rand, n, count, radii.max(-1).values, reach=(0.4, 0.9))
    blend = rand.u(n, 0.08, 0.25)
    for j in range(count):
        s.put(j, sdf.ELLIPSOID, pad(radii[:, j, 0], radii[:, j, 1], radii[:, j, 2]), pos=pos[:, j],
              rot=rand.rotation(n), blend=blend, part=rand.int(n, 0, 1) if j else 0, mask=j < used)
    s.wave_amp = rand.u(n, 0.01, 0.05)
    s.wave_freq = rand.unit(n * 4).view(n, 4, 3) * rand.u((n, 4, 1), 3.0, 9.0)
    s.wave_phase = rand.u((n, 4), 0, 2 * PI)
    return s


FAMILIES = {
    "primitives": (primitives, 1.0),
    "revolution": (revolution, 1.0),
    "extrusion": (extrusion, 1.2),
    "tube": (tube, 0.8),
    "legs": (legs, 1.3),
    "handles": (handles, 1.0),
    "boxes": (boxes, 0.7),
    "cavity": (cavity, 1.0),
    "organic": (organic, 0.8),
}
