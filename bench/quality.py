"""Score generated shapes against the ground truth of a dataset (DESIGN.md "Test data").

    python bench/quality.py DATASET OUTPUTS [--frame upright|camera] [--json FILE]

DATASET holds <case>/gt.glb and <case>/camera.json; OUTPUTS holds <case>/mesh.glb (as written by
`python -m backend_local generate DATASET/<case>/input.png --out OUTPUTS/<case>`).
Prints one row per case and a mean row. Scored in the upright frame (a result that leans scores
lower); `--frame camera` scores in the input camera's frame as before the upright frame, to compare
with older results.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from metrics import score_case  # noqa: E402

COLUMNS = ("chamfer_l1", "f@0.02", "f@0.05", "iou_front", "iou_side")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("outputs")
    parser.add_argument("--frame", choices=("upright", "camera"), default="upright",
                        help="frame the ground truth is compared in (default: upright)")
    parser.add_argument("--json", help="also write the table as JSON here")
    args = parser.parse_args(argv)

    rows = {}
    for case in sorted(os.listdir(args.dataset)):
        gt = os.path.join(args.dataset, case, "gt.glb")
        pred = os.path.join(args.outputs, case, "mesh.glb")
        if not os.path.isfile(gt):
            continue
        if not os.path.isfile(pred):
            print("%-12s missing %s" % (case, pred), file=sys.stderr)
            continue
        rows[case] = score_case(pred, gt, os.path.join(args.dataset, case, "camera.json"), args.frame)
    if not rows:
        print("no cases scored", file=sys.stderr)
        return 1
    mean = {key: sum(row[key] for row in rows.values()) / len(rows) for key in COLUMNS}
    print("%-12s" % "case" + "".join("%12s" % c for c in COLUMNS))
    for case, row in list(rows.items()) + [("MEAN", mean)]:
        print("%-12s" % case + "".join("%12.4f" % row[c] for c in COLUMNS))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"frame": args.frame, "cases": rows, "mean": mean}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
