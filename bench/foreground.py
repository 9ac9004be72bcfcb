"""How well the built-in cut-out recovers the true alpha on ordinary inputs.

    python bench/foreground.py [--set dev|unseen|all] [--backgrounds white,grey,...] [--formats png,...]
                               [--methods baseline,new] [--jobs N] [--json FILE]
                               [--dump DIR] [--cases a,b]

Every case's RGBA render (DATASET/<case>/input.png, whose alpha is the truth) is composited onto each
backdrop, encoded in each format, decoded by the pipeline's own image reader and cut out by the
pipeline's own background remover (`backend_local.foreground`, with rembg left out so the weight-free
method is what is measured). The cut-out's alpha > 127 is compared with the true alpha > 127 (IoU).
The same call also runs the baseline: the cut-out as it was before this bench (commit BASELINE_COMMIT,
read from git), so before/after are measured on identical inputs.

Backdrops:
- white (255), grey (128), black (0): plain studio sweeps, the pure values being the hard ones (a
  white mug on 255 has parts exactly as white as the backdrop).
- gradient: a linear blend between two random colours in a random direction times a radial vignette,
  drawn per case from a seeded generator (a lit sweep or a coloured wall).
- photo: a crop of a real photograph that holds none of the dev objects (scikit-image's garage scene
  `motorcycle_left.png`, the launch-tower side of the rocket photo without the rocket, the wooden
  table beside the coffee cup), blurred as a camera focused on a near object blurs a far background
  (Gaussian sigma 4 px at 512 px: an object photo at f/2-f/4 with the scene a metre or more behind).
  A render pasted onto a sharp unrelated photo is not what a photo of an object looks like; that
  camouflage case is kept as `photo_sharp`, reported but not part of the target, and it is where the
  cut-out should say it is unsure.
Formats: png (lossless), jpg75 (quality 75, Pillow's default 4:2:0 chroma subsampling, what phones
and most tools write), jpg75_444 (quality 75, no chroma subsampling).

The target (issue 11): mean IoU >= 0.98 and none below 0.95 over dev cases x {white, grey, black,
gradient, photo} x formats. `--set unseen` runs the same on procedural objects that are not in the
dev set (bench/fg_objects.py), to check the method is not fitted to the dev cases.
"""

import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from backend_local import foreground, imageio  # noqa: E402

DEV = os.path.join(ROOT, "..", "shared", "dataset", "dev")
if not os.path.isdir(DEV):
    DEV = "/work/shared/dataset/dev"
PHOTOS = os.path.join(os.path.dirname(DEV), "photos")
BASELINE_COMMIT = "fdb40e0"
BACKGROUNDS = ("white", "grey", "black", "gradient", "photo")
EXTRA_BACKGROUNDS = ("photo_sharp",)
FORMATS = ("png", "jpg75", "jpg75_444")
PHOTO_BLUR = 4.0


def photo_sources():
    """(image, crop box) pairs of real scenes without any dev object."""
    import skimage
    garage = np.asarray(Image.open(os.path.join(os.path.dirname(skimage.data.__file__), "motorcycle_left.png"))
                        .convert("RGB"))
    sources = [(garage, (0, 0, 500, 500)), (garage, (241, 0, 741, 500))]
    rocket = os.path.join(PHOTOS, "rocket.jpg")
    if os.path.isfile(rocket):
        image = np.asarray(Image.open(rocket).convert("RGB"))
        sources += [(image, (0, 0, 250, 427)), (image, (400, 0, 640, 427))]   # the rocket is at x 270..370
    coffee = os.path.join(PHOTOS, "coffee.png")
    if os.path.isfile(coffee):
        image = np.asarray(Image.open(coffee).convert("RGB"))
        sources += [(image, (470, 150, 600, 400))]                             # table right of the saucer
    return sources


def make_background(kind, h, w, rng):
    import cv2
    if kind == "white":
        return np.full((h, w, 3), 255, np.uint8)
    if kind == "grey":
        return np.full((h, w, 3), 128, np.uint8)
    if kind == "black":
        return np.zeros((h, w, 3), np.uint8)
    if kind == "gradient":
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w) - 0.5
        t = np.clip((xx * np.cos(angle) + yy * np.sin(angle)) + 0.5, 0, 1)[..., None]
        vignette = 1 - rng.uniform(0.1, 0.4) * (xx ** 2 + yy ** 2)[..., None] * 2
        return np.clip((a * (1 - t) + b * t) * vignette, 0, 255).astype(np.uint8)
    if kind in ("photo", "photo_sharp"):
        sources = photo_sources()
        image, (x0, y0, x1, y1) = sources[rng.integers(len(sources))]
        crop = image[y0:y1, x0:x1]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_CUBIC)
        if kind == "photo":
            out = cv2.GaussianBlur(out, (0, 0), PHOTO_BLUR * max(h, w) / 512)
        return out
    raise ValueError(kind)


