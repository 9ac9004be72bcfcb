"""Markdown tables from bench/hunyuan_fullsize.py's JSON lines: python bench/fullsize_tables.py RESULTS.jsonl"""

import json
import sys


def cell(value):
    return "-" if value is None else str(value)


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| run | cap GB | job | ok | stage | load s (disk) | s/step (steps) | stage s | peak GPU GB | peak host GB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if row.get("kind") == "build":
            continue
        loads = dict(row.get("loads_from_disk") or [])
        stages = row.get("stages", {})
        steps = row.get("steps", {})
        for stage in sorted(stages, key=["shape_load", "shape", "texture_load", "texture", "export"].index
                            if all(s in ["shape_load", "shape", "texture_load", "texture", "export"] for s in stages)
                            else str):
            data = stages[stage]
            step = steps.get(stage) or data
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                row["kind"], row.get("cap_gb") or "none", row.get("job"), row.get("ok"), stage,
                cell(loads.get(stage, data["stage_s"] if stage.endswith("_load") else None)),
                "%s (%s)" % (cell(step.get("s_per_step")), cell(step.get("steps"))) if step.get("steps") else "-",
                data.get("stage_s"), data.get("peak_gpu_gb"), data.get("peak_host_gb")))
        print("| %s | %s | %s | %s | **job** | | | %s | | |" % (row["kind"], row.get("cap_gb") or "none", row.get("job"),
                                                             row.get("ok"), row.get("job_s")))
    for row in rows:
        if row.get("error"):
            print("\n%s cap %s job %s: %s" % (row["kind"], row.get("cap_gb"), row.get("job"), row["error"][:400]))
        if row.get("plans"):
            print("\n%s cap %s job %s plans: %s" % (row["kind"], row.get("cap_gb"), row.get("job"), row["plans"]))


if __name__ == "__main__":
    main(sys.argv[1])
