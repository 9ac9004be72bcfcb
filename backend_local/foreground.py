"""Foreground extraction and framing.

A real alpha channel always wins. Otherwise the background is removed by rembg when it and its model
are already installed (never downloaded here), else by a weight-free method: a colour model of the
image border seeds OpenCV's GrabCut, whose result is cleaned up (small specks dropped, pinholes
filled, real holes such as a mug handle's kept).
"""

import os

import cv2
import numpy as np

from shared.errors import EMPTY_FOREGROUND, Gen3DError

WORK_SIDE = 512          # background removal runs at this size; the mask is upscaled afterwards
BORDER = 0.03            # share of each side sampled as "surely background"
FILL = 0.85              # the object's larger side fills this share of the framed square
MIN_FOREGROUND = 0.002   # below this share of the image there is no usable object
OUTPUT_SIDES = (512, 1024)


def empty_foreground(why):
    return Gen3DError(EMPTY_FOREGROUND, "No object was found in the image (%s). Use an image where the object "
                      "stands out from a plain background, or give it a transparent background." % why,
                      stage="preprocess", retryable=False)


def foreground_rgba(array, has_alpha, remove_background, seed, check=None, cut_out=None):
    """RGBA uint8 with the object's alpha, at the input's size. `check` is called between iterations
    (it raises to cancel). `cut_out(rgb) -> alpha or None` is an engine's own background remover,
    tried first (the Hunyuan engines use their library's)."""
    if has_alpha:
        return array
    rgb = array[..., :3]
    if not remove_background:
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
    else:
        alpha = cut_out(rgb) if cut_out is not None else None
        if alpha is None:
            alpha = _rembg_alpha(rgb)
        if alpha is None:
            alpha = grabcut_alpha(rgb, seed, check)
    return np.dstack([rgb, alpha])


def _rembg_alpha(rgb):
    """rembg's mask when rembg and its default model are already on disk; None otherwise."""
    try:
        import rembg  # noqa: F401  (optional dependency)
    except Exception:
        return None
    home = os.environ.get("U2NET_HOME", os.path.join(os.path.expanduser("~"), ".u2net"))
    model = os.path.join(home, "u2net.onnx")
    if not os.path.isfile(model):
        return None
    from PIL import Image
    session = rembg.new_session("u2net")
    cut = rembg.remove(Image.fromarray(rgb), session=session, only_mask=True)
    return np.asarray(cut.convert("L"), dtype=np.uint8)


def _border_mask(shape):
    h, w = shape
    b = max(2, int(round(min(h, w) * BORDER)))
    border = np.zeros((h, w), bool)
    border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
    return border


def _background_model(lab, border):
    """Fit each Lab channel of the border as a quadratic in (x, y): plain studio backgrounds have a
    gradient or vignette, so a smooth model separates them from the object far better than one colour.
    Returns (per-pixel residual to the model, robust noise level, share of border pixels explained)."""
    h, w = lab.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx / w - 0.5, yy / h - 0.5
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy], axis=-1)
    a, b = basis[border], lab[border]
    # Start from the median colour: a least-squares start would let the quadratic bend toward an
    # object that crosses one side of the frame and then call the whole border noisy.
    err = np.linalg.norm(b - np.median(b, axis=0), axis=1)
    keep = err < max(3.0 * (1.4826 * np.median(err) + 1e-3), 2.0)
    if keep.mean() < 0.5:
        keep = np.ones(len(a), bool)
    for _ in range(3):  # refit without the border pixels the object or clutter covers
        coef, *_ = np.linalg.lstsq(a[keep], b[keep], rcond=None)
        err = np.linalg.norm(b - a @ coef, axis=1)
        scale = 1.4826 * np.median(err[keep]) + 1e-3
        keep = err < max(3.0 * scale, 2.0)
    residual = np.linalg.norm(lab - basis @ coef, axis=-1)
    return residual, float(scale), float(keep.mean())


