"""Random objects for training: sample_objects() draws a batch of objects from the families and
puts each in its upright frame (base on y = 0, random yaw, bounding box's largest side 1, centred
in x and z), as one batched signed distance function with materials.

    objs = sample_objects(8, torch.Generator().manual_seed(0), "cpu")
    d = objs.sdf(points)        # points (B, N, 3), upright frame -> (B, N), negative inside
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .families import FAMILIES, Rand
from .materials import Materials, sample_materials
from .slots import Slots, rot_y


@dataclass
class Objects:
    slots: Slots             # raw-frame shapes
    yaw: torch.Tensor        # (B,) radians
    scale: torch.Tensor      # (B,) upright = scale * (yawed raw - offset)
    offset: torch.Tensor     # (B, 3)
    lower: torch.Tensor      # (B, 3) upright bounding box, measured (about +-1% of the size)
    upper: torch.Tensor      # (B, 3)
    family: list[str]
    materials: Materials

    def __len__(self) -> int:
        return len(self.family)

    def _raw(self, points: torch.Tensor) -> torch.Tensor:
        q = points / self.scale[:, None, None] + self.offset[:, None, :]
        return q @ rot_y(self.yaw)  # (R^T q) for row vectors: undoes the yaw

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """Signed distance (B, N) at upright-frame points (B, N, 3); Lipschitz <= 1."""
        return self.slots.evaluate(self._raw(points))[0] * self.scale[:, None]

    def sdf_and_part(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance as sdf() and the part index (B, N) that names the surface's material."""
        d, part = self.slots.evaluate(self._raw(points))
        return d * self.scale[:, None], part


def grid_bounds(fn: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor,
                res: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bounds of {fn < 0} inside the boxes lo..hi (B, 3) from a res^3 grid of cell centres.

    Returns (outer_lo, outer_hi, inner_lo, inner_hi). Outer is sure to hold the shape: every
    surface point lies in the cell of a centre p with fn(p) <= the half cell diagonal (fn is
    Lipschitz <= 1), so widening those centres' extent by half a cell is conservative, at most
    about 1.4 cells too wide. Inner is the extent of the centres inside the shape (inf / -inf when
    none is: a part thinner than a cell)."""
    b = lo.shape[0]
    axis = (torch.arange(res, device=lo.device, dtype=lo.dtype) + 0.5) / res
    cells = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(1, -1, 3)
    points = lo[:, None, :] + (hi - lo)[:, None, :] * cells
    d = fn(points)
    cell = (hi - lo) / res
    near = (d <= 0.5 * cell.norm(dim=-1, keepdim=True))[..., None]
    inside = (d <= 0.0)[..., None]
    inf = torch.tensor(float("inf"), device=lo.device)
    outer_lo = torch.where(near, points, inf).min(1).values - 0.5 * cell
    outer_hi = torch.where(near, points, -inf).max(1).values + 0.5 * cell
    inner_lo = torch.where(inside, points, inf).min(1).values
    inner_hi = torch.where(inside, points, -inf).max(1).values
    empty = ~near.view(b, -1).any(1)[:, None]
    return (torch.where(empty, lo, outer_lo), torch.where(empty, hi, outer_hi), inner_lo, inner_hi)


def measure(fn: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor,
            coarse: int = 24, fine: int = 56) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two grid passes (the second over the first's outer box). Returns (outer_lo, outer_hi,
    estimate_lo, estimate_hi): the conservative box and a best estimate. The outer box can be
    loose where fn underestimates the distance (ellipsoids, displacement: a few percent), but
    the inside test is exact for every family, so the estimate is half a fine cell beyond the
    outermost inside centre (on average where a face between centres lies), within the outer
    box; a part thinner than a fine cell (about 2% of the box) can reach past it by up to a cell.
    With no centre inside at all, the middle of what the grid allows."""
    lo, hi, _, _ = grid_bounds(fn, lo, hi, coarse)
    outer_lo, outer_hi, inner_lo, inner_hi = grid_bounds(fn, lo, hi, fine)
    cell = (outer_hi - outer_lo) / fine
    found = torch.isfinite(inner_lo) & torch.isfinite(inner_hi)
    est_lo = torch.where(found, torch.maximum(outer_lo, inner_lo - 0.5 * cell), outer_lo + 0.7 * cell)
    est_hi = torch.where(found, torch.minimum(outer_hi, inner_hi + 0.5 * cell), outer_hi - 0.7 * cell)
    return outer_lo, outer_hi, est_lo, est_hi


def sample_objects(count: int, generator: torch.Generator, device: torch.device | str = "cpu",
                   families: Sequence[str] | None = None) -> Objects:
    """`count` random objects on `device`, their parameters drawn from `generator` (on whichever
    device it lives: the same generator state gives the same objects). `families` restricts the
    draw to those names (default: all of FAMILIES, by their weights)."""
    rand = Rand(generator)
    names = list(families) if families is not None else list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; known: {sorted(FAMILIES)}")
    pick = rand.choice(count, [FAMILIES[n][1] for n in names])
    slots = Slots.empty(count, rand.device)
    for i, name in enumerate(names):
        index = torch.nonzero(pick == i).squeeze(1)
        if index.numel():
            slots.assign(index, FAMILIES[name][0](index.numel(), rand))
    materials = sample_materials(count, rand)
    yaw = rand.u(count, 0.0, 2 * torch.pi)
    slots, materials, yaw = slots.to(device), materials.to(device), yaw.to(device)

    # Measure each yawed raw object, then scale it to largest side 1 with its base on y = 0.
    turn = rot_y(yaw)
    raw_lo, raw_hi = slots.raw_bounds()
    centre, half = 0.5 * (raw_lo + raw_hi), 0.5 * (raw_hi - raw_lo)
    centre = (turn @ centre[..., None]).squeeze(-1)
    half = (turn.abs() @ half[..., None]).squeeze(-1)
    _, _, lo, hi = measure(lambda q: slots.evaluate(q @ turn)[0], centre - half, centre + half)
    size = (hi - lo).max(-1).values.clamp_min(1e-6)
    scale = 1.0 / size
    mid = 0.5 * (lo + hi)
    offset = torch.stack([mid[:, 0], lo[:, 1], mid[:, 2]], -1)
    lower = (lo - offset) * scale[:, None]
    upper = (hi - offset) * scale[:, None]
    family = [names[i] for i in pick.tolist()]
    return Objects(slots=slots, yaw=yaw, scale=scale, offset=offset, lower=lower, upper=upper,
                   family=family, materials=materials)
