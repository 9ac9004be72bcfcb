# On the lent GPU: one slice of the learned shape model's training, continued from the carried run.
#   RUN=shape_v1 SLICE_S=480 TRAIN_S=900 ARGS="--batch 64" bash bench/device/train_run.sh   (carry [".train"])
# .train/$RUN holds what the last call's $OUT brought back (checkpoint parts, log, steps.txt, model card);
# the slice's own come back in $OUT: copy them into .train/$RUN before the next call (leave the weights
# out of the carry: they are rewritten at every export and the carry is limited to 64 MiB).
# The run's length is fixed by its first call: STEPS, or else TRAIN_S seconds of training divided by the
# s/step a 40-step probe measures on this machine; it is kept in steps.txt so later slices keep the same
# learning-rate schedule. Give STEPS with the replay pool: the probe's steps include filling the pool, so it
# measured 0.69 s/step on an H100 where the run then took 0.19-0.25 (654 steps planned for 900 s).
set -u
# The work folder is per run: on a machine still warm from another run, a shared one made train.py resume
# that run (it continues any checkpoint it finds), as happened on 2026-12-08.
run=.train/${RUN:-shape_v1}; work=/tmp/train-run-${RUN:-shape_v1}; device=${DEVICE:-cuda}
mkdir -p "$run"
python3 bench/learned_data.py --device "$device" --count "${DATA_COUNT:-64}" --repeats 2 2>&1 | tail -1
if [ -f "$run/steps.txt" ]; then
  steps=$(cat "$run/steps.txt")
elif [ -n "${STEPS:-}" ]; then
  steps=$STEPS
else
  python3 -m backend_local.engines.builtin.learned.train --out /tmp/train-probe --device "$device" --steps 40 \
    --eval-every 20 --val-count 8 --checkpoint-every 1000 ${ARGS:-} > /tmp/probe.txt 2>&1 || { tail -20 /tmp/probe.txt; exit 1; }
  steps=$(python3 -c "
import json, sys
rows = [json.loads(l) for l in open('/tmp/train-probe/log.jsonl') if 's_per_step' in l]
print(max(100, int(${TRAIN_S:-900} / rows[-1]['s_per_step'])))")
  echo "probe: $(grep s_per_step /tmp/train-probe/log.jsonl | tail -1)"
fi
echo "run length: $steps steps"
python3 bench/device/checkpoint_parts.py join "$run" "$work" 2>&1 | tail -1
python3 -m backend_local.engines.builtin.learned.train --out "$work" --device "$device" --time-limit "${SLICE_S:-480}" \
  --steps "$steps" --export ${ARGS:-} > /tmp/train.txt 2>&1
rc=$?
python3 bench/device/checkpoint_parts.py split "$work" "$OUT" 2>&1 | tail -1
echo "$steps" > "$OUT/steps.txt"
echo "train rc=$rc (0 finished, 3 stopped at the time limit: run again to continue)"
tail -25 /tmp/train.txt | cut -c1-1500