def grabcut_alpha(rgb, seed, check=None, iterations=5):
    """Weight-free background removal: a border background model seeding GrabCut. Returns alpha uint8."""
    h, w = rgb.shape[:2]
    scale = WORK_SIDE / max(h, w)
    small = cv2.resize(rgb, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA) \
        if scale < 1 else rgb.copy()
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    border = _border_mask(lab.shape[:2])
    residual, noise, explained = _background_model(lab, border)
    cv2.setRNGSeed(int(seed) % (2 ** 31))
    interior = None
    if explained > 0.8 and noise < 4.0:
        mask, interior = _plain_background_seeds(lab, residual, noise, border)
    else:
        mask = _cluttered_seeds(lab.shape[:2], border)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    for iteration in range(iterations):  # one at a time, so a cancel is noticed within ~0.5 s
        if check is not None:
            check()
        cv2.grabCut(bgr, mask, None, bgd, fgd, 1, cv2.GC_INIT_WITH_MASK if iteration == 0 else cv2.GC_EVAL)
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
    if interior is not None:
        fg |= interior  # GrabCut only settles the outline; inside it, trust the edge-bounded flood fill
    fg = clean_mask(fg)
    # GrabCut's mask is hard-edged; a one-pixel feather gives the outline the sub-pixel position an
    # anti-aliased edge has, so shapes traced from it come out smooth instead of stair-stepped.
    alpha = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 1.0)
    if scale < 1:
        alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)


def _plain_background_seeds(lab, residual, noise, border):
    """GrabCut seeds for a plain background, plus the object's interior.

    Pixels that match the background model and connect to the border without crossing an edge are
    surely background; enclosed background-like regions count as holes only when edges ring them
    (a mug handle's hole), not when they are merely object parts coloured like the background (the
    shaded bands of a white mug). Returns (seeds, interior) where interior is surely object."""
    threshold = max(3.0, 6.0 * noise)
    lightness = cv2.GaussianBlur(lab[..., 0], (0, 0), 1.0)
    low = max(4.0, 4.0 * noise)
    edges = cv2.Canny(np.clip(lightness, 0, 255).astype(np.uint8), low, 2.5 * low, L2gradient=True)
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8)) > 0
    # Close small gaps in the object's outline (a white mug's rim fades into a white backdrop for a
    # few pixels) so the flood fill from the border cannot leak inside.
    gap = max(3, int(round(0.025 * max(residual.shape)))) | 1
    barrier = cv2.morphologyEx((edges | (residual >= threshold)).astype(np.uint8), cv2.MORPH_CLOSE,
                               cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (gap, gap))) > 0
    near = (residual < threshold) & ~edges
    count, labels = cv2.connectedComponents((near & ~barrier).astype(np.uint8), connectivity=4)
    border_labels = np.unique(labels[border & near & ~barrier])
    outside = np.isin(labels, border_labels[border_labels > 0])
    if outside.all() or not (residual > threshold).any():
        raise empty_foreground("the image looks like plain background")
    outside &= ~_leaked(outside, edges, border, gap)
    holes = np.zeros_like(outside)
    ring = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    for index in range(1, count):
        if index in border_labels:
            continue
        region = labels == index
        rim = (cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~region
        if rim.any() and (ring[rim]).mean() > 0.9 and residual[region].mean() < threshold / 2:
            holes |= region
    background = outside | holes
    kernel = np.ones((5, 5), np.uint8)
    seeds = np.full(residual.shape, cv2.GC_PR_FGD, np.uint8)
    seeds[near] = cv2.GC_PR_BGD
    # Only background far from the object is certain: a leak of the flood fill into a part of the object
    # coloured like the backdrop then stays "probable", for GrabCut to settle.
    far = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * gap + 1, 4 * gap + 1))
    seeds[cv2.erode(outside.astype(np.uint8), far) > 0] = cv2.GC_BGD
    seeds[holes] = cv2.GC_PR_BGD
    interior = cv2.erode((~background).astype(np.uint8), kernel) > 0
    seeds[interior & (residual > 3 * threshold)] = cv2.GC_FGD
    # The border is background only where it looks like the backdrop: an object cut off by the frame
    # keeps its pixels there (forcing them to background taught GrabCut the object's colour as
    # background, and the whole object vanished).
    seeds[border & (residual < threshold)] = cv2.GC_BGD
    return seeds, interior


LEAK_MAX_EDGE_SHARE = 0.5   # a region cut off from the backdrop by a narrow neck, touching the object
                            # mostly without an edge between them, is part of the object


