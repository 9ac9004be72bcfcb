"""Random draws for the data generator from one torch.Generator, and small batched vector helpers."""

from __future__ import annotations

import math

import torch

from .slots import rot_y

PI = math.pi


class Rand:
    """Draws from one torch.Generator on its own device."""

    def __init__(self, generator: torch.Generator):
        self.gen = generator
        self.device = generator.device

    def u(self, shape, lo=0.0, hi=1.0) -> torch.Tensor:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return lo + (hi - lo) * torch.rand(shape, generator=self.gen, device=self.device)

    def normal(self, shape) -> torch.Tensor:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return torch.randn(shape, generator=self.gen, device=self.device)

    def bern(self, n: int, p: float) -> torch.Tensor:
        return self.u(n) < p

    def int(self, n: int, lo: int, hi: int) -> torch.Tensor:
        """Integers in [lo, hi] (inclusive)."""
        return torch.randint(lo, hi + 1, (n,), generator=self.gen, device=self.device)

    def choice(self, n: int, weights) -> torch.Tensor:
        w = torch.as_tensor(weights, dtype=torch.float32, device=self.device)
        return torch.multinomial(w, n, replacement=True, generator=self.gen)

    def unit(self, n: int) -> torch.Tensor:
        v = self.normal((n, 3))
        return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)

    def rotation(self, n: int) -> torch.Tensor:
        """Uniformly random rotations (n, 3, 3)."""
        q = self.normal((n, 4))
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        w, x, y, z = q.unbind(-1)
        return torch.stack([
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ], -2)


def vec(x, y, z) -> torch.Tensor:
    return torch.stack(torch.broadcast_tensors(x, y, z), -1)


def eye(n: int, device) -> torch.Tensor:
    return torch.eye(3, device=device).expand(n, 3, 3).clone()


def mix_rotation(rand: Rand, n: int, p_random: float) -> torch.Tensor:
    """Upright (random yaw) or, with probability p_random, fully random orientations."""
    upright = rot_y(rand.u(n, 0, 2 * PI))
    return torch.where(rand.bern(n, p_random)[:, None, None], rand.rotation(n), upright)


def pad(*columns) -> torch.Tensor:
    t = torch.stack(columns, -1)
    return torch.cat([t, torch.zeros(t.shape[0], 8 - t.shape[1], device=t.device)], -1)