def composite(rgba, background):
    alpha = rgba[..., 3:4].astype(np.float32) / 255
    out = rgba[..., :3].astype(np.float32) * alpha + background.astype(np.float32) * (1 - alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def encode(rgb, fmt):
    buffer = io.BytesIO()
    if fmt == "png":
        Image.fromarray(rgb).save(buffer, "PNG")
    elif fmt.startswith("jpg"):
        quality = int(fmt[3:5])
        Image.fromarray(rgb).save(buffer, "JPEG", quality=quality, subsampling=0 if fmt.endswith("_444") else 2)
    else:
        raise ValueError(fmt)
    return buffer.getvalue()


def load_baseline():
    """The cut-out as of BASELINE_COMMIT, imported from git under its own name."""
    try:
        source = subprocess.run(["git", "-C", ROOT, "show", BASELINE_COMMIT + ":backend_local/foreground.py"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print("no baseline (%s)" % exc, file=sys.stderr)
        return None
    path = os.path.join(tempfile.mkdtemp(prefix="fg-baseline-"), "foreground_baseline.py")
    with open(path, "w") as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("foreground_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cut(module, rgb, seed=1234):
    """(alpha uint8, unsure flag or None) from a module's weight-free cut-out; rembg is not used."""
    if hasattr(module, "builtin_cut_out"):
        result = module.builtin_cut_out(rgb, seed)
        return result.alpha, result.unsure
    return module.grabcut_alpha(rgb, seed), None


def cases(which):
    found = {}
    if which in ("dev", "all"):
        for name in sorted(os.listdir(DEV)):
            path = os.path.join(DEV, name, "input.png")
            if os.path.isfile(path):
                found[name] = path
    if which in ("unseen", "all"):
        import fg_objects
        found.update({"u:" + k: v for k, v in fg_objects.generate(os.path.join(ROOT, "bench", "out",
                                                                               "fg_objects")).items()})
    return found


def iou(a, b):
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="dev", choices=("dev", "unseen", "all"))
    parser.add_argument("--backgrounds", default=",".join(BACKGROUNDS + EXTRA_BACKGROUNDS))
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--cases", default=None, help="comma-separated subset of case names")
    parser.add_argument("--methods", default="baseline,new", help="baseline (commit BASELINE_COMMIT), new (this checkout)")
    parser.add_argument("--jobs", type=int, default=1, help="cases scored in parallel processes")
    parser.add_argument("--json", help="write every score here")
    parser.add_argument("--jsonl", help="append each case's scores to this file as it finishes")
    parser.add_argument("--report", nargs="+", metavar="JSONL", help="only print the table of these score files")
    parser.add_argument("--dump", help="write the inputs and both cut-outs of cases below 0.95 here")
    args = parser.parse_args(argv)
    if args.report:
        scores = [tuple(json.loads(line)[k] for k in FIELDS) for path in args.report for line in open(path)]
        methods = {m: None for m in dict.fromkeys(s[0] for s in scores)}
        present = set(s[2] for s in scores)
        report(scores, methods, [b for b in BACKGROUNDS + EXTRA_BACKGROUNDS if b in present],
               [f for f in FORMATS if f in set(s[3] for s in scores)])
        return
    names = args.methods.split(",")
    for method in names:
        if method not in ("baseline", "new") or (method == "baseline" and load_baseline() is None):
            parser.error("unknown or unavailable method %s" % method)
    backgrounds, formats = args.backgrounds.split(","), args.formats.split(",")
    everything = cases(args.set)
    # a case's index seeds its gradient and photo crop: the same whatever subset is run
    selected = [(index, name, path) for index, (name, path) in enumerate(everything.items())
                if not args.cases or name in args.cases.split(",") or name.split(":")[-1] in args.cases.split(",")]
    jobs = [(index, name, path, names, backgrounds, formats, args.dump, args.jsonl) for index, name, path in selected]
    scores = []   # (method, case, background, format, iou, seconds, unsure)
    if args.jobs > 1:
        import multiprocessing
        with multiprocessing.Pool(args.jobs) as pool:
            for rows in pool.imap(score_case, jobs):
                scores += rows
    else:
        for job in jobs:
            scores += score_case(job)
    methods = {name: None for name in names}
    report(scores, methods, backgrounds, formats)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([dict(zip(FIELDS, s)) for s in scores], handle, indent=1)


_MODULES = {}
FIELDS = ("method", "case", "background", "format", "iou", "seconds", "unsure")


def score_case(job):
    """Every backdrop x format of one case through each method: a list of score rows."""
    index, name, path, names, backgrounds, formats, dump, jsonl = job
    for method in names:
        if method not in _MODULES:
            _MODULES[method] = load_baseline() if method == "baseline" else foreground
    rgba = np.asarray(Image.open(path).convert("RGBA"))
    truth = rgba[..., 3] > 127
    rows = []
    for background in backgrounds:
        rng = np.random.default_rng([index, BACKGROUNDS.index(background) if background in BACKGROUNDS else 9])
        rgb = composite(rgba, make_background(background, *rgba.shape[:2], rng))
        for fmt in formats:
            pixels, _ = imageio.open_image(encode(rgb, fmt))
            for method in names:
                t0 = time.perf_counter()
                try:
                    alpha, unsure = cut(_MODULES[method], pixels[..., :3])
                except Exception as exc:  # an EMPTY_FOREGROUND on a case is a score of 0
                    print("%s %s %s %s: %s" % (method, name, background, fmt, exc), file=sys.stderr)
                    alpha, unsure = np.zeros(truth.shape, np.uint8), True
                seconds = time.perf_counter() - t0
                score = iou(alpha > 127, truth)
                rows.append((method, name, background, fmt, score, seconds, unsure))
                if dump and score < 0.95:
                    os.makedirs(dump, exist_ok=True)
                    stem = os.path.join(dump, "%s_%s_%s_%s" % (name.replace(":", "_"), background, fmt, method))
                    Image.fromarray(pixels[..., :3]).save(stem + "_in.png")
                    Image.fromarray(alpha).save(stem + "_alpha.png")
    print("%-14s " % name + "  ".join("%s %.3f" % (m, np.mean([r[4] for r in rows if r[0] == m])) for m in names),
          file=sys.stderr, flush=True)
    if jsonl:   # kept case by case, so a long run cut short still has its scores (see --report)
        with open(jsonl, "a") as handle:
            for r in rows:
                handle.write(json.dumps(dict(zip(FIELDS, r))) + "\n")
    return rows


def report(scores, methods, backgrounds, formats):
    def stats(rows):
        values = [r[4] for r in rows]
        return (np.mean(values), np.min(values)) if values else (float("nan"), float("nan"))

    header = "%-12s %-10s" % ("background", "format") + "".join(
        "  %8s mean   min" % m for m in methods) + "   unsure"
    print(header)
    for background in backgrounds:
        for fmt in formats:
            line = "%-12s %-10s" % (background, fmt)
            for method in methods:
                mean, low = stats([s for s in scores if s[0] == method and s[2] == background and s[3] == fmt])
                line += "  %13.4f %.3f" % (mean, low)
            flagged = [s[6] for s in scores if s[0] == "new" and s[2] == background and s[3] == fmt]
            line += "   %d/%d" % (sum(bool(f) for f in flagged), len(flagged))
            print(line)
    target = [b for b in backgrounds if b in BACKGROUNDS]
    for label, keep in (("TARGET SET", target), ("all rows", backgrounds)):
        line = "%-23s" % label
        for method in methods:
            mean, low = stats([s for s in scores if s[0] == method and s[2] in keep])
            line += "  %13.4f %.3f" % (mean, low)
        print(line)
    for method in methods:
        rows = [s for s in scores if s[0] == method and s[2] in target]
        worst = sorted(rows, key=lambda s: s[4])[:8]
        print("%s worst: %s" % (method, ", ".join("%s/%s/%s %.3f" % (s[1], s[2], s[3], s[4]) for s in worst)))
        print("%s seconds per cut-out: mean %.3f max %.3f" % (method, np.mean([s[5] for s in rows]),
                                                             np.max([s[5] for s in rows])))
    cases_seen = sorted({s[1] for s in scores})
    print("per case (target set, mean/min):")
    for case in cases_seen:
        rows = [s for s in scores if s[1] == case and s[2] in target]
        print("  %-14s " % case + "  ".join("%s %.3f/%.3f" % ((m,) + stats([s for s in rows if s[0] == m]))
                                         for m in methods))


if __name__ == "__main__":
    main()
