"""Foreground extraction and framing.

A real alpha channel always wins. Otherwise the background is removed by an engine's own remover, by
rembg when it and its model are already installed (never downloaded here), else by the weight-free
cut-out (builtin_cut_out; docs/FOREGROUND.md): a backdrop model from the image border in Lab, an
edge-bounded flood fill, GrabCut on the undecided pixels and a soft alpha unmixed along the outline.
It reports a confidence; an unsure cut-out is recorded in meta.json and shown as a warning.
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
    """RGBA uint8 with the object's alpha, at the input's size (see foreground_with_record)."""
    return foreground_with_record(array, has_alpha, remove_background, seed, check, cut_out)[0]


def foreground_with_record(array, has_alpha, remove_background, seed, check=None, cut_out=None):
    """(RGBA uint8 with the object's alpha at the input's size, record) where record is meta.json's
    `foreground` entry: {"method": alpha|none|engine|rembg|builtin, "confidence": 0..1 or None,
    "unsure": bool, "reasons": [plain words]}. `check` is called between iterations (it raises to
    cancel). `cut_out(rgb) -> alpha or None` is an engine's own background remover, tried first (the
    Hunyuan engines use their library's)."""
    if has_alpha:
        return array, _record("alpha")
    rgb = array[..., :3]
    if not remove_background:
        return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), _record("none")
    alpha = cut_out(rgb) if cut_out is not None else None
    if alpha is not None:
        return np.dstack([rgb, alpha]), _record("engine")
    alpha = _rembg_alpha(rgb)
    if alpha is not None:
        return np.dstack([rgb, alpha]), _record("rembg")
    result = builtin_cut_out(rgb, seed, check)
    return np.dstack([rgb, result.alpha]), result.record()


def _record(method):
    """Methods that do not measure their own confidence (a real alpha needs none)."""
    return {"method": method, "confidence": None, "unsure": False, "reasons": []}


def unsure_warning(record, what="the image"):
    """The plain-words warning for an unsure cut-out (meta.json `warnings`, CLI, add-on), or None."""
    if not record or not record.get("unsure"):
        return None
    return ("The background removal of %s is unsure (%s). Check input.png in the result: an image with a "
            "transparent background, or the object on a plain backdrop, gives a clean cut-out."
            % (what, "; ".join(record.get("reasons") or ["low confidence"])))


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


class CutOut:
    """A weight-free cut-out: `alpha` (uint8, the input's size), `confidence` in 0..1, `unsure` (the
    confidence is below UNSURE_BELOW) and `reasons`, plain words for each doubt."""

    def __init__(self, alpha, confidence, reasons):
        self.alpha, self.confidence, self.reasons = alpha, float(confidence), list(reasons)
        self.unsure = self.confidence < UNSURE_BELOW

    def record(self):
        """The meta.json `foreground` entry."""
        return {"method": "builtin", "confidence": round(self.confidence, 3), "unsure": bool(self.unsure),
                "reasons": self.reasons}


UNSURE_BELOW = 0.5
PASSES = 3
THRESHOLD_FLOOR = 3.0    # Lab units: a white mug's shading differs from a white backdrop by a few units
EDGE_FLOOR = 20.0        # Sobel magnitude of 0..255 lightness for a strong edge: above JPEG q75 ringing
GRABCUT_FULL_PIXELS = 60000   # undecided pixels above which GrabCut runs at half resolution
BUSY_NOISE = 10.0        # Lab units of backdrop texture left by the local model: above it the backdrop is
                         # a sharp, cluttered scene rather than a sweep, a wall or a defocused room


