# On the lent GPU: one slice of the learned shape model's training, continued from the carried run.
#   RUN=shape_v1 SLICE_S=480 ARGS="--steps 6000 --batch 64" bash bench/device/train_run.sh   (carry [".train"])
# .train/$RUN holds what the last call's $OUT brought back (checkpoint parts, log, weights, model card); the
# slice's own come back in $OUT: copy them into .train/$RUN before the next call.
set -u
run=.train/${RUN:-shape_v1}; work=/tmp/train-run
python3 bench/device/checkpoint_parts.py join "$run" "$work" 2>&1 | tail -1
python3 -m backend_local.engines.builtin.learned.train --out "$work" --device cuda --time-limit "${SLICE_S:-480}" \
  --export ${ARGS:-} > /tmp/train.txt 2>&1
rc=$?
python3 bench/device/checkpoint_parts.py split "$work" "$OUT" 2>&1 | tail -1
echo "train rc=$rc (0 finished, 3 stopped at the time limit: run again to continue)"
tail -20 /tmp/train.txt
