"""Random objects for training: sample_objects() draws a batch of objects from the families and
puts each in its upright frame (base on y = 0, random yaw, bounding box's largest side 1, centred
in x and z), as one batched signed distance function with materials.

    objs = sample_objects(8, torch.Generator().manual_seed(0), "cpu")
    d = objs.sdf(points)        # points (B, N, 3), upright frame -> (B, N), negative inside
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .families import FAMILIES
from .rand import Rand
from .lattice import measure
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
