"""Score generated shapes against the ground truth of a dataset (DESIGN.md "Test data").

    python bench/quality.py DATASET OUTPUTS [--frame upright|camera] [--views right,back,left] [--json FILE]

DATASET holds <case>/gt.glb and <case>/camera.json; OUTPUTS holds <case>/mesh.glb (as written by
`python -m backend_local generate DATASET/<case>/input.png --out OUTPUTS/<case>`, with
`--view right=DATASET/<case>/view_right.png` etc. for the extra views).
`--views` names the extra views the outputs were made with: the textured results are then also
rendered from the front and from each of those views' cameras and compared with that view's image
inside its mask (bench/render_psnr.py), one PSNR column per view.
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

VIEW_CHOICES = ("right", "back", "left")

COLUMNS = ("chamfer_l1", "f@0.02", "f@0.05", "iou_front", "iou_side")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("outputs")
    parser.add_argument("--frame", choices=("upright", "camera"), default="upright",
                        help="frame the ground truth is compared in (default: upright)")
    parser.add_argument("--views", default=None,
                        help="extra views the outputs used (comma-separated: right, back, left); adds PSNR per view")
    parser.add_argument("--json", help="also write the table as JSON here")
    args = parser.parse_args(argv)
    views = [v for v in (args.views or "").split(",") if v]
    if any(v not in VIEW_CHOICES for v in views):
        parser.error("--views takes %s" % ", ".join(VIEW_CHOICES))
    columns = COLUMNS + (("psnr_front",) + tuple("psnr_" + v for v in views) if args.views is not None else ())
    if args.views is not None:
        from render_psnr import psnr

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
        if args.views is not None:
            for view in [None] + views:
                rows[case]["psnr_" + (view or "front")] = psnr(os.path.join(args.outputs, case), view)[0]
    if not rows:
        print("no cases scored", file=sys.stderr)
        return 1
    mean = {key: sum(row[key] for row in rows.values()) / len(rows) for key in columns}
    print("%-12s" % "case" + "".join("%12s" % c for c in columns))
    for case, row in list(rows.items()) + [("MEAN", mean)]:
        print("%-12s" % case + "".join("%12.4f" % row[c] for c in columns))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"frame": args.frame, "views": views, "cases": rows, "mean": mean}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
