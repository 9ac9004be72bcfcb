"""Score the built-in engine's shapes with a chosen shape model, all cases in one process.

    python bench/shape_quality.py DATASET OUTPUTS [--shape-model PATH|priors] [--inputs input,input_bg]
                                  [--texture] [--json STEM] [--min-confidence C]

Generates DATASET/<case>/<input>.png into OUTPUTS/<input>/<case> through the pipeline with the engine
setting `shape_model` (default: whatever the engine uses, i.e. the shipped weights when present), then
prints bench/quality.py's table per input and, with --json, writes STEM.json and STEM_bg.json. Textures
are skipped unless --texture (the scores are geometry only). Also prints how many cases took the learned
shape and each one's confidence, read from the job's progress messages.
"""

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import quality  # noqa: E402
from backend_local.engines.builtin import learned_shape  # noqa: E402
from backend_local.pipeline import Pipeline  # noqa: E402
from shared.request import parse_request  # noqa: E402

CONFIDENCE = re.compile(r"learned shape \(confidence ([0-9.]+)\)")


def generate(pipeline, image, out, texture):
    fields = {"image_path": os.path.abspath(image), "engine": "builtin"}
    if not texture:
        fields["texture"] = False
    seen = {}

    def progress(event):
        match = CONFIDENCE.search(event.get("message") or "")
        if match:
            seen["confidence"] = float(match.group(1))

    manifest = pipeline.run(parse_request(fields, allow_path=True), out, on_progress=progress)
    return manifest, seen.get("confidence")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("outputs")
    parser.add_argument("--shape-model", help="weights file, or 'priors' (default: the engine's own choice)")
    parser.add_argument("--inputs", default="input,input_bg")
    parser.add_argument("--texture", action="store_true")
    parser.add_argument("--json", help="write STEM.json (input) and STEM_bg.json (input_bg)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--min-confidence", type=float,
                        help="use the network's shape from this confidence on (default: the engine's threshold)")
    args = parser.parse_args(argv)
    if args.min_confidence is not None:
        learned_shape.MIN_CONFIDENCE = args.min_confidence
    settings = {"builtin": {"shape_model": args.shape_model}} if args.shape_model else None
    pipeline = Pipeline(args.device, settings=settings)
    cases = sorted(c for c in os.listdir(args.dataset) if os.path.isfile(os.path.join(args.dataset, c, "gt.glb")))
    for name in [n for n in args.inputs.split(",") if n]:
        learned = []
        for case in cases:
            image = os.path.join(args.dataset, case, name + ".png")
            _, confidence = generate(pipeline, image, os.path.join(args.outputs, name, case), args.texture)
            learned.append((case, confidence))
        print("== %s.png" % name)
        print("network confidence: " + ", ".join("%s %s" % (c, "-" if v is None else "%.2f" % v) for c, v in learned))
        table_args = [args.dataset, os.path.join(args.outputs, name)]
        if args.json:
            table_args += ["--json", args.json + ("_bg" if name == "input_bg" else "") + ".json"]
        quality.main(table_args)


if __name__ == "__main__":
    main()
