#!/bin/sh
# Score the built-in engine on the unseen set (docs/UNSEEN.md), from input.png and from input_bg.png.
#
#   bench/unseen_quality.sh SET RESULTS [JSON_STEM]
#
# SET is what bench/unseen_set.py wrote. Each case runs
# `python -m backend_local generate SET/<case>/input.png --out RESULTS/input/<case>` (defaults), the
# same from input_bg.png into RESULTS/input_bg/<case>, then bench/quality.py prints each table and
# writes JSON_STEM.json and JSON_STEM_bg.json (default RESULTS/unseen_builtin).
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
SET=$1
RESULTS=$2
STEM=${3:-$RESULTS/unseen_builtin}
if [ -z "$SET" ] || [ -z "$RESULTS" ]; then
    echo "usage: $0 SET RESULTS [JSON_STEM]" >&2
    exit 2
fi
for input in input input_bg; do
    start=$(date +%s)
    for dir in "$SET"/*/; do
        case=$(basename "$dir")
        [ -f "$dir/gt.glb" ] || continue
        (cd "$ROOT" && "$PY" -m backend_local generate "$dir/$input.png" --out "$RESULTS/$input/$case" \
            --overwrite --quiet) || echo "$case: generate failed ($input)" >&2
    done
    suffix=""
    [ "$input" = input_bg ] && suffix=_bg
    echo "== $input.png ($(($(date +%s) - start)) s of generation)"
    "$PY" "$ROOT/bench/quality.py" "$SET" "$RESULTS/$input" --json "$STEM$suffix.json"
done
