"""Random materials per object part: base colours, roughness, metallic, and a procedural 3D
texture (none, stripes, checker, value noise, spots) evaluated at surface points in the object's
upright frame, so the pattern wraps the shape the way paint or grain would."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .slots import PARTS

PLAIN, STRIPES, CHECKER, NOISE, SPOTS = range(5)
TEXTURES = ("plain", "stripes", "checker", "noise", "spots")


@dataclass
class Materials:
    color_a: torch.Tensor    # (n, P, 3) linear RGB
    color_b: torch.Tensor    # (n, P, 3) the texture's second colour
    roughness: torch.Tensor  # (n, P) in (0, 1]
    metallic: torch.Tensor   # (n, P) 0 or 1
    texture: torch.Tensor    # (n, P) long, one of PLAIN..SPOTS
    frame: torch.Tensor      # (n, P, 3, 3) texture axes with frequency (anisotropic: grain)
    seed: torch.Tensor       # (n, P) long

    def to(self, device) -> "Materials":
        return Materials(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def take(self, index) -> "Materials":
        return Materials(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def assign(self, index, other: "Materials") -> None:
        for f in fields(self):
            getattr(self, f.name)[index] = getattr(other, f.name)

    def surface(self, part: torch.Tensor, points: torch.Tensor):
        """Albedo (n, N, 3, linear), roughness (n, N), metallic (n, N) at upright-frame points."""
        def per_point(t):
            index = part.reshape(part.shape + (1,) * (t.dim() - 2))
            return t.gather(1, index.expand(part.shape + t.shape[2:]))
        a, b = per_point(self.color_a), per_point(self.color_b)
        kind = per_point(self.texture)
        q = (per_point(self.frame) @ points[..., None]).squeeze(-1)
        seed = per_point(self.seed)
        stripes = _smoothstep(-0.35, 0.35, torch.sin(6.2831853 * q[..., 0]))
        checker = (torch.floor(q).sum(-1).remainder(2.0))
        noise = 0.65 * value_noise(q, seed) + 0.35 * value_noise(2.03 * q + 17.0, seed)
        spots = _smoothstep(0.66, 0.74, value_noise(1.7 * q, seed + 7))
        mix = torch.zeros_like(q[..., 0])
        for code, m in ((STRIPES, stripes), (CHECKER, checker), (NOISE, noise), (SPOTS, spots)):
            mix = torch.where(kind == code, m, mix)
        albedo = a + (b - a) * mix[..., None]
        return albedo, per_point(self.roughness), per_point(self.metallic)


def _smoothstep(lo: float, hi: float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _hash(ix, iy, iz, seed) -> torch.Tensor:
    """Integer lattice hash to [0, 1) (int64 arithmetic, the same on CPU and CUDA)."""
    h = (ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791) ^ (seed * 2654435761)
    h = h & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (h >> 16) ^ h
    return (h & 0xFFFFFF).float() / 16777216.0


def value_noise(q: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Smooth 3D value noise in [0, 1] at points q (..., 3); seed (...) long."""
    base = torch.floor(q)
    f = q - base
    w = f * f * (3.0 - 2.0 * f)
    i = base.long()
    out = torch.zeros_like(q[..., 0])
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                corner = _hash(i[..., 0] + dx, i[..., 1] + dy, i[..., 2] + dz, seed)
                weight = ((w[..., 0] if dx else 1 - w[..., 0]) * (w[..., 1] if dy else 1 - w[..., 1])
                          * (w[..., 2] if dz else 1 - w[..., 2]))
                out = out + weight * corner
    return out


def _hsv(h, s, v) -> torch.Tensor:
    out = []
    for shift in (5.0, 3.0, 1.0):
        k = (shift + h * 6.0) % 6.0
        out.append(v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(out, -1)


def _colours(rand, shape) -> torch.Tensor:
    """sRGB colours (shape..., 3) from a mix of vivid, pastel, neutral and earthy palettes."""
    n = 1
    for s in shape:
        n *= s
    style = rand.choice(n, [0.3, 0.2, 0.25, 0.25])
    hue = rand.u(n)
    sat = torch.where(style == 0, rand.u(n, 0.5, 0.95), torch.where(style == 1, rand.u(n, 0.1, 0.4),
                      torch.where(style == 2, rand.u(n, 0.0, 0.06), rand.u(n, 0.3, 0.75))))
    val = torch.where(style == 0, rand.u(n, 0.45, 0.95), torch.where(style == 1, rand.u(n, 0.75, 1.0),
                      torch.where(style == 2, rand.u(n, 0.04, 0.97), rand.u(n, 0.2, 0.7))))
    hue = torch.where(style == 3, rand.u(n, 0.03, 0.13), hue)
    return _hsv(hue, sat, val).view(*shape, 3)


def sample_materials(n: int, rand) -> Materials:
    """Materials for n objects, PARTS parts each (parts often share the first part's look)."""
    color_a = _colours(rand, (n, PARTS))
    share = rand.bern(n * PARTS, 0.45).view(n, PARTS, 1)
    share[:, 0] = False
    color_a = torch.where(share, color_a[:, :1], color_a)
    # The texture's second colour: a shade of the first, or another colour.
    shade = color_a * rand.u((n, PARTS, 1), 0.25, 0.7)
    light = color_a + (1 - color_a) * rand.u((n, PARTS, 1), 0.3, 0.8)
    other = _colours(rand, (n, PARTS))
    pick = rand.choice(n * PARTS, [1.0, 0.6, 1.0]).view(n, PARTS, 1)
    color_b = torch.where(pick == 0, shade, torch.where(pick == 1, light, other))
    metallic = (rand.u((n, PARTS)) < 0.12).float()
    metal_tint = _hsv(rand.u((n, PARTS), 0.05, 0.15), rand.u((n, PARTS), 0.0, 0.5), rand.u((n, PARTS), 0.6, 0.98))
    color_a = torch.where(metallic[..., None] > 0, metal_tint, color_a)
    roughness = rand.u((n, PARTS), 0.12, 0.9)
    texture = rand.choice(n * PARTS, [0.4, 0.15, 0.1, 0.2, 0.15]).view(n, PARTS)
    texture = torch.where(share[..., 0], texture[:, :1], texture)
    freq = torch.where(texture == CHECKER, rand.u((n, PARTS), 2.0, 6.0), rand.u((n, PARTS), 2.0, 10.0))
    axes = rand.rotation(n * PARTS).view(n, PARTS, 3, 3)
    grain = torch.ones(n, PARTS, 3, device=rand.device)
    grain[..., 0] = torch.where(texture == NOISE, rand.u((n, PARTS), 0.15, 1.0), 1.0)
    frame = axes * (freq[..., None] * grain)[..., None]
    seed = torch.randint(0, 1 << 20, (n, PARTS), generator=rand.gen, device=rand.device)
    return Materials(color_a=color_a ** 2.2, color_b=color_b.clamp(0, 1) ** 2.2, roughness=roughness,
                     metallic=metallic, texture=texture, frame=frame, seed=seed)