def _lab(rgb):
    """CIE Lab (L 0..100) of an image, smoothed so that JPEG's 8x8 block steps and its half-resolution
    chroma (4:2:0) do not read as structure: lightness by a 1 px Gaussian, chroma by 2 px."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.GaussianBlur(lab[..., 0], (0, 0), 1.0)
    lab[..., 1:] = cv2.GaussianBlur(lab[..., 1:], (0, 0), 2.0)
    return lab


def _quadratic_basis(h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx / w - 0.5, yy / h - 0.5
    return np.stack([np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy], axis=-1)


def _border_fit(lab, border):
    """Fit each Lab channel of the border as a quadratic in (x, y) (studio sweeps have a gradient or a
    vignette). Returns (the surface over the whole image, share of border pixels it explains, their
    robust residual scale)."""
    basis = _quadratic_basis(*lab.shape[:2])
    a, b = basis[border], lab[border]
    # Start from the median colour: a least-squares start would bend toward an object crossing one
    # side of the frame and call the whole border noisy.
    err = np.linalg.norm(b - np.median(b, axis=0), axis=1)
    keep = err < max(3.0 * (1.4826 * np.median(err) + 1e-3), 1.0)
    if keep.mean() < 0.5:
        keep = np.ones(len(a), bool)
    for _ in range(3):  # refit without the border pixels the object or clutter covers
        coef, *_ = np.linalg.lstsq(a[keep], b[keep], rcond=None)
        err = np.linalg.norm(b - a @ coef, axis=1)
        scale = 1.4826 * np.median(err[keep]) + 1e-3
        keep = err < max(3.0 * scale, 1.0)
    return basis @ coef, float(keep.mean()), float(scale)


def _local_surface(lab, background, fallback, sigma):
    """The background's colour everywhere, interpolated from the pixels known to be background by a
    normalised Gaussian (a defocused photo or an uneven wall is smooth but no quadratic); far from any
    known background (inside a large object) it falls back to the border's quadratic."""
    weight = background.astype(np.float32)
    blurred_w = cv2.GaussianBlur(weight, (0, 0), sigma)
    blurred = cv2.GaussianBlur(lab * weight[..., None], (0, 0), sigma)
    eps = 1e-2
    return (blurred + eps * fallback) / (blurred_w[..., None] + eps)


def _edges(lab, border):
    """Canny edges of lightness and of chroma. The thresholds sit above the backdrop's own gradients
    (measured on the border: a defocused photo's are weak, an object's outline is sharp) and above
    JPEG's ringing (EDGE_FLOOR, in Sobel units of the 0..255 lightness: about a 5-level step, for
    the strong threshold)."""
    edges = np.zeros(lab.shape[:2], np.uint8)
    for channel, gain in ((lab[..., 0] * 2.55, 1.0), (np.linalg.norm(lab[..., 1:], axis=-1) * 2.0, 1.5)):
        image = np.clip(channel, 0, 255).astype(np.uint8)
        magnitude = np.hypot(cv2.Sobel(image, cv2.CV_32F, 1, 0), cv2.Sobel(image, cv2.CV_32F, 0, 1))
        high = gain * max(EDGE_FLOOR, 2.0 * float(np.percentile(magnitude[border], 90)))
        # hysteresis: an outline seeded where it is clear is followed where it fades (a white bowl's
        # back rim on white); JPEG ringing it picks up lies next to the outline, where GrabCut decides
        edges |= cv2.Canny(image, 0.4 * high, high, L2gradient=True)
    return cv2.dilate(edges, np.ones((3, 3), np.uint8)) > 0


def _flood(residual, threshold, edges, border, gap):
    """Background reachable from the border through backdrop-coloured pixels without crossing an edge
    (outline gaps narrower than `gap` closed). Returns (outside, labels, count, border_labels, near)."""
    barrier = cv2.morphologyEx((edges | (residual >= threshold)).astype(np.uint8), cv2.MORPH_CLOSE,
                               cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (gap, gap))) > 0
    near = (residual < threshold) & ~edges
    count, labels = cv2.connectedComponents((near & ~barrier).astype(np.uint8), connectivity=4)
    border_labels = np.unique(labels[border & near & ~barrier])
    border_labels = border_labels[border_labels > 0]
    return np.isin(labels, border_labels), labels, count, border_labels, near


