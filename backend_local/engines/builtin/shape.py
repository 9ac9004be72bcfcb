"""Single-image shape reconstruction for the `builtin` engine.

From one RGBA image (alpha = foreground) we build a closed implicit solid in the *pixel frame*:
x = image column direction, y = image up (-row), z = toward the camera, unit = one input pixel,
origin at the image centre (a pixel's centre is at (col + 0.5 - W/2, H/2 - row - 0.5)).

The silhouette alone does not fix the depth, so we combine two generic shape priors and let the
shading of the image choose between their variants:

* Ball union ("medial-axis inflation"): every foreground pixel carries a ball whose radius is its
  distance to the background; the solid is the union of those balls with their centres on a
  (possibly tilted) plane. Right for tubes, blobs, rings, anything without a symmetry axis.
* Solid of revolution: when the silhouette is mirror-symmetric about a vertical axis, a stack of
  circular discs around that axis, tilted toward/away from the camera by an elevation angle e
  (discs project to ellipses of axis ratio sin e, so an elliptical base or rim is reproduced with
  its crease instead of being rounded off). Right for cones, cups, bottles, capsules, boxes seen
  as a rectangle (depth ~ width rather than ~ height). Parts of the silhouette the discs cannot
  explain (a mug handle) stay covered by the ball union.

Camera elevation tilts upright objects in the camera frame, and nothing in a silhouette tells
which way. Shading does: for every hypothesis (prior x tilt) we render its front-surface normals,
fit a uniform-albedo Lambertian light (ambient + directional, robust IRLS) and keep the hypothesis
whose normals explain the image best. When no hypothesis explains the shading (textured or
photographic albedo), we fall back to the silhouette-only prior.

All array work is torch, so it runs on CPU or CUDA; the final field is evaluated lazily on a grid
cropped to the object's bounding box and turned into a watertight mesh with marching cubes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field

import numpy as np
import torch
import torch.nn.functional as F

# Cells along the object's larger side for the 2D maps of the final field, and for the (cheaper)
# hypothesis test.
MAP_CELLS = 192
ESTIMATE_CELLS = 64
PAD_CELLS = 4
# Tilts tried, in degrees (positive: the object's top leans toward the camera, as seen from above).
MAX_TILT_DEG = 30
COARSE_TILTS_DEG = (-30, -20, -10, 0, 10, 20, 30)
FINE_STEP_DEG = 5
# A shading model that explains less than this fraction of the intensity variance is not trusted.
MIN_SHADING_R2 = 0.5
# Mirror symmetry / disc coverage needed before a solid of revolution is considered.
MIN_CORE_FRACTION = 0.6
MIN_REV_COVERAGE = 0.98
MIN_SOLIDITY_FOR_REV = 0.9
# Fewer foreground cells than this on the hypothesis maps: a wire-thin object, built as a ball union.
MIN_ESTIMATE_CELLS = 32
# Discs nested in another disc's ellipse up to this many cells count as redundant (discretisation).
NESTED_TOLERANCE = 0.5
# Grid samples closer to the surface than this many steps are evaluated exactly, not interpolated.
NARROW_BAND_STEPS = 4.0


@dataclass
class ShapeField:
    """Implicit solid in the pixel frame (negative inside, ~signed distance in pixels near the surface).

    The solid is defined by 2D maps on a regular grid of `cell`-pixel cells whose cell (0, 0) centre
    lies at pixel-frame (x0, y0) (x increases with the column index j, y decreases with the row index
    i). `values`/`grid_*` hold one 3D sampling of it (x, y, z order) made by `sample_grid`.
    """

    image_size: tuple  # (H, W) of the input image
    cell: float  # map cell size in pixels
    x0: float  # pixel-frame x of map column 0
    y0: float  # pixel-frame y of map row 0
    maps: torch.Tensor  # (3, n, m): ball-union power distance (<0 inside, px^2), radius of the ball
    #                     realising it (px), signed distance to the silhouette (>0 outside, px)
    tilt: float  # radians; ball centres and the revolution axis lean by this angle (top toward +z)
    y_mid: float  # pixel-frame y where the tilted centre plane crosses z = 0
    rev_axis_x: float | None = None  # pixel-frame x of the revolution axis (None: no revolution part)
    rev_table: torch.Tensor | None = None  # (2, n) disc radius (px) and its slope, per map row of the
    #                                        projected disc centre (`_capped` when rev_ends is set)
    rev_ends: tuple | None = None  # fractional map rows of its flat end discs (None: ends closed by the table)
    z_extent: tuple = (0.0, 0.0)  # (zmin, zmax) of the solid, pixels
    info: dict = dc_field(default_factory=dict)  # what was chosen and why
    values: torch.Tensor | None = None  # cached 3D grid (nx, ny, nz)
    grid_origin: tuple | None = None  # pixel-frame (x, y, z) of values[0, 0, 0]
    grid_step: float | None = None  # pixel size of one grid step
    gradient: torch.Tensor | None = None  # cached (1, 3, z, y, x) central differences of `values`
    multiview: object = None  # extra views (multiview.MultiViewField) that carve and stretch this field

    @property
    def device(self):
        return self.maps.device

    @property
    def mask(self):
        return self.maps[2] < 0


# ----------------------------------------------------------------------------------------------
# 2D building blocks


def _min_plus_1d(f, weight, dim):
    """min_q weight*(p-q)^2 + f(q) along `dim` (brute force, O(n^2) per line), with the argmin."""
    n = f.shape[dim]
    idx = torch.arange(n, device=f.device, dtype=f.dtype)
    d2 = weight * (idx[:, None] - idx[None, :]) ** 2  # (p, q)
    if dim == 0:
        vals, arg = (d2[:, :, None] + f[None, :, :]).min(1)
    else:
        vals, arg = (d2[None, :, :] + f[:, None, :]).min(2)
    return vals, arg


def _squared_distance(inside):
    """Exact squared Euclidean distance of every cell to the nearest cell where ~inside."""
    f = torch.where(inside, torch.full(inside.shape, 1e10, device=inside.device),
                    torch.zeros(inside.shape, device=inside.device))
    g, _ = _min_plus_1d(f, 1.0, 0)
    g, _ = _min_plus_1d(g, 1.0, 1)
    return g


def _ball_union_power(mask, centres=None):
    """2D power distance of the union of balls B(q, D(q)), D = distance to the background.

    P(p) = min_q |p-q|^2 - D(q)^2: negative exactly on the mask; sqrt(-P) is the half thickness of
    the ball union at p. Also returns the radius D(q*) of the ball attaining the minimum (used to
    turn P into a distance-like field). Separable, so two 1D min-plus passes.
    """
    dist = torch.sqrt(_squared_distance(mask)) - 0.5  # boundary half a cell outside the last cell
    centres = mask if centres is None else centres & mask
    r2 = torch.where(mask, dist.clamp(min=0.25) ** 2, torch.zeros_like(dist))
    f = torch.where(centres, -r2, torch.full_like(r2, 1e10))
    g, arg_i = _min_plus_1d(f, 1.0, 0)  # g[p_i, q_j] = min_qi (p_i-q_i)^2 + f(q_i, q_j)
    P, arg_j = _min_plus_1d(g, 1.0, 1)  # P[p_i, p_j]
    qi = torch.gather(arg_i, 1, arg_j)
    radius = torch.sqrt(r2[qi, arg_j]).clamp(min=0.5)
    return P, radius


def _signed_distance_2d(mask):
    d_out = torch.sqrt(_squared_distance(~mask))
    d_in = torch.sqrt(_squared_distance(mask))
    return torch.where(mask, -(d_in - 0.5), d_out - 0.5)


def _resample(rgba, cells, device):
    """Downsample the image so the object's larger side spans `cells` cells; crop to it.

    Returns (alpha, rgb, cell, x0, y0): float maps in [0, 1] and the pixel-frame position of the
    centre of map cell (0, 0).
    """
    H, W = rgba.shape[:2]
    a = rgba[..., 3] > 127
    rows, cols = np.nonzero(a)
    if rows.size == 0:
        raise ValueError("empty foreground: the alpha channel has no pixel above 127")
    side = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    scale = cells / float(side)
    hs, ws = max(int(round(H * scale)), 1), max(int(round(W * scale)), 1)
    img = torch.as_tensor(rgba, device=device).permute(2, 0, 1)[None].float() / 255.0
    img = torch.cat([img[:, :3] * img[:, 3:], img[:, 3:]], 1)  # premultiplied: background colour never leaks in
    small = F.interpolate(img, size=(hs, ws), mode="bilinear", antialias=True, align_corners=False)[0]
    cy, cx = H / hs, W / ws
    r0 = int(math.floor(rows.min() / cy)) - PAD_CELLS
    r1 = int(math.ceil((rows.max() + 1) / cy)) + PAD_CELLS
    c0 = int(math.floor(cols.min() / cx)) - PAD_CELLS
    c1 = int(math.ceil((cols.max() + 1) / cx)) + PAD_CELLS
    pad = (max(-c0, 0), max(c1 - ws, 0), max(-r0, 0), max(r1 - hs, 0))
    small = F.pad(small, pad)
    small = small[:, r0 + pad[2]:r1 + pad[2], c0 + pad[0]:c1 + pad[0]]
    cell = (cx + cy) / 2
    x0 = (c0 + 0.5) * cx - W / 2
    y0 = H / 2 - (r0 + 0.5) * cy
    return small[3], small[:3], cell, x0, y0


# ----------------------------------------------------------------------------------------------
# Hypotheses: ball union and solid of revolution, both tilted by an angle


def _symmetry_axis(mask):
    """Column (fractional, in cells) of the best vertical mirror axis and the mirrored overlap."""
    n, m = mask.shape
    cols = torch.nonzero(mask.any(0)).flatten()
    lo, hi = int(cols.min()), int(cols.max())
    best_axis, best_core = (lo + hi) / 2.0, None
    best_count = -1
    mf = mask.float()
    for twice in range(2 * lo, 2 * hi + 1):  # axis at twice/2: column j mirrors to twice - j
        j = torch.arange(m, device=mask.device)
        src = twice - j
        valid = (src >= 0) & (src < m)
        mirrored = torch.zeros_like(mf)
        mirrored[:, valid] = mf[:, src[valid]]
        count = float((mf * mirrored).sum())
        if count > best_count:
            best_count, best_axis, best_core = count, twice / 2.0, (mirrored > 0.5) & mask
    return best_axis, best_core


def _core_outline(core_alpha):
    """Sub-cell outline points (row, col) of a soft mask at alpha 0.5 (marching squares)."""
    from skimage import measure

    contours = measure.find_contours(core_alpha.detach().cpu().numpy().astype(np.float64), 0.5)
    if not contours:
        return None
    return torch.as_tensor(np.concatenate(contours), dtype=torch.float32, device=core_alpha.device)


def _rev_profile(core, axis_col, tilt, core_alpha=None):
    """Disc radius (cells) for each map row holding the projected disc centre on the axis.

    A disc of radius r tilted by `tilt` projects to an ellipse with semi-axes (r, r*sin|tilt|).
    The largest such ellipse centred on the axis that fits inside the symmetric core is found with
    an anisotropic distance: rows are stretched by 1/sin|tilt| so the ellipse becomes a circle.
    With `core_alpha` (the soft, anti-aliased core) the distance is to its sub-cell outline; cell
    centres alone quantise the radii, and their beat against a slanted edge shows as rings.
    """
    n, m = core.shape
    s = max(math.sin(abs(tilt)), 1e-3)
    rows = torch.arange(n, device=core.device, dtype=torch.float32)
    outline = _core_outline(core_alpha) if core_alpha is not None else None
    if outline is not None:
        di, dj, inset = outline[:, 0], outline[:, 1], 0.0
    else:
        out = torch.nonzero(~core)  # background cells (the map has a background margin)
        di, dj, inset = out[:, 0].float(), out[:, 1].float(), 0.5
    d2 = ((rows[:, None] - di[None, :]) / s) ** 2 + (axis_col - dj[None, :]) ** 2
    r = torch.sqrt(d2.min(1).values) - inset
    on_axis = core[:, int(round(axis_col))] | core[:, int(math.floor(axis_col))]
    r = torch.where(on_axis, r.clamp(min=0), torch.full_like(r, -1.0))
    if s > 2e-3:
        # Drop discs whose ellipse lies inside another disc's ellipse: they add volume the silhouette
        # does not ask for (a flat base would otherwise get a rounded "spinning top" bottom). In
        # rows stretched by 1/sin(tilt) the ellipses are circles on a line, nested iff
        # |u_j - u_k| <= r_j - r_k.
        u = rows / s
        cover = r[None, :] - (u[:, None] - u[None, :]).abs()
        cover.fill_diagonal_(-1e9)
        cover = torch.where(r[None, :] > 0, cover, torch.full_like(cover, -1e9))
        r = torch.where(r <= cover.max(1).values + NESTED_TOLERANCE, torch.full_like(r, -1.0), r)
    return r


def _rev_silhouette(profile, axis_col, tilt, shape):
    """Cells covered by the projected discs (ellipses) of a revolution profile."""
    n, m = shape
    s = max(math.sin(abs(tilt)), 1e-3)
    rows = torch.arange(n, device=profile.device, dtype=torch.float32)
    cols = torch.arange(m, device=profile.device, dtype=torch.float32)
    present = profile > 0
    k = rows[present]
    r = profile[present] + 1.0  # one cell of slack: the ball union only has to add what is missing
    if k.numel() == 0:
        return torch.zeros(shape, dtype=torch.bool, device=profile.device)
    # (row, disc) -> largest half width of the disc's ellipse on that row
    reach2 = r[None, :] ** 2 - ((rows[:, None] - k[None, :]) / s) ** 2
    half = torch.sqrt(reach2.clamp(min=0)).where(reach2 > 0, torch.full_like(reach2, -1.0)).max(1).values
    return (cols[None, :] - axis_col).abs() <= half[:, None]


def _rev_table(profile, cell, tilt):
    """(2, n) per-row table of disc radius (pixels) and d(radius)/d(axis position)."""
    r = profile * cell
    padded = F.pad(r[None, None], (1, 1), mode="replicate")[0, 0]
    slope = (padded[2:] - padded[:-2]) / (2 * cell * max(math.cos(tilt), 1e-3))
    return torch.stack([r, slope.clamp(-20, 20)])


def _sample_rows(table, row, fill):
    """Linear interpolation of a (C, n) table at fractional rows (...,); `fill` beyond the ends."""
    C, n = table.shape
    padded = torch.cat([fill[:, None].expand(C, 2), table, fill[:, None].expand(C, 2)], 1)
    gy = (row + 2) / (n + 3) * 2 - 1
    grid = torch.stack([torch.zeros_like(gy), gy], -1).reshape(1, -1, 1, 2)
    out = F.grid_sample(padded[None, :, :, None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape((C,) + row.shape)


def _rev_distance(xyz, axis_x, tilt, y_mid, table, y0, cell, ends=None):
    """Distance-like field of the solid of revolution at pixel-frame points xyz (..., 3).

    `ends` (fractional map rows of the first and last disc, see `_rev_ends`; the table then `_capped`)
    makes the two ends flat discs with exact distances along the axis. Without it the ends close the
    old way, the radius
    interpolated to nothing over one row: a cone whose field is steep along the axis and nearly flat
    across it (the slope is clamped at 20), which marching cubes turns into ripples (streaks on a mug's
    lid). The hypothesis test (`_rev_hypothesis`) still uses that closing: it was calibrated on it."""
    ct, st = math.cos(tilt), math.sin(tilt)
    x, y, z = xyz.unbind(-1)
    y = y - y_mid
    t = y * ct + z * st  # position along the axis (axis = (0, cos, sin) through (axis_x, y_mid, 0))
    rho = torch.sqrt((x - axis_x) ** 2 + (y - t * ct) ** 2 + (z - t * st) ** 2)
    # The disc at t projects its centre to pixel-frame y = y_mid + t*cos(tilt): a map row.
    row = (y0 - (y_mid + t * ct)) / cell
    fill = torch.tensor([-4.0 * cell, 0.0], device=table.device, dtype=table.dtype)
    r, slope = _sample_rows(table, row, fill)
    side = (rho - r) * torch.rsqrt(1 + slope * slope)  # ~ distance across a sloped profile
    if ends is None:
        return side
    t_top, t_bottom = ((y0 - end * cell - y_mid) / ct for end in ends)
    return torch.maximum(side, torch.maximum(t - t_top, t_bottom - t))


def _capped(table):
    """The revolution table with the rows beyond its first and last disc given those discs' radii and no
    slope: the side continues straight past the ends, where the end planes cut it."""
    present = torch.nonzero(table[0] > 0)
    if len(present) == 0:
        return table
    first, last = int(present[0, 0]), int(present[-1, 0])
    rows = torch.arange(table.shape[1], device=table.device)
    beyond = (rows < first) | (rows > last)
    ends = torch.where(rows < first, table[0, first], table[0, last])
    r = torch.where(beyond, ends, table[0])
    slope = torch.where(beyond | (rows == first) | (rows == last), torch.zeros_like(table[1]), table[1])
    return torch.stack([r, slope])


def _rev_ends(profile, alpha, axis_col):
    """Fractional map rows (top, bottom) of the solid of revolution's end discs, or None without discs.

    The profile's first and last rows are whole cells whose centres are inside the mask (alpha > 0.5);
    the outline's true end lies up to a cell beyond. Where alpha crosses 0.5 between the end row and
    the next one out, on the axis column, places it to a fraction of a cell (the resampling filter is
    symmetric, so the crossing of a step edge is unbiased). The same fraction is applied to the discs:
    with a tilt the outline's end is the end disc's ellipse, shifted from its centre row by a whole
    offset the profile already holds."""
    present = torch.nonzero(profile > 0).flatten()
    if len(present) == 0:
        return None
    first, last = int(present[0]), int(present[-1])
    column = alpha[:, int(round(float(axis_col)))].clamp(0, 1)
    inside = torch.nonzero(column > 0.5).flatten()
    if len(inside) == 0:
        return float(first), float(last)

    def beyond(k, outward):
        here = float(column[k])
        nxt = float(column[k + outward]) if 0 <= k + outward < len(column) else 0.0
        return min(max((here - 0.5) / max(here - nxt, 1e-6), 0.0), 1.0)

    return first - beyond(int(inside[0]), -1), last + beyond(int(inside[-1]), 1)


def _sample_maps(maps, x, y, x0, y0, cell):
    """Bilinear samples of the (C, n, m) maps at pixel-frame (x, y) (any shape) -> (C, ...)."""
    C, n, m = maps.shape
    gx = ((x - x0) / cell + 0.5) / m * 2 - 1
    gy = ((y0 - y) / cell + 0.5) / n * 2 - 1
    grid = torch.stack([gx, gy], -1).reshape(1, -1, 1, 2)
    out = F.grid_sample(maps[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape((C,) + x.shape)


def evaluate(fld: ShapeField, xyz: torch.Tensor) -> torch.Tensor:
    """Implicit function at pixel-frame points (..., 3): negative inside, ~distance in pixels."""
    xyz = xyz.to(fld.maps.dtype)
    if fld.multiview is not None:
        return fld.multiview.combine(xyz, lambda points: _single_view(fld, points))
    return _single_view(fld, xyz)


def _single_view(fld: ShapeField, xyz: torch.Tensor) -> torch.Tensor:
    """The single-image solid (see the module docstring)."""
    x, y, z = xyz.unbind(-1)
    P, R, s2 = _sample_maps(fld.maps, x, y, fld.x0, fld.y0, fld.cell)
    # Tilted ball union: |p - c|^2 - r^2 (the power distance) turned into ~ |p - c| - r.
    zc = math.tan(fld.tilt) * (y - fld.y_mid)
    d = torch.sqrt(((z - zc) ** 2 + P + R * R).clamp(min=0)) - R
    if fld.rev_table is not None:
        d = torch.minimum(d, _rev_distance(xyz, fld.rev_axis_x, fld.tilt, fld.y_mid, fld.rev_table, fld.y0, fld.cell,
                                           fld.rev_ends))
    return torch.maximum(d, s2)  # never leave the extrusion of the silhouette


# ----------------------------------------------------------------------------------------------
# Shading test


def _shading_target(rgb, mask):
    """Per-cell shading intensity (albedo-normalised brightness) and the cells it is valid on.

    Bright renders clip one channel first (a red ball saturates red long before green), so each
    cell uses only its unclipped channels, each divided by the object's colour in that channel.
    """
    unclipped = rgb < 0.98
    all_ok = mask & unclipped.all(0)
    if int(all_ok.sum()) < 32:
        return None, all_ok
    rho = rgb[:, all_ok].median(1).values.clamp(min=1e-3)  # object's colour, per channel
    w = unclipped.float() * rho[:, None, None]
    den = (w * rho[:, None, None]).sum(0)
    ok = mask & (den > 0.25 * float((rho * rho).sum()))  # enough of the colour is unclipped
    inten = (w * rgb).sum(0) / den.clamp(min=1e-6)
    return inten, ok


def _shading_r2(normals, inten, sel):
    """Robust fraction of variance of `inten` explained by ambient + one directional light."""
    y = inten[sel]
    B = torch.cat([torch.ones_like(y)[:, None], normals[sel]], 1)
    w = torch.ones_like(y)
    for _ in range(6):  # IRLS with Huber weights: specular highlights and texture are outliers
        sw = torch.sqrt(w)
        coef = torch.linalg.lstsq(B * sw[:, None], (y * sw)[:, None]).solution[:, 0]
        r = y - B @ coef
        s = 1.4826 * r.abs().median() + 1e-4
        w = (1.5 * s / r.abs().clamp(min=1e-9)).clamp(max=1.0)
    r = y - B @ coef
    mean = (w * y).sum() / w.sum()
    return float(1 - (w * r * r).sum() / (w * (y - mean) ** 2).sum().clamp(min=1e-12)), coef


def _front_normals(zf):
    """Normals of a front depth map (cells), central differences."""
    gx = (F.pad(zf[None, None], (1, 1, 0, 0), mode="replicate")[0, 0, :, 2:]
          - F.pad(zf[None, None], (1, 1, 0, 0), mode="replicate")[0, 0, :, :-2]) / 2
    gi = (F.pad(zf[None, None], (0, 0, 1, 1), mode="replicate")[0, 0, 2:, :]
          - F.pad(zf[None, None], (0, 0, 1, 1), mode="replicate")[0, 0, :-2, :]) / 2
    n = torch.stack([-gx, gi, torch.ones_like(gx)], 0)  # dz/dy = -dz/drow
    return (n / n.norm(dim=0, keepdim=True)).permute(1, 2, 0)


def _front_depth(fld_like, n, m, z_half):
    """Front depth map (cells) of an implicit `fld_like(xyz)` on an (n, m) unit-cell map."""
    nz = int(2 * z_half) + 3
    zs = torch.linspace(z_half + 1, -z_half - 1, nz)
    jj, ii = torch.meshgrid(torch.arange(m, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                            indexing="xy")
    xyz = torch.stack([jj[..., None].expand(n, m, nz), -ii[..., None].expand(n, m, nz),
                       zs.expand(n, m, nz)], -1)
    d = fld_like(xyz)  # (n, m, nz), z descending
    inside = d < 0
    hit = inside.any(2)
    k = torch.argmax(inside.int(), 2).clamp(min=1)
    d1 = torch.gather(d, 2, k[..., None])[..., 0]
    d0 = torch.gather(d, 2, (k - 1)[..., None])[..., 0]
    frac = (d0 / (d0 - d1).clamp(min=1e-6)).clamp(0, 1)
    step = zs[0] - zs[1]
    z = zs[k - 1] - frac * step
    return torch.where(hit, z, torch.zeros_like(z)), hit


def _ring_tilt(mask):
    """Tilt (radians, unsigned) of a ring, from a large hole whose major axis is horizontal.

    A hole through an object (torus, ring, wheel) is most often round in 3D; seen obliquely the
    ring's centre line becomes an ellipse with minor/major = cos(tilt). The hole alone overstates the
    tilt and the outline understates it (the tube's width adds to both axes), so both are combined.
    Returns None without such a hole (a mug handle's hole is vertical: no cue).
    """
    from scipy import ndimage

    m = mask.cpu().numpy()
    labels, count = ndimage.label(~m)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    best = None
    for lab in range(1, count + 1):
        if lab in border:
            continue
        ii, jj = np.nonzero(labels == lab)
        if ii.size < 0.05 * m.sum() or ii.size < 12:
            continue
        if best is None or ii.size > best[0].size:
            best = (ii, jj)
    if best is None:
        return None
    ii, jj = best
    hole_axes, hole_dir = _ellipse_axes(ii, jj)
    if abs(hole_dir[0]) < math.cos(math.radians(20)):  # major axis not horizontal: not a tilt about x
        return None
    filled = ndimage.binary_fill_holes(m)
    oi, oj = np.nonzero(filled)
    outer_axes, _ = _ellipse_axes(oi, oj)
    # A tube of radius r around a circle of radius R: outer semi-axes (R + r, R cos t + r), hole
    # semi-axes (R - r, R cos t - r); their sums cancel the tube: cos t = (b_o + b_h) / (a_o + a_h).
    ratio = (outer_axes[0] + hole_axes[0]) / (outer_axes[1] + hole_axes[1])
    return math.acos(min(ratio, 1.0))


def _ellipse_axes(ii, jj):
    """Semi-axes (minor, major) of the ellipse with the same second moments, and the major direction."""
    cov = np.cov(np.stack([jj, -ii]).astype(np.float64))
    evals, evecs = np.linalg.eigh(cov)
    return 2.0 * np.sqrt(np.maximum(evals, 0.0)), evecs[:, 1]


def _solidity(mask):
    """Area of the silhouette over the area of its convex hull."""
    from scipy.spatial import ConvexHull

    ii, jj = np.nonzero(mask.cpu().numpy())
    corners = np.concatenate([np.stack([ii + di, jj + dj], 1) for di in (0, 1) for dj in (0, 1)])
    return float(ii.size / ConvexHull(corners).volume)


def _peak(xs, ys, k):
    """Sub-grid position of a maximum at index k by a parabola through its neighbours."""
    if k == 0 or k == len(xs) - 1:
        return xs[k]
    y0, y1, y2 = ys[k - 1], ys[k], ys[k + 1]
    den = y0 - 2 * y1 + y2
    if den >= 0:
        return xs[k]
    return xs[k] + 0.5 * (xs[k + 1] - xs[k]) * (y0 - y2) / den


def _choose_hypothesis(alpha, rgb):
    """Pick the tilt and the prior (ball union or solid of revolution) on low-resolution maps.

    Returns (chosen hypothesis dict, symmetry axis column, info dict for logs/tests).
    """
    mask = alpha > 0.5
    n, m = mask.shape
    P, _ = _ball_union_power(mask)
    half = torch.sqrt((-P).clamp(min=0))
    rows = torch.nonzero(mask.any(1)).flatten()
    i_mid = (float(rows.min()) + float(rows.max())) / 2
    y_rel = (i_mid - torch.arange(n, dtype=torch.float32))[:, None]  # pixel-frame y (cells) - centre
    inten, ok = _shading_target(rgb, mask)
    # Shading is compared away from the silhouette, where the prior's normals are least certain.
    sel = ok & (_squared_distance(mask) > 4.0) if inten is not None else None
    usable = sel is not None and int(sel.sum()) >= 32

    def score(h):
        if usable:
            zf = torch.where(mask, h["zf"], torch.zeros_like(h["zf"]))
            h["r2"], h["light"] = _shading_r2(_front_normals(zf), inten, sel)
        else:
            h["r2"] = float("nan")
        return h

    ring_tilt = _ring_tilt(mask)
    # Ball-union normals barely change with a tilt (the fitted light absorbs it), so shading alone
    # cannot pick the tilt of a ball union: we tilt it only when a round hole shows the foreshortening
    # of a ring (its sign, toward or away from the camera, is then left to the shading).
    ball_tilts = (0.0,) if ring_tilt is None else (0.0, ring_tilt, -ring_tilt)
    outside = torch.full_like(half, -1e6)
    hyps = [score(dict(tilt=t, rev=False, zf=torch.where(mask, math.tan(t) * y_rel + half, outside))) for t in ball_tilts]

    axis_col, core = _symmetry_axis(mask)
    core_fraction = float(core.sum()) / float(mask.sum())
    revs = {}
    if core_fraction >= MIN_CORE_FRACTION:
        def rev_at(deg):
            if deg not in revs:
                h = _rev_hypothesis(mask, core, axis_col, i_mid, y_rel, math.radians(deg))
                revs[deg] = score(h) if h is not None else None
            return revs[deg]

        for deg in COARSE_TILTS_DEG:
            rev_at(deg)
        valid = {d: h for d, h in revs.items() if h is not None}
        if valid and usable:  # refine around the best coarse tilt
            d0 = max(valid, key=lambda d: valid[d]["r2"])
            for deg in (d0 - FINE_STEP_DEG, d0 + FINE_STEP_DEG):
                if abs(deg) <= MAX_TILT_DEG:
                    rev_at(deg)
    hyps += [h for h in revs.values() if h is not None]

    ball0 = hyps[0]
    rev0 = revs.get(0.0)
    # Without usable shading, a convex mirror-symmetric silhouette is most plausibly a solid of
    # revolution (can, jar, box, ball); anything else gets the ball union.
    default = rev0 if rev0 is not None and _solidity(mask) >= MIN_SOLIDITY_FOR_REV else ball0
    scored = [h for h in hyps if h["r2"] == h["r2"]]
    if ring_tilt is not None:  # the ring is tilted one way or the other; shading only picks the sign
        scored = [h for h in scored if h["rev"] or h["tilt"] != 0.0]
    best = max(scored, key=lambda h: h["r2"]) if scored else default
    reliable = bool(scored) and best["r2"] >= MIN_SHADING_R2
    chosen = dict(best if reliable else default)
    if reliable and chosen["rev"]:
        # Sub-step tilt: parabola through the best tilt and its two neighbours.
        d = round(math.degrees(best["tilt"]))
        lo, hi = revs.get(d - FINE_STEP_DEG), revs.get(d + FINE_STEP_DEG)
        if lo is not None and hi is not None:
            chosen["tilt"] = _peak([lo["tilt"], best["tilt"], hi["tilt"]], [lo["r2"], best["r2"], hi["r2"]], 1)
    info = dict(tilt_deg=math.degrees(chosen["tilt"]), revolution=chosen["rev"], shading_reliable=reliable,
                best_r2=best.get("r2"), ring_tilt_deg=None if ring_tilt is None else math.degrees(ring_tilt),
                axis_col=axis_col, core_fraction=core_fraction,
                table=[(round(math.degrees(h["tilt"]), 1), h["rev"], round(h["r2"], 4), round(h.get("coverage", 0), 4))
                       for h in hyps])
    return chosen, axis_col, info


def _rev_hypothesis(mask, core, axis_col, i_mid, y_rel, tilt):
    """Front depth (cells) of the solid of revolution at `tilt` united with the ball union of what its
    discs leave uncovered; None when the discs cannot reproduce the symmetric part of the silhouette."""
    n, m = mask.shape
    profile = _rev_profile(core, axis_col, tilt)
    present = profile > 0
    if float(profile.max()) <= 1.0:
        return None
    table = _rev_table(profile, 1.0, tilt)
    rows = torch.arange(n, dtype=torch.float32)[present]
    z_half = float(((i_mid - rows) * math.tan(tilt)).abs().max() + profile[present].max()) + 2

    def rev(xyz):
        return _rev_distance(xyz, axis_col, tilt, -i_mid, table, 0.0, 1.0)

    zf_rev, hit = _front_depth(rev, n, m, z_half)
    coverage = float((hit & mask).sum()) / float(core.sum())
    if coverage < MIN_REV_COVERAGE or float((hit & ~mask).sum()) > 0.02 * float(mask.sum()):
        return None
    rest = mask & ~_rev_silhouette(profile, axis_col, tilt, (n, m))
    P_rest, _ = _ball_union_power(mask, rest)
    zf_ball = torch.where(P_rest < 0, math.tan(tilt) * y_rel + torch.sqrt((-P_rest).clamp(min=0)),
                          torch.full_like(P_rest, -1e6))
    zf = torch.where(hit, torch.maximum(zf_rev, zf_ball), zf_ball)
    return dict(tilt=tilt, rev=True, zf=zf, coverage=coverage)


# ----------------------------------------------------------------------------------------------
# Public API


def reconstruct_field(rgba: np.ndarray, device: torch.device, seed: int = 0) -> ShapeField:
    """Closed implicit solid for one RGBA image (see module docstring). Deterministic (no randomness
    is used; `seed` is accepted for the engine interface)."""
    rgba = np.ascontiguousarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError("expected an HxWx4 RGBA image")
    device = torch.device(device) if device is not None else torch.device("cpu")
    H, W = rgba.shape[:2]

    # 1. Hypothesis test on small maps (always on CPU: tiny, latency-bound work).
    alpha_e, rgb_e, cell_e, x0_e, y0_e = _resample(rgba, ESTIMATE_CELLS, torch.device("cpu"))
    if int((alpha_e > 0.5).sum()) >= MIN_ESTIMATE_CELLS:
        chosen, axis_col_e, info = _choose_hypothesis(alpha_e, rgb_e)
    else:
        # A wire-thin object all but vanishes on the small maps: no shading or symmetry to test, and
        # a ball union (a tube along the outline) is the right prior for it anyway.
        chosen, axis_col_e = dict(tilt=0.0, rev=False), None
        info = dict(tilt_deg=0.0, revolution=False, shading_reliable=False, best_r2=float("nan"),
                    ring_tilt_deg=None, axis_col=None, core_fraction=0.0, table=[], thin=True)

    # 2. Final maps.
    alpha, _, cell, x0, y0 = _resample(rgba, MAP_CELLS, device)
    mask = alpha > 0.5
    if not bool(mask.any()):
        raise ValueError("foreground too small to reconstruct")
    rows = torch.nonzero(mask.any(1)).flatten()
    y_mid = y0 - cell * (float(rows.min()) + float(rows.max())) / 2
    tilt = chosen["tilt"]
    rev_axis_x = rev_profile = None
    centres = mask
    if chosen["rev"]:
        axis_col = _refine_axis(alpha, (x0_e + axis_col_e * cell_e - x0) / cell)
        rev_axis_x = x0 + axis_col * cell
        _, core = _mirror_core(mask, axis_col)
        rev_profile = _rev_profile(core, axis_col, tilt, core_alpha=torch.minimum(alpha, _mirror(alpha, axis_col)))
        # The ball union only covers what the discs leave out (a handle).
        centres = mask & ~_rev_silhouette(rev_profile, axis_col, tilt, mask.shape)
    P, radius = _ball_union_power(mask, centres)
    maps = torch.stack([P * cell * cell, radius * cell, _signed_distance_2d(mask) * cell])
    fld = ShapeField(image_size=(H, W), cell=cell, x0=x0, y0=y0, maps=maps, tilt=tilt, y_mid=y_mid,
                     rev_axis_x=rev_axis_x, info=info)

    # Exact depth range of the solid, so the marching-cubes grid hugs it.
    ys = y0 - cell * torch.arange(mask.shape[0], device=device, dtype=torch.float32)
    zc = math.tan(tilt) * (ys - y_mid)[:, None].expand_as(P)
    half = torch.sqrt((-maps[0]).clamp(min=0))
    balls = maps[0] < 0
    z_lo = float((zc - half)[balls].min()) if bool(balls.any()) else 0.0
    z_hi = float((zc + half)[balls].max()) if bool(balls.any()) else 0.0
    if rev_profile is not None:
        fld.rev_ends = _rev_ends(rev_profile, alpha, axis_col)
        fld.rev_table = _rev_table(rev_profile, cell, tilt)
        if fld.rev_ends is not None:
            fld.rev_table = _capped(fld.rev_table)
        present = rev_profile > 0
        zd = (ys - y_mid)[present] * math.tan(tilt)
        rd = rev_profile[present] * cell * math.cos(tilt)
        z_lo, z_hi = min(z_lo, float((zd - rd).min())), max(z_hi, float((zd + rd).max()))
    fld.z_extent = (z_lo - 2 * cell, z_hi + 2 * cell)
    return fld


def _refine_axis(alpha, axis_col, bin_width=0.05):
    """Sub-cell position of the symmetry axis on the final maps. Each row's run through the axis gives
    a midpoint (sub-cell edges from the soft mask); rows where something asymmetric sticks out (a
    handle) give scattered midpoints, the body's rows all give the same one, so take the mode. An
    axis half a cell off would make the left and right radii differ, which shows as bands wherever
    one side is hidden by an attachment."""
    values = alpha.detach().cpu().numpy()
    centre = int(round(axis_col))
    mids = []
    for row in values:
        if row[centre] <= 0.5:
            continue
        outside = np.flatnonzero(row < 0.5)
        left_out, right_out = outside[outside < centre], outside[outside > centre]
        if not len(left_out) or not len(right_out):
            continue
        l, r = left_out[-1], right_out[0]
        left = l + (0.5 - row[l]) / max(row[l + 1] - row[l], 1e-6)
        right = r - (0.5 - row[r]) / max(row[r - 1] - row[r], 1e-6)
        mids.append((left + right) / 2)
    if len(mids) < 3:
        return axis_col
    mids = np.asarray(mids)
    bins = np.round(mids / bin_width)
    values_, counts = np.unique(bins, return_counts=True)
    mode = values_[np.argmax(counts)] * bin_width
    near = mids[np.abs(mids - mode) <= bin_width]
    refined = float(near.mean())
    return refined if abs(refined - axis_col) <= 2.0 else axis_col


def _mirror(values, axis_col):
    """A map mirrored about the vertical axis at column `axis_col` (zero where it falls outside).
    Boolean maps take the nearest column; soft maps are interpolated, so a fractional axis stays
    exact (rounding it would make the two sides' radii differ by up to half a cell)."""
    m = values.shape[1]
    j = torch.arange(m, device=values.device)
    if values.dtype == torch.bool:
        src = torch.round(2 * axis_col - j).long()
        valid = (src >= 0) & (src < m)
        mirrored = torch.zeros_like(values)
        mirrored[:, valid] = values[:, src[valid]]
        return mirrored
    src = 2 * axis_col - j.to(values.dtype)
    low = torch.floor(src).long()
    frac = src - low
    padded = F.pad(values, (1, 2))                      # zeros beyond both ends
    left = padded[:, (low + 1).clamp(0, m + 2)]
    right = padded[:, (low + 2).clamp(0, m + 2)]
    return left * (1 - frac) + right * frac


def _mirror_core(mask, axis_col):
    mirrored = _mirror(mask, axis_col)
    return mirrored, mirrored & mask


def add_views(fld: ShapeField, views: dict, elevation_deg: float, front_image: np.ndarray,
              framings: dict = None) -> float:
    """Carve the field with extra views (name -> framed RGBA; see multiview.py); `framings` (name,
    "front" too -> foreground.frame's info) lets them be registered as one turntable. The field's
    samples and normals from now on include the views. `elevation_deg`: the single view's estimate, or
    None when it has none. Returns the camera elevation (degrees) the views agree on."""
    from . import multiview

    combined = multiview.build(lambda xyz: _single_view(fld, xyz.to(fld.maps.dtype)), views, elevation_deg,
                               front_image, framings)
    fld.multiview = combined
    fld.z_extent = combined.z_extent
    fld.values = fld.gradient = None
    fld.info.pop("grid_resolution", None)
    fld.info["views"] = dict(combined.info, cameras={c.name: dict(scale=round(c.scale, 4), cx=round(c.cx, 2),
                                                                   cy=round(c.cy, 2)) for c in combined.cameras})
    return combined.elevation_deg


def sample_grid(fld: ShapeField, resolution: int):
    """Evaluate the field on a regular grid with `resolution` cells along the object's largest side,
    cropped to its bounding box (plus a margin). Returns (values (nx, ny, nz), origin, step)."""
    mask = fld.mask
    ii = torch.nonzero(mask.any(1)).flatten()
    jj = torch.nonzero(mask.any(0)).flatten()
    xlo = fld.x0 + fld.cell * (float(jj.min()) - 1)
    xhi = fld.x0 + fld.cell * (float(jj.max()) + 1)
    yhi = fld.y0 - fld.cell * (float(ii.min()) - 1)
    ylo = fld.y0 - fld.cell * (float(ii.max()) + 1)
    zlo, zhi = fld.z_extent
    step = max(xhi - xlo, yhi - ylo, zhi - zlo) / float(resolution)
    margin = 2
    axes = []
    for lo, hi in ((xlo, xhi), (ylo, yhi), (zlo, zhi)):
        count = int(math.ceil((hi - lo) / step)) + 1 + 2 * margin
        count += 1 - count % 2  # odd, so every other sample forms the coarse grid
        centre = (lo + hi) / 2
        axes.append(centre + (torch.arange(count, dtype=torch.float32, device=fld.device) - (count - 1) / 2) * step)
    shape = tuple(a.numel() for a in axes)

    def at(ax, ay, az):
        X, Y, Z = torch.meshgrid(ax, ay, az, indexing="ij")
        return evaluate(fld, torch.stack([X, Y, Z], -1))

    # Narrow band: the field is distance-like, so a grid twice as coarse, interpolated, is accurate
    # enough far from the surface; only samples near it are evaluated exactly.
    coarse = at(axes[0][::2], axes[1][::2], axes[2][::2])
    values = F.interpolate(coarse[None, None], size=shape, mode="trilinear", align_corners=True)[0, 0]
    near = values.abs() < NARROW_BAND_STEPS * step
    idx = torch.nonzero(near, as_tuple=True)
    if idx[0].numel():
        pts = torch.stack([axes[0][idx[0]], axes[1][idx[1]], axes[2][idx[2]]], -1)
        values[idx] = torch.cat([evaluate(fld, c) for c in torch.split(pts, 1 << 21)])
    # A closed surface needs a positive border.
    values[0], values[-1] = values[0].clamp(min=step), values[-1].clamp(min=step)
    values[:, 0], values[:, -1] = values[:, 0].clamp(min=step), values[:, -1].clamp(min=step)
    values[:, :, 0], values[:, :, -1] = values[:, :, 0].clamp(min=step), values[:, :, -1].clamp(min=step)
    origin = (float(axes[0][0]), float(axes[1][0]), float(axes[2][0]))
    return values, origin, step


def _marching_cubes(values, step):
    from skimage import measure

    vol = values.detach().to("cpu", torch.float32).numpy()
    # Keep vertices off the grid nodes: a node at ~0 makes several edges put (almost) coincident
    # vertices there, which a later vertex merge turns into non-manifold edges.
    eps = np.float32(1e-3 * step)
    vol = np.where(np.abs(vol) < eps, eps, vol)
    return measure.marching_cubes(vol, 0.0)[:2]


def count_surface_faces(values, step):
    """Triangles marching cubes makes of a sampled field (a cheap probe of the surface's size)."""
    return len(_marching_cubes(values, step)[1])


def extract_mesh(fld: ShapeField, resolution: int):
    """Watertight, outward-oriented triangle mesh of the field (pixel frame, float64 / int64)."""
    if fld.values is None or fld.values.shape[0] == 0 or fld.info.get("grid_resolution") != resolution:
        fld.values, fld.grid_origin, fld.grid_step = sample_grid(fld, resolution)
        fld.gradient = None
        fld.info["grid_resolution"] = resolution
    verts, faces = _marching_cubes(fld.values, fld.grid_step)
    verts = verts.astype(np.float64) * fld.grid_step + np.asarray(fld.grid_origin)
    # With values negative inside and the (x, y, z) axis order (right-handed), skimage's default
    # winding already faces outward: the volume is positive.
    return verts, faces.astype(np.int64)


def _grid_gradient(fld: ShapeField, pts):
    """Field gradient at points, trilinearly interpolated from central differences of the sampled grid
    (computed once per field): ~20x cheaper than exact evaluation, and as smooth at the grid's scale."""
    if fld.gradient is None:
        grads = torch.gradient(fld.values.to(torch.float32), spacing=fld.grid_step)
        fld.gradient = torch.stack(grads, 0).permute(0, 3, 2, 1).contiguous()[None]
    volume = fld.gradient
    sizes = torch.tensor([volume.shape[4], volume.shape[3], volume.shape[2]], device=pts.device, dtype=torch.float32)
    origin = torch.tensor(fld.grid_origin, device=pts.device, dtype=torch.float32)
    coords = (pts - origin) / (fld.grid_step * (sizes - 1)) * 2 - 1
    sampled = F.grid_sample(volume.to(pts.device), coords.view(1, 1, 1, -1, 3), mode="bilinear",
                            padding_mode="border", align_corners=True)
    return sampled.view(3, -1).T


def field_normals(fld: ShapeField, points_xyz):
    """Smooth outward unit normals at pixel-frame points (N, 3): the normalised gradient of the field,
    from the mesh-extraction grid when it has been sampled, else by exact central differences half a
    map cell wide. Returns the input's type (numpy float64, or a torch tensor of the input's dtype and
    device)."""
    pts = torch.as_tensor(np.asarray(points_xyz) if isinstance(points_xyz, np.ndarray) else points_xyz)
    out_dtype, out_device = pts.dtype if pts.is_floating_point() else torch.float32, pts.device
    pts = pts.to(fld.device, torch.float32)
    if fld.values is not None and fld.values.numel():
        g = _grid_gradient(fld, pts)
    else:
        eps = 0.5 * fld.cell
        offsets = torch.eye(3, device=pts.device) * eps
        g = torch.stack([evaluate(fld, pts + o) - evaluate(fld, pts - o) for o in offsets], -1)
    n = g / g.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    if isinstance(points_xyz, np.ndarray):
        return n.cpu().numpy().astype(np.float64)
    return n.to(out_device, out_dtype)
