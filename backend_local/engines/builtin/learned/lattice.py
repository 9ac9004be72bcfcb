"""Signed distances on regular lattices, evaluated sparsely, and object extents measured on them.

lattice_sdf evaluates a res^3 lattice block by block: a block whose centre is far enough from the
surface (by the Lipschitz bound) is filled without evaluating its cells, since every cell in it is
then farther than the band asked for and on the same side. Only the blocks near the surface, a
fraction of the lattice, pay for full evaluation.
"""

from __future__ import annotations

from typing import Callable

import torch

BLOCK = 4


def compact(mask: torch.Tensor) -> torch.Tensor:
    """Column indices (B, M) that list each row's true entries first, M = the largest count
    (rows with fewer are padded with some of their false entries)."""
    m = int(mask.sum(1).max().item()) if mask.numel() else 0
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    return order[:, :m]


def lattice_sdf(fn: Callable[[torch.Tensor], torch.Tensor], origin: torch.Tensor, steps: torch.Tensor,
                res: int, band: torch.Tensor | float) -> torch.Tensor:
    """fn at the points origin + (i + 1/2) steps[0] + (j + 1/2) steps[1] + (k + 1/2) steps[2],
    shaped (B, res, res, res) [i, j, k]. origin (B, 3); steps (B, 3, 3), rows orthogonal.

    Exact wherever |fn| < band (B,); elsewhere the value has the right sign and |value| >= band
    (so clamp(value, -band, band) is the exact truncated distance)."""
    b = origin.shape[0]
    band = torch.as_tensor(band, dtype=origin.dtype, device=origin.device).expand(b)
    if res % BLOCK or res <= BLOCK:
        k = torch.arange(res, device=origin.device, dtype=origin.dtype) + 0.5
        idx = torch.stack(torch.meshgrid(k, k, k, indexing="ij"), -1).reshape(1, -1, 3)
        return fn(origin[:, None, :] + idx @ steps).view(b, res, res, res)
    nb = res // BLOCK
    kc = torch.arange(nb, device=origin.device, dtype=origin.dtype) * BLOCK + BLOCK / 2
    centres = torch.stack(torch.meshgrid(kc, kc, kc, indexing="ij"), -1).reshape(1, -1, 3)
    dc = fn(origin[:, None, :] + centres @ steps)                           # (B, nb^3)
    reach = 0.5 * (BLOCK - 1) * steps.sum(1).norm(dim=-1)                 # block centre to its farthest cell
    far = dc.abs() >= (reach + band)[:, None]
    fill = dc - torch.sign(dc) * reach[:, None]                           # same sign, |fill| >= band
    values = fill[..., None].expand(b, nb ** 3, BLOCK ** 3).clone()
    active = compact(~far)                                                 # (B, M) blocks to evaluate
    if active.shape[1]:
        kl = torch.arange(BLOCK, device=origin.device, dtype=origin.dtype) + 0.5
        local = torch.stack(torch.meshgrid(kl, kl, kl, indexing="ij"), -1).reshape(-1, 3)
        corner = torch.stack(torch.meshgrid(*(torch.arange(nb, device=origin.device, dtype=origin.dtype) * BLOCK,) * 3,
                                            indexing="ij"), -1).reshape(-1, 3)
        idx = corner[active][:, :, None, :] + local                         # (B, M, b^3, 3)
        m = active.shape[1]
        d = fn(origin[:, None, :] + idx.reshape(b, -1, 3) @ steps).view(b, m, BLOCK ** 3)
        values.scatter_(1, active[..., None].expand(b, m, BLOCK ** 3), d)
    values = values.view(b, nb, nb, nb, BLOCK, BLOCK, BLOCK).permute(0, 1, 4, 2, 5, 3, 6)
    return values.reshape(b, res, res, res)


def grid_bounds(fn: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor,
                res: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bounds of {fn < 0} inside the boxes lo..hi (B, 3) from a res^3 grid of cell centres.

    Returns (outer_lo, outer_hi, inner_lo, inner_hi). Outer is sure to hold the shape: every
    surface point lies in the cell of a centre p with fn(p) <= the half cell diagonal (fn is
    Lipschitz <= 1), so widening those centres' extent by half a cell is conservative (about
    1.4 cells too wide where fn is an exact distance, more where it underestimates). Inner is
    the extent of the centres inside the shape (inf / -inf when none is: a part thinner than a
    cell)."""
    b = lo.shape[0]
    cell = (hi - lo) / res
    radius = 0.5 * cell.norm(dim=-1)
    d = lattice_sdf(fn, lo, torch.diag_embed(cell), res, band=radius)
    index = torch.arange(res, device=lo.device, dtype=lo.dtype)

    def extent(mask):
        """Lowest / highest occupied centre per axis (B, 3), +-inf where none is."""
        lows, highs = [], []
        for axis in range(3):
            profile = mask.any(dim=[a for a in (1, 2, 3) if a != axis + 1])   # (B, res)
            low = torch.where(profile, index, torch.inf).min(1).values
            high = torch.where(profile, index, -torch.inf).max(1).values
            lows.append(low)
            highs.append(high)
        low, high = torch.stack(lows, -1), torch.stack(highs, -1)
        return lo + (low + 0.5) * cell, lo + (high + 0.5) * cell

    near_lo, near_hi = extent(d <= radius[:, None, None, None])
    inner_lo, inner_hi = extent(d <= 0.0)
    empty = ~torch.isfinite(near_lo).all(-1, keepdim=True)
    outer_lo = torch.where(empty, lo, near_lo - 0.5 * cell)
    outer_hi = torch.where(empty, hi, near_hi + 0.5 * cell)
    return outer_lo, outer_hi, inner_lo, inner_hi


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


