"""A batch of objects as a padded table of primitive slots, and its batched SDF evaluation.

Each object has K slots, folded in slot order: d = op_k(d, d_k), op UNION (a smooth minimum with
radius blend_k, 0 = hard) or SUBTRACT (max(d, -d_k)). Slot k holds a primitive kind, eight
parameters (layout in sdf.evaluate_kind), a rigid placement (rot: local -> object axes, pos: the
local origin in the object frame), a part index (0..PARTS-1, picks one of the object's materials)
and a 2D polygon for REVOLVE / EXTRUDE. A low-frequency sine displacement (amplitude 0 for most
families) is added to the folded distance, divided by its Lipschitz bound so the result stays <= 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from . import sdf

SLOTS = 16        # primitive slots per object
POLY = 24         # polygon vertices per slot (padded by repeating the last one)
PARAMS = 8
PARTS = 3         # materials per object
WAVES = 4         # sine components of the displacement
# Slot-point distances held at once (points are chunked to stay under it): cache-sized on CPU,
# large on CUDA, where each chunk costs a few hundred kernel launches.
EVAL_BUDGET = {"cpu": 1 << 22, "cuda": 1 << 25}


@dataclass
class Slots:
    kind: torch.Tensor     # (n, K) long
    params: torch.Tensor   # (n, K, 8)
    rot: torch.Tensor      # (n, K, 3, 3)
    pos: torch.Tensor      # (n, K, 3)
    op: torch.Tensor       # (n, K) long
    blend: torch.Tensor    # (n, K)
    part: torch.Tensor     # (n, K) long
    poly: torch.Tensor     # (n, K, V, 2)
    wave_amp: torch.Tensor     # (n,)
    wave_freq: torch.Tensor    # (n, W, 3)
    wave_phase: torch.Tensor   # (n, W)

    @staticmethod
    def empty(n: int, device: torch.device | str = "cpu") -> "Slots":
        eye = torch.eye(3, device=device).expand(n, SLOTS, 3, 3).clone()
        return Slots(
            kind=torch.zeros(n, SLOTS, dtype=torch.long, device=device),
            params=torch.zeros(n, SLOTS, PARAMS, device=device),
            rot=eye,
            pos=torch.zeros(n, SLOTS, 3, device=device),
            op=torch.zeros(n, SLOTS, dtype=torch.long, device=device),
            blend=torch.zeros(n, SLOTS, device=device),
            part=torch.zeros(n, SLOTS, dtype=torch.long, device=device),
            poly=torch.zeros(n, SLOTS, POLY, 2, device=device),
            wave_amp=torch.zeros(n, device=device),
            wave_freq=torch.ones(n, WAVES, 3, device=device),
            wave_phase=torch.zeros(n, WAVES, device=device),
        )

    def __post_init__(self):
        self._plan = None

    @property
    def count(self) -> int:
        return self.kind.shape[0]

    def put(self, k: int, kind, params=None, *, pos=None, rot=None, op=sdf.UNION, blend=0.0,
            part=0, poly=None, mask=None) -> None:
        """Fill slot k of every object (or of those where `mask` (n,) is true).

        kind, op, part: int or (n,) long; params (n, <=8); pos (n, 3); rot (n, 3, 3); blend float
        or (n,); poly (n, <=V, 2), padded here by repeating its last vertex."""
        self._plan = None
        n = self.count
        dev = self.kind.device
        sel = torch.ones(n, dtype=torch.bool, device=dev) if mask is None else mask.to(dev)

        def full(value, dtype=None):
            t = torch.as_tensor(value, device=dev, dtype=dtype)
            return t.expand(n) if t.dim() == 0 else t

        self.kind[:, k] = torch.where(sel, full(kind, torch.long), self.kind[:, k])
        self.op[:, k] = torch.where(sel, full(op, torch.long), self.op[:, k])
        self.part[:, k] = torch.where(sel, full(part, torch.long), self.part[:, k])
        self.blend[:, k] = torch.where(sel, full(blend, torch.float32), self.blend[:, k])
        if params is not None:
            padded = torch.zeros(n, PARAMS, device=dev)
            padded[:, : params.shape[1]] = params
            self.params[:, k] = torch.where(sel[:, None], padded, self.params[:, k])
        if pos is not None:
            self.pos[:, k] = torch.where(sel[:, None], pos, self.pos[:, k])
        if rot is not None:
            self.rot[:, k] = torch.where(sel[:, None, None], rot, self.rot[:, k])
        if poly is not None:
            pad = POLY - poly.shape[1]
            if pad > 0:
                poly = torch.cat([poly, poly[:, -1:].expand(n, pad, 2)], 1)
            self.poly[:, k] = torch.where(sel[:, None, None], poly, self.poly[:, k])

    def take(self, index: torch.Tensor) -> "Slots":
        return Slots(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def assign(self, index: torch.Tensor, other: "Slots") -> None:
        self._plan = None
        for f in fields(self):
            getattr(self, f.name)[index] = getattr(other, f.name).to(getattr(self, f.name).device)

    def to(self, device) -> "Slots":
        return Slots(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def lipschitz(self) -> torch.Tensor:
        """Bound on the displacement's slope added to 1 (the folded primitives' own bound)."""
        return 1.0 + self.wave_amp * self.wave_freq.norm(dim=-1).sum(-1) / WAVES

    def raw_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A box (n, 3) lo / hi sure to hold every object (bounding spheres of its union slots)."""
        centre, radius = sdf.bounding_radius(self.kind, self.params, self.poly)
        centre = self.pos + (self.rot @ centre[..., None]).squeeze(-1)
        radius = radius + self.blend + self.wave_amp[:, None]
        used = (self.kind != sdf.NONE) & (self.op == sdf.UNION)
        big = torch.full_like(centre, math.inf)
        lo = torch.where(used[..., None], centre - radius[..., None], big).min(1).values
        hi = torch.where(used[..., None], centre + radius[..., None], -big).max(1).values
        return lo, hi

    def evaluate(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance (n, N) and part index (n, N) at object-frame points (n, N, 3), chunked."""
        n, count, _ = points.shape
        step = max(1, EVAL_BUDGET.get(points.device.type, 1 << 22) // max(1, n * SLOTS))
        if count <= step:
            return self._evaluate(points)
        parts = [self._evaluate(points[:, i:i + step]) for i in range(0, count, step)]
        return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)

    def plan(self) -> dict:
        """What evaluation needs, gathered once per table (it reads tensors back to the host: on
        CUDA a sync) and reused by every evaluation of the batch: per primitive kind present,
        its (object, slot) pairs with their placements and parameters (polygons cut to the
        vertices in use), the slots any object uses, and whether any object is displaced."""
        if self._plan is None:
            kinds = []
            for kind in torch.unique(self.kind).tolist():
                if kind == sdf.NONE:
                    continue
                obj, slot = torch.nonzero(self.kind == kind, as_tuple=True)
                poly = self.poly[obj, slot]
                if kind in (sdf.REVOLVE, sdf.EXTRUDE):
                    # Trailing repeats of the last vertex are padding: drop the columns all share.
                    differs = (poly[:, 1:] != poly[:, :-1]).any(-1)
                    last = torch.arange(1, POLY, device=poly.device) * differs
                    poly = poly[:, : int(last.max().item()) + 1]
                kinds.append((kind, obj, slot, self.pos[obj, slot], self.rot[obj, slot],
                              self.params[obj, slot], poly))
            used = torch.nonzero((self.kind != sdf.NONE).any(0)).squeeze(1).tolist()
            self._plan = {"kinds": kinds, "slots": used, "waves": bool((self.wave_amp > 0).any())}
        return self._plan

    def _evaluate(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, count, _ = points.shape
        plan = self.plan()
        dist = torch.full((n, SLOTS, count), sdf.FAR, device=points.device, dtype=points.dtype)
        # One batched call per primitive kind over all (object, slot) pairs of that kind.
        for kind, obj, slot, pos, rot, params, poly in plan["kinds"]:
            local = (points[obj] - pos[:, None, :]) @ rot
            dist[obj, slot] = sdf.evaluate_kind(kind, local, params, poly)
        d = torch.full((n, count), sdf.FAR, device=points.device, dtype=points.dtype)
        part = torch.zeros((n, count), dtype=torch.long, device=points.device)
        for k in plan["slots"]:
            dk = dist[:, k]
            sub = (self.op[:, k] == sdf.SUBTRACT)[:, None]
            unioned = sdf.smooth_union(d, dk, self.blend[:, k, None])
            subtracted = torch.maximum(d, -dk)
            # The part whose surface is nearest names the material (a cut face: the cutter's).
            takes = torch.where(sub, -dk > d, dk < d)
            part = torch.where(takes, self.part[:, k, None], part)
            d = torch.where(sub, subtracted, unioned)
        if plan["waves"]:
            phase = points @ self.wave_freq.transpose(1, 2) + self.wave_phase[:, None, :]
            d = d + self.wave_amp[:, None] * torch.sin(phase).mean(-1)
            d = d / self.lipschitz()[:, None]
        return d, part


def axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (n, 3, 3) about unit axes (n, 3) by angles (n,) (right-handed)."""
    x, y, z = axis.unbind(-1)
    c, s = torch.cos(angle), torch.sin(angle)
    t = 1.0 - c
    return torch.stack([
        torch.stack([c + x * x * t, x * y * t - z * s, x * z * t + y * s], -1),
        torch.stack([y * x * t + z * s, c + y * y * t, y * z * t - x * s], -1),
        torch.stack([z * x * t - y * s, z * y * t + x * s, c + z * z * t], -1),
    ], -2)


def rot_x(angle: torch.Tensor) -> torch.Tensor:
    return axis_angle(_axis(angle, 0), angle)


def rot_y(angle: torch.Tensor) -> torch.Tensor:
    return axis_angle(_axis(angle, 1), angle)


def rot_z(angle: torch.Tensor) -> torch.Tensor:
    return axis_angle(_axis(angle, 2), angle)


def _axis(angle: torch.Tensor, i: int) -> torch.Tensor:
    a = torch.zeros(angle.shape + (3,), device=angle.device, dtype=angle.dtype)
    a[..., i] = 1.0
    return a


def align_y(direction: torch.Tensor) -> torch.Tensor:
    """Rotations (n, 3, 3) taking local +y to the given directions (n, 3) (any unit length)."""
    d = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    y = torch.zeros_like(d)
    y[..., 1] = 1.0
    axis = torch.cross(y, d, dim=-1)
    sin = axis.norm(dim=-1)
    cos = d[..., 1]
    fallback = torch.zeros_like(d)
    fallback[..., 0] = 1.0
    axis = torch.where(sin[..., None] > 1e-6, axis / sin.clamp_min(1e-9)[..., None], fallback)
    return axis_angle(axis, torch.atan2(sin, cos))
