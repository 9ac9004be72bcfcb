"""Texture each dev case's ground-truth mesh (gt.glb) from its front image and measure PSNR inside the
mask from that view (bench/render_psnr.py's re-lit comparison). Target: >= 32 dB per case.

    python bench/texture_existing.py [--dataset DIR] [--cases a,b] [--out DIR] [--texture-engine builtin]

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


def run_case(pipeline, case_dir, out_dir, texture_engine, texture_size):
    with open(os.path.join(case_dir, "camera.json")) as handle:
        camera = json.load(handle)
    front = camera.get("views", {}).get("front", {})
    view = {"azimuth_deg": float(front.get("azimuth_deg", 0.0)), "elevation_deg": float(camera["elevation_deg"])}
    request = parse_request({"image_path": os.path.join(case_dir, "input.png"),
                             "mesh_path": os.path.join(case_dir, "gt.glb"), "mesh_view": view,
                             "texture_engine": texture_engine, "texture_size": texture_size})
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
            "uvs": manifest["mesh"]["given"]["uvs"], "exact": exact}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--out", default=os.path.join("bench_out", "texture_existing"))
    parser.add_argument("--texture-engine", default="builtin")
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    cases = args.cases.split(",") if args.cases else sorted(
        name for name in os.listdir(args.dataset) if os.path.isfile(os.path.join(args.dataset, name, "gt.glb")))
    pipeline = Pipeline(args.device)
    rows = []
    print("| case | PSNR re-lit (dB) | albedo only (dB) | pixels | UVs | arrays kept | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name in cases:
        row = run_case(pipeline, os.path.join(args.dataset, name), os.path.join(args.out, name),
                       args.texture_engine, args.texture_size)
        rows.append(row)
        print("| %s | %.2f | %.2f | %d | %s | %s | %.1f |" % (name, row["psnr"], row["albedo_only"], row["pixels"],
                                                         row["uvs"], "yes" if row["exact"] else "NO", row["seconds"]),
              flush=True)
    values = [row["psnr"] for row in rows]
    print("| mean | %.2f | | | | | |" % float(np.mean(values)))
    print("min %.2f dB; %d of %d cases >= %.0f dB" % (min(values), sum(v >= TARGET_DB for v in values), len(values),
                                                     TARGET_DB))
    return 0 if all(v >= TARGET_DB for v in values) and all(row["exact"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