def builtin_cut_out(rgb, seed, check=None, iterations=4):
    """Weight-free background removal. Returns a CutOut.

    A smooth model of the backdrop, learnt from the image border and refined from the background it
    finds, gives each pixel its colour distance to the backdrop; the backdrop is what the border
    reaches through backdrop-coloured pixels without crossing an edge. GrabCut settles the outline
    from those seeds; holes ringed by the object's outline (a torus's, a mug handle's) stay open;
    object parts coloured like the backdrop that the fill reached through a gap in a faint outline
    go back to the object. Works at WORK_SIDE px."""
    h, w = rgb.shape[:2]
    scale = WORK_SIDE / max(h, w)
    small = cv2.resize(rgb, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA) \
        if scale < 1 else np.ascontiguousarray(rgb)
    lab = _lab(small)
    side = max(lab.shape[:2])
    border = _border_mask(lab.shape[:2])
    gap = max(3, int(round(0.025 * side))) | 1
    surface, explained, noise = _border_fit(lab, border)
    residual = np.linalg.norm(lab - surface, axis=-1)
    # Each pass models the backdrop locally from the background the previous one found, so the flood
    # follows backdrops no quadratic fits (a defocused photo, a vignetted gradient) a step further.
    for _ in range(PASSES):
        threshold = max(THRESHOLD_FLOOR, 5.0 * noise)
        edges = _edges(lab, border)
        outside, labels, count, border_labels, near = _flood(residual, threshold, edges, border, gap)
        if outside.all() or not (residual > threshold).any() or not outside.any():
            break
        # background surely clear of the object (its JPEG ringing included) teaches the local surface
        clear = cv2.erode(outside.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        if clear.sum() < 0.05 * clear.size:
            break
        if np.percentile(residual[clear], 95) < threshold / 2:
            break  # the model already fits all the backdrop reached; refitting would learn a leak's colour
        surface = _local_surface(lab, clear, surface, sigma=side / 24.0)
        residual = np.linalg.norm(lab - surface, axis=-1)
        noise = float(1.4826 * np.median(residual[clear]) + 1e-3)
    busy = noise > BUSY_NOISE
    sharp = _sharp_edges(small, edges) if busy else None
    if busy and outside.any() and not outside.all():
        # A photo's backdrop has shapes of its own; those the flood could not cross are out of focus
        # where the object is sharp (a garage's red motorcycle behind a key).
        outside = outside | _defocused(outside, edges, sharp, gap)
    if outside.all() or not (residual > threshold).any():
        if not busy:
            raise empty_foreground("the image looks like plain background")
        # a cluttered photo the backdrop model cannot separate: GrabCut alone, from the usual framing
        seeds, interior, holes = _cluttered_seeds(lab.shape[:2], border), None, None
    else:
        seeds, interior, holes = _plain_seeds(outside, labels, count, border_labels, residual, threshold,
                                              edges, border, gap)
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    fg = _grabcut(bgr, seeds, interior, holes, seed, iterations, check)
    if busy and interior is not None:
        # On a busy backdrop the flood can run through the object or stop at the scene's own shapes;
        # GrabCut from the usual framing is the other guess. The one whose outline runs along sharp
        # edges wins: an object's outline is sharp, a defocused scene's shapes are not.
        framed = _grabcut(bgr, _cluttered_seeds(lab.shape[:2], border), None, None, seed, iterations, check)
        framed, fg = _prune_defocused(framed, edges, sharp, gap), _prune_defocused(fg, edges, sharp, gap)
        if _sharp_outline(framed, sharp) > _sharp_outline(fg, sharp):
            fg = framed
    elif busy:
        fg = _prune_defocused(fg, edges, sharp, gap)
    outside_border = border & ~fg
    explained = float((residual[outside_border] < threshold).mean()) if outside_border.any() else 0.0
    alpha = _edge_alpha(small, fg)
    # judged on the mask as delivered: the unmixing drops GrabCut's one-pixel slivers along faint arcs
    confidence, reasons = _confidence(alpha > 0.5, residual, threshold, edges, explained, busy, border, noise,
                                      gap)
    if scale < 1:
        alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)
    return CutOut(np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8), confidence, reasons)


SHARP_RATIO = 1.6   # gradient at a 1 px scale over the gradient at 3 px: a step blurred by sigma b gives
                    # sqrt(b^2 + 9) / sqrt(b^2 + 1): 2.7 for an in-focus outline (b ~ 0.5), 2.2 for one
                    # that JPEG softened (b ~ 1), 1.2 for a backdrop defocused by 4 px; 1.6 is b = 2 px