def _leaked(outside, edges, border, gap):
    """Parts of `outside` that the flood fill reached through a gap in a faint outline wider than the
    gap closing: an object part coloured like the backdrop (the highlight band of a white mug on white).

    Narrow necks are cut by an erosion as wide as twice the closing; a part so cut off from the
    border's background is a leak when most of its contact with the object has no edge (a shading band
    runs smoothly into the rest of the object), while a real background pocket (between an arm and a
    body) is ringed by the object's outline. Returns a bool mask."""
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
    core = cv2.erode(outside.astype(np.uint8), disc)          # necks narrower than the disc vanish
    count, labels = cv2.connectedComponents(core, connectivity=4)
    if count <= 2:
        return np.zeros_like(outside)
    joined = np.unique(labels[border & (core > 0)])
    main = np.isin(labels, joined[joined > 0]).astype(np.uint8)
    # everything of `outside` but the backdrop proper (its opening): cut-off parts with their necks
    rest = outside & ~(cv2.dilate(main, disc) > 0)
    _, pieces = cv2.connectedComponents(rest.astype(np.uint8), connectivity=8)
    leaked = np.zeros_like(outside)
    cross = np.ones((3, 3), np.uint8)
    for index in range(1, count):
        if index in joined:
            continue
        touching = np.unique(pieces[labels == index])
        region = np.isin(pieces, touching[touching > 0])
        contact = (cv2.dilate(region.astype(np.uint8), cross) > 0) & ~outside
        if contact.any() and edges[contact].mean() < LEAK_MAX_EDGE_SHARE:
            leaked |= region
    return leaked


def _cluttered_seeds(shape, border):
    """A busy photo: the usual GrabCut framing, the border as background and the middle as probable object."""
    mask = np.full(shape, cv2.GC_PR_BGD, np.uint8)
    h, w = shape
    mask[int(h * 0.1):int(h * 0.9), int(w * 0.1):int(w * 0.9)] = cv2.GC_PR_FGD
    mask[border] = cv2.GC_BGD
    return mask


def clean_mask(fg, keep_ratio=0.1, hole_ratio=0.002):
    """Drop specks (components under keep_ratio of the largest) and fill pinholes (under hole_ratio of the
    object), keeping larger holes that are part of the object's shape."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    if count <= 1:
        return fg
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= keep_ratio * areas.max())
    fg = np.isin(labels, keep)
    holes = ~fg
    count, labels, stats, _ = cv2.connectedComponentsWithStats(holes.astype(np.uint8), connectivity=4)
    limit = hole_ratio * fg.sum()
    for index in range(1, count):
        x, y, w, h, area = stats[index]
        touches_border = x == 0 or y == 0 or x + w == fg.shape[1] or y + h == fg.shape[0]
        if not touches_border and area < limit:
            fg[labels == index] = True
    return fg


def frame(rgba):
    """Crop to the object, centre it in a square with a margin, and resize the square to 512..1024 px.

    Returns (framed RGBA uint8, info) where info records the crop for anyone mapping back: the square
    [x0, y0, side, side] in the input's pixels, the framed size, and the input's [height, width].
    """
    alpha = rgba[..., 3]
    solid = alpha > 127
    if solid.mean() < MIN_FOREGROUND or solid.sum() < 64:
        raise empty_foreground("the foreground covers %.2f%% of the image" % (100 * solid.mean()))
    rows, cols = np.flatnonzero(solid.any(1)), np.flatnonzero(solid.any(0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = int(np.ceil(max(bottom - top, right - left) / FILL))
    cy, cx = (top + bottom) / 2.0, (left + right) / 2.0
    y0, x0 = int(round(cy - side / 2.0)), int(round(cx - side / 2.0))
    canvas = np.zeros((side, side, 4), np.uint8)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + side, rgba.shape[0]), min(x0 + side, rgba.shape[1])
    canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgba[sy0:sy1, sx0:sx1]
    canvas[canvas[..., 3] == 0, :3] = 0
    out_side = int(min(max(side, OUTPUT_SIDES[0]), OUTPUT_SIDES[1]))
    if out_side != side:
        interpolation = cv2.INTER_AREA if out_side < side else cv2.INTER_LINEAR
        canvas = _resize_rgba(canvas, out_side, interpolation)
    return canvas, {"crop": [int(x0), int(y0), side, side], "size": out_side, "raw": list(rgba.shape[:2])}


def _resize_rgba(rgba, side, interpolation):
    """Resize with premultiplied alpha so background colour never bleeds into the edges."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    premultiplied = rgba[..., :3].astype(np.float32) * alpha
    rgb = cv2.resize(premultiplied, (side, side), interpolation=interpolation)
    a = np.clip(cv2.resize(alpha[..., 0], (side, side), interpolation=interpolation), 0, 1)
    rgb = np.where(a[..., None] > 1e-3, rgb / np.maximum(a[..., None], 1e-3), 0)
    out = np.dstack([np.clip(rgb + 0.5, 0, 255), np.clip(a * 255 + 0.5, 0, 255)]).astype(np.uint8)
    out[out[..., 3] == 0, :3] = 0
    return out
