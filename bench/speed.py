"""Per-stage timings of the built-in engine in a warm process.

    python bench/speed.py [--device auto|cpu|cuda] [--runs 5] [--image PATH] [--scaling] [--json FILE]

Default: a 512x512 input at 40k faces and 1024 textures, median of 5 runs after one warm-up run.
Targets: <= 4 s total on a 2-core CPU, <= 1 s on an H100, peak memory <= 1.5 GB.
--scaling also times face_count 10k..200k (1024 textures) and texture_size 512..4096 (40k faces).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backend_local.pipeline import Pipeline  # noqa: E402
from shared.request import parse_request  # noqa: E402

STAGES = ("preprocess", "shape", "texture", "export", "total")
TARGETS = {"cpu": 4.0, "cuda": 1.0}
MEMORY_TARGET_MB = 1536


def measure(pipeline, image, runs, **params):
    timings, peaks = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(runs):
            request = parse_request(dict(params, image_path=image))
            manifest = pipeline.run(request, os.path.join(scratch, "run%d" % index))
            timings.append(manifest["timings"])
            peaks.append(manifest["peak_memory_mb"])
    medians = {stage: statistics.median(t[stage] for t in timings) for stage in STAGES}
    return medians, max(peaks)


def row(label, medians, peak):
    return "%-22s" % label + "".join("%10.3f" % medians[s] for s in STAGES) + "%10.0f" % peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--image", default=os.path.join(ROOT, "tests", "data", "mug", "input.png"))
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    pipeline = Pipeline(args.device)
    device = pipeline.device.type
    print("device: %s" % pipeline.device)
    measure(pipeline, args.image, 1)                      # warm-up: imports, allocator, caches
    header = "%-22s" % "case" + "".join("%10s" % s for s in STAGES) + "%10s" % "peak MB"
    print(header)
    medians, peak = measure(pipeline, args.image, args.runs)
    print(row("40k faces, 1024 tex", medians, peak))
    target = TARGETS.get(device, TARGETS["cpu"])
    print("total %.3f s vs target %.1f s: ratio %.2f; peak %.0f MB vs %d MB: ratio %.2f"
          % (medians["total"], target, medians["total"] / target, peak, MEMORY_TARGET_MB, peak / MEMORY_TARGET_MB))
    report = {"device": str(pipeline.device), "default": {"timings": medians, "peak_memory_mb": peak}}

    if args.scaling:
        runs = max(1, min(args.runs, 3))
        report["faces"], report["texture"] = {}, {}
        for faces in (10000, 40000, 100000, 200000):
            medians, peak = measure(pipeline, args.image, runs, face_count=faces)
            report["faces"][faces] = {"timings": medians, "peak_memory_mb": peak}
            print(row("%dk faces, 1024 tex" % (faces // 1000), medians, peak))
        for size in (512, 1024, 2048, 4096):
            medians, peak = measure(pipeline, args.image, runs, texture_size=size)
            report["texture"][size] = {"timings": medians, "peak_memory_mb": peak}
            print(row("40k faces, %d tex" % size, medians, peak))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