DEFOCUS_MAX_SHARP = 0.5   # a region is backdrop when under this share of its edges against it are sharp
DEFOCUS_MIN_EDGE = 6      # ...counting only regions that meet it along at least this many edge pixels
PRUNE_MIN_KEPT = 0.5      # pruning that would drop more than half the mask is not trusted: the subject
                          # in focus is most of what GrabCut found, a defocused backdrop lends it parts


def _sharp_edges(rgb, edges):
    """The edge pixels that are in focus. Blur is measured on each RGB channel as is (the Lab image is
    smoothed for JPEG), in the channel with the strongest gradient there; the ratio does not depend on
    contrast."""
    best = np.zeros(rgb.shape[:2], np.float32)
    ratio = np.zeros_like(best)
    for channel in range(3):
        image = rgb[..., channel].astype(np.float32)
        fine, coarse = (cv2.GaussianBlur(image, (0, 0), sigma) for sigma in (1.0, 3.0))
        fine = np.hypot(cv2.Sobel(fine, cv2.CV_32F, 1, 0), cv2.Sobel(fine, cv2.CV_32F, 0, 1))
        coarse = np.hypot(cv2.Sobel(coarse, cv2.CV_32F, 1, 0), cv2.Sobel(coarse, cv2.CV_32F, 0, 1))
        take = fine > best
        best = np.where(take, fine, best)
        ratio = np.where(take, fine / np.maximum(coarse, 1e-3), ratio)
    return edges & (ratio > SHARP_RATIO)


def _box_around(stat, reach, shape):
    """(rows, cols) slices of a connected component's box (a cv2 stats row) grown by `reach`, clipped."""
    x, y, bw, bh = stat[:4]
    return (slice(max(0, y - reach), min(shape[0], y + bh + reach)),
            slice(max(0, x - reach), min(shape[1], x + bw + reach)))


def _defocused(outside, edges, sharp, gap):
    """Regions the flood did not reach that are backdrop out of focus: most of the edge pixels where they
    meet the background found so far are blurred. Taken region by region, growing the background, so a
    blurred shape behind another one is reached too; an object in focus is ringed by sharp edges and
    stays. Nothing is taken when no region's edges are sharp (a wholly defocused picture: no focus to
    tell object from backdrop). Regions are the candidate object split along the edges (gaps closed)."""
    sharp = cv2.dilate(sharp.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if not (sharp & ~outside).any():
        return np.zeros_like(outside)
    closed = cv2.morphologyEx(edges.astype(np.uint8), cv2.MORPH_CLOSE,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (gap, gap))) > 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~outside & ~closed).astype(np.uint8),
                                                               connectivity=4)
    reach = gap // 2 + 2  # across the edge band, as wide as the closing
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    taken = np.zeros(count, bool)
    background = outside.copy()
    h, w = outside.shape
    changed = True
    while changed:
        changed = False
        near = cv2.dilate(background.astype(np.uint8), disc) > 0
        for index in range(1, count):
            if taken[index]:
                continue
            ys, xs = _box_around(stats[index], reach, (h, w))
            region = (labels[ys, xs] == index).astype(np.uint8)
            ring = (cv2.dilate(region, disc) > 0) & (region == 0)
            meeting = ring & near[ys, xs] & edges[ys, xs] & ~background[ys, xs]
            if meeting.sum() >= DEFOCUS_MIN_EDGE and sharp[ys, xs][meeting].mean() < DEFOCUS_MAX_SHARP:
                taken[index] = changed = True
                background[ys, xs] |= region > 0
    gained = background & ~outside
    # the edge band between taken regions and the background goes too, but not the band along what stays
    band = closed & ~outside & (cv2.dilate(gained.astype(np.uint8), disc) > 0) & \
        ~(cv2.dilate((~background & ~closed).astype(np.uint8), disc) > 0)
    return gained | band


