"""Texture each dev case's ground-truth mesh (gt.glb) from its front image and measure PSNR inside the
mask from that view (bench/render_psnr.py's re-lit comparison). Target: >= 32 dB per case.

    python bench/texture_existing.py [--dataset DIR] [--cases a,b] [--out DIR] [--texture-engine builtin]
                                     [--views right,back,left]

With --views the case's extra views (view_<name>.png) go in the request too and the result is also
rendered from each of those views' cameras; target then >= 30 dB from every view.

The camera is the case's own (camera.json's azimuth and elevation) given as mesh_view, as the add-on
would send it. Also checks that each result keeps gt.glb's vertices and faces exactly.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from backend_local.pipeline import Pipeline  # noqa: E402
from backend_local.texturing.given_mesh import read_mesh  # noqa: E402
from shared.request import parse_request  # noqa: E402

import render_psnr  # noqa: E402

# the dev set beside the checkout (../shared) or beside the worktrees' folder (../../shared)
DEFAULT_DATASET = next((path for path in (os.path.join(os.path.dirname(ROOT), "shared", "dataset", "dev"),
                                          os.path.join(os.path.dirname(os.path.dirname(ROOT)), "shared", "dataset",
                                                       "dev")) if os.path.isdir(path)),
                       os.path.join(os.path.dirname(ROOT), "shared", "dataset", "dev"))
TARGET_DB = 32.0
TARGET_VIEWS_DB = 30.0


def run_case(pipeline, case_dir, out_dir, texture_engine, texture_size, views=()):
    with open(os.path.join(case_dir, "camera.json")) as handle:
        camera = json.load(handle)
    front = camera.get("views", {}).get("front", {})
    view = {"azimuth_deg": float(front.get("azimuth_deg", 0.0)), "elevation_deg": float(camera["elevation_deg"])}
    request = parse_request({"image_path": os.path.join(case_dir, "input.png"),
                             "mesh_path": os.path.join(case_dir, "gt.glb"), "mesh_view": view,
                             "texture_engine": texture_engine, "texture_size": texture_size,
                             "views": {name: os.path.join(case_dir, "view_%s.png" % name) for name in views}})
    started = time.perf_counter()
    manifest = pipeline.run(request, out_dir)
    seconds = time.perf_counter() - started
    value, albedo_only, _lit, inside = render_psnr.psnr(out_dir)
    given = read_mesh(os.path.join(case_dir, "gt.glb"))
    vertices, faces, _uvs, _images = render_psnr.read_glb(os.path.join(out_dir, "mesh.glb"))
    count = len(given.vertices)
    exact = (np.array_equal(vertices[:count], given.vertices.astype(np.float32)) and
             np.array_equal(vertices[faces], given.vertices.astype(np.float32)[given.faces]))
    return {"psnr": value, "albedo_only": albedo_only, "pixels": int(inside.sum()), "seconds": seconds,
            "uvs": manifest["mesh"]["given"]["uvs"], "exact": exact,
            "views": {name: render_psnr.psnr(out_dir, name)[0] for name in views}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--out", default=os.path.join("bench_out", "texture_existing"))
    parser.add_argument("--texture-engine", default="builtin")
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--views", default="", help="extra views to use and score, e.g. right,back,left")
    args = parser.parse_args(argv)
    views = [name for name in args.views.split(",") if name]
    cases = args.cases.split(",") if args.cases else sorted(
        name for name in os.listdir(args.dataset) if os.path.isfile(os.path.join(args.dataset, name, "gt.glb")))
    pipeline = Pipeline(args.device)
    rows = []
    print("| case | PSNR re-lit (dB) | " + "".join("%s (dB) | " % name for name in views)
          + "albedo only (dB) | pixels | UVs | arrays kept | seconds |")
    print("|---|---|" + "---|" * len(views) + "---|---|---|---|---|")
    for name in cases:
        row = run_case(pipeline, os.path.join(args.dataset, name), os.path.join(args.out, name),
                       args.texture_engine, args.texture_size, views)
        rows.append(row)
        print("| %s | %.2f | %s%.2f | %d | %s | %s | %.1f |" % (
            name, row["psnr"], "".join("%.2f | " % row["views"][v] for v in views), row["albedo_only"],
            row["pixels"], row["uvs"], "yes" if row["exact"] else "NO", row["seconds"]), flush=True)
    values = [row["psnr"] for row in rows]
    per_view = {v: [row["views"][v] for row in rows] for v in views}
    print("| mean | %.2f | %s| | | | |" % (float(np.mean(values)),
                                          "".join("%.2f | " % float(np.mean(per_view[v])) for v in views)))
    target = TARGET_VIEWS_DB if views else TARGET_DB
    every = [min([row["psnr"]] + list(row["views"].values())) for row in rows]
    print("min %.2f dB over every view; %d of %d cases >= %.0f dB from every view" % (
        min(every), sum(v >= target for v in every), len(every), target))
    return 0 if all(v >= target for v in every) and all(row["exact"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