def _prune_defocused(fg, edges, sharp, gap):
    """The mask without the parts of it that a defocused backdrop lent it: the mask is split along the
    sharp edges (gaps closed), and a part whose own stretch of the outline mostly runs along blurred
    edges is dropped, outermost first. The part with the sharpest outline always stays, and the mask
    is returned as it was unless its outline follows sharp edges better for it (`_sharp_outline`) and
    at least PRUNE_MIN_KEPT of it is left."""
    if not fg.any():
        return fg
    closed = cv2.morphologyEx(sharp.astype(np.uint8), cv2.MORPH_CLOSE,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (gap, gap))) > 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats((fg & ~closed).astype(np.uint8), connectivity=4)
    if count <= 2:
        return fg
    reach = gap // 2 + 2
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    near_sharp = cv2.dilate(sharp.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    near_edge = cv2.dilate(edges.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    keep = fg.copy()
    h, w = fg.shape
    shares = {}
    changed = True
    while changed:
        changed = False
        contour = _outer_contour(keep)
        for index in range(1, count):
            ys, xs = _box_around(stats[index], reach, (h, w))
            region = labels[ys, xs] == index
            if not keep[ys, xs][region].any():
                continue
            own = contour[ys, xs] & (cv2.dilate(region.astype(np.uint8), disc) > 0)
            # only where an edge runs: a stretch with none (an object as light as the wall behind it)
            # says nothing about focus
            evidence = own & near_edge[ys, xs]
            if evidence.sum() < 4 * reach:
                continue  # enclosed, or barely touching the outside
            shares[index] = float(near_sharp[ys, xs][evidence].mean())
            if shares[index] < DEFOCUS_MAX_SHARP:
                keep[ys, xs] &= ~region
                changed = True
    if not keep.any() or not shares:
        return fg
    best = max(shares, key=shares.get)
    if not keep[labels == best].any():
        return fg
    inner = keep & ~closed
    # the sharp edge band stays where it borders what is kept (the object's outline), not elsewhere
    pruned = clean_mask(inner | (fg & closed & (cv2.dilate(inner.astype(np.uint8), disc) > 0)))
    # kept only if the outline now follows sharp edges better: dropping blurred parts shortens the
    # outline and keeps its sharp stretches; dropping the object's own parts loses sharp outline
    better = _sharp_outline(pruned, sharp) >= _sharp_outline(fg, sharp)
    return pruned if better and pruned.sum() >= PRUNE_MIN_KEPT * fg.sum() else fg


def _edge_alpha(rgb, fg, band=2, sigma=3.0, min_contrast=24.0):
    """Soft alpha along the outline: each pixel within `band` px of it is unmixed as a blend of the
    object's and the backdrop's colours next to it (alpha = the projection of pixel - backdrop onto
    object - backdrop). GrabCut's hard mask takes anti-aliased edge pixels whole, which puts the
    outline about half a pixel to a pixel outside the object all round; where the two colours are
    too alike to unmix (a white mug on white), a one-pixel feather of the mask is used instead."""
    image = rgb.astype(np.float32)
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    inner = cv2.erode(fg.astype(np.uint8), kernel).astype(np.float32)
    outer = (cv2.dilate(fg.astype(np.uint8), kernel) == 0).astype(np.float32)

    def local_mean(weight):
        return cv2.GaussianBlur(image * weight[..., None], (0, 0), sigma) / \
            (cv2.GaussianBlur(weight, (0, 0), sigma)[..., None] + 1e-4)

    obj, back = local_mean(inner), local_mean(outer)
    span = obj - back
    power = (span * span).sum(-1)
    unmixed = np.clip(((image - back) * span).sum(-1) / np.maximum(power, 1e-3), 0, 1)
    # a hard mask feathered by one pixel gives the outline a sub-pixel position where unmixing cannot
    alpha = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 1.0)
    edge = (inner == 0) & (outer == 0) & (power > min_contrast ** 2)
    alpha[edge] = unmixed[edge]
    return alpha


def _grabcut(bgr, seeds, interior, holes, seed, iterations, check):
    """GrabCut from `seeds`, then the trusted interior and holes of the flood; the cleaned mask."""
    cv2.setRNGSeed(int(seed) % (2 ** 31))
    seeds = seeds.copy()
    # Only the box around the undecided pixels (plus a ring of sure background for the colour model)
    # goes through GrabCut: its cost grows with the pixels it is given, most of them settled already.
    rows, cols = np.nonzero(seeds != cv2.GC_BGD)
    if len(rows) == 0:
        return np.zeros(seeds.shape, bool)
    pad = 16
    window = (slice(max(0, rows.min() - pad), rows.max() + pad + 1),
              slice(max(0, cols.min() - pad), cols.max() + pad + 1))
    box = np.ascontiguousarray(seeds[window])
    if (box == cv2.GC_BGD).any() and (box != cv2.GC_BGD).any():
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        image = np.ascontiguousarray(bgr[window])
        full = box.shape
        # a large undecided area (a busy photo: GrabCut's graph cut takes seconds there) is settled at
        # half resolution; the outline is placed to the pixel afterwards by _edge_alpha
        half = (box != cv2.GC_BGD).sum() > GRABCUT_FULL_PIXELS
        if half:
            size = (max(8, full[1] // 2), max(8, full[0] // 2))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            box = cv2.resize(box, size, interpolation=cv2.INTER_NEAREST)
        for iteration in range(iterations):  # one at a time, so a cancel is noticed within ~0.5 s
            if check is not None:
                check()
            cv2.grabCut(image, box, None, bgd, fgd, 1, cv2.GC_INIT_WITH_MASK if iteration == 0 else cv2.GC_EVAL)
        if half:
            box = cv2.resize(box, (full[1], full[0]), interpolation=cv2.INTER_NEAREST)
            # seeds that were certain stay so at full resolution
            box = np.where(np.isin(seeds[window], (cv2.GC_BGD, cv2.GC_FGD)), seeds[window], box)
        seeds[window] = box
    fg = np.isin(seeds, (cv2.GC_FGD, cv2.GC_PR_FGD))
    if interior is not None:
        # GrabCut settles the outline; deep inside it the edge-bounded fill is trusted (object parts as
        # white as a white backdrop are colour-wise background to GrabCut).
        fg |= interior
        fg &= ~holes | (seeds == cv2.GC_FGD)
    return clean_mask(fg)


def _outer_contour(fg):
    """The pixels just outside the mask, next to it."""
    return (cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~fg


def _sharp_outline(fg, sharp):
    """How well the mask's outline follows sharp edges: its length on them times the share of it they
    make (an object's outline in focus is long and sharp; a sliver's is short, a mask holding part of a
    defocused scene has long stretches that are not sharp)."""
    contour = _outer_contour(fg)
    if not contour.any():
        return 0.0
    on = float(sharp[contour].sum())
    return on * on / float(contour.sum())


def _plain_seeds(outside, labels, count, border_labels, residual, threshold, edges, border, gap):
    """GrabCut seeds from the flood fill, with the object's trusted interior and the holes through it.
    Returns (seeds, interior, holes)."""
    outside = outside & ~_leaked(outside, edges, border, gap)
    holes = _holes(labels, count, border_labels, residual, threshold, edges, gap)
    background = outside | holes
    seeds = np.full(residual.shape, cv2.GC_PR_FGD, np.uint8)
    seeds[background] = cv2.GC_PR_BGD
    # Only background a few pixels clear of the candidate object is certain (JPEG ringing and the
    # anti-aliased edge lie within them); the rest GrabCut settles.
    margin = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
    seeds[cv2.erode(outside.astype(np.uint8), margin) > 0] = cv2.GC_BGD
    # JPEG ringing and backdrop texture next to the outline also stop the flood, so only the candidate
    # object's core, `gap` inside its outline, is trusted as object whatever GrabCut says
    interior = cv2.erode((~background).astype(np.uint8), margin) > 0
    seeds[interior & (residual > 3 * threshold)] = cv2.GC_FGD
    # The border is background only where it looks like the backdrop: an object cut off by the frame
    # keeps its pixels there.
    seeds[border & (residual < threshold)] = cv2.GC_BGD
    return seeds, interior, holes


def grabcut_alpha(rgb, seed, check=None, iterations=4):
    """The weight-free cut-out's alpha (uint8)."""
    return builtin_cut_out(rgb, seed, check, iterations).alpha


def _holes(labels, count, border_labels, residual, threshold, edges, gap):
    """Enclosed backdrop-coloured regions ringed by edges: holes through the object (a mug handle's),
    as opposed to object parts merely coloured like the backdrop (the shaded bands of a white mug)."""
    holes = np.zeros(labels.shape, bool)
    # the flood's barrier is the edges closed over `gap`, so a hole's rim lies within gap/2 of an edge
    ring = cv2.dilate(edges.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (gap + 2, gap + 2))) > 0
    known = set(border_labels.tolist())
    area = np.bincount(labels.ravel(), minlength=count)
    mean_residual = np.bincount(labels.ravel(), residual.ravel(), minlength=count) / np.maximum(area, 1)
    found = ndimage_objects(labels, count)
    for index in range(1, count):
        # pinholes are filled by clean_mask anyway; a busy photo has thousands of them
        if index in known or area[index] < 16 or mean_residual[index] >= threshold / 2:
            continue
        ys, xs = found[index - 1]
        window = (slice(max(0, ys.start - 1), ys.stop + 1), slice(max(0, xs.start - 1), xs.stop + 1))
        region = labels[window] == index
        rim = (cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~region
        if rim.any() and ring[window][rim].mean() > 0.9:
            holes[window] |= region
    return holes


def ndimage_objects(labels, count):
    """Bounding slices of labels 1..count-1 (scipy's find_objects)."""
    from scipy import ndimage
    objects = ndimage.find_objects(labels, max_label=count - 1)
    return [o if o is not None else (slice(0, 0), slice(0, 0)) for o in objects]


def _confidence(fg, residual, threshold, edges, explained, busy, border, noise, gap):
    """How far to trust the cut-out, 0..1, with the reasons for doubt in plain words.

    Doubt comes from a backdrop that no smooth model explains (a cluttered, sharp photo), an outline
    that does not stand out from the backdrop over much of its length (a white object on white), a
    mask that runs into the frame or fills most of it (the whole picture taken as the object), and
    outline edges left in a plain backdrop (object parts lost to it)."""
    reasons, score = [], 1.0
    if busy or explained < 0.7:
        score = min(score, 0.3)
        reasons.append("the background is busy, not a plain backdrop: the cut-out may hold parts of it "
                       "or miss parts of the object")
    share = fg.mean()
    if share > 0.6:
        score = min(score, 0.3)
        reasons.append("the object fills %.0f%% of the picture: the background may have been kept as the object"
                       % (100 * share))
    touching = fg[border].mean() if border.any() else 0.0
    if touching > 0.15:
        score = min(score, 0.4)
        reasons.append("the object runs into the frame on %.0f%% of the border" % (100 * touching))
    contour = (cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & \
        ~(cv2.erode(fg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    if contour.any():
        # an outline pixel stands out if the object side next to it differs from the backdrop or an
        # edge runs there
        visible = (cv2.dilate((residual >= threshold).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0) | edges
        faint = 1.0 - visible[contour].mean()
        if faint > 0.15:
            score = min(score, max(0.1, 0.7 - 2.0 * faint))
            reasons.append("%.0f%% of the outline barely differs from the background" % (100 * faint))
        stray = _stray_edges(fg, edges, gap) / contour.sum() if noise < PLAIN_NOISE else 0.0
        if stray > STRAY_MAX:
            score = min(score, 0.35)
            reasons.append("outlines are left in the background next to the object: parts of it as light or "
                           "as dark as the backdrop may be missing")
    return score, reasons


PLAIN_NOISE = 2.0   # Lab units: a studio sweep or a gradient, whose background holds no edges of its own
STRAY_MAX = 0.02    # stray edge length as a share of the object's outline; set on bench/fg_objects.py's
                    # objects (not the dev set): clean cut-outs there leave under 0.002


def _stray_edges(fg, edges, gap):
    """Edge length in the background farther than `gap` from the object. A plain backdrop has no edges
    and JPEG's ringing stays within a few pixels of the outline; what is left is an outline whose
    object part the flood took (a white bowl's back rim on 255 white: its inside is exactly the
    backdrop's colour) or a second object."""
    far = ~(cv2.dilate(fg.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1,) * 2)) > 0)
    return float((edges & far).sum()) / 3.0    # edges are dilated to 3 px wide


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
    found = ndimage_objects(labels, count)
    for index in range(1, count):
        if index in joined:
            continue
        ys, xs = found[index - 1]
        touching = np.unique(pieces[ys, xs][labels[ys, xs] == index])
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
