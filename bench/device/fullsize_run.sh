# On the lent H200: environment, native builds (beside the weight build), then the full-size runs named in
# $STEPS (ours0 ours24 ours16 ours12 up0 up24; ours0/ours24 run two jobs, the rest one), each within what is
# left of $DEADLINE_S seconds. Results: $OUT/fullsize.jsonl, log: $OUT/log.txt.
. bench/device/setup_env.sh
W=/tmp/weights; R=$OUT/fullsize.jsonl; L=$OUT/log.txt
start=$(date +%s); deadline=${DEADLINE_S:-560}
bash bench/device/build_native.sh >>$L 2>&1 & B=$!
timeout 220 python3 bench/hunyuan_fullsize.py build --weights $W --out $R >>$L 2>&1 || echo "build rc=$?" >>$L
wait $B
for step in $STEPS; do
  case $step in
    ours0|ours24) cap=${step#ours}; args="ours --jobs 2 --cap-gb $cap";;
    ours*) cap=${step#ours}; args="ours --jobs 1 --cap-gb $cap";;
    up*) cap=${step#up}; args="upstream --cap-gb $cap";;
  esac
  left=$(( deadline - ($(date +%s) - start) - 5 ))
  [ $left -lt 30 ] && { echo "== $step skipped: ${left}s left" >>$L; continue; }
  limit=$(( left < ${STEP_S:-150} ? left : ${STEP_S:-150} ))
  echo "== $step $(date +%T) limit ${limit}s" >>$L
  timeout $limit python3 bench/hunyuan_fullsize.py $args --weights $W --out $R >>$L 2>&1 || echo "$step rc=$?" >>$L
done
grep -v "^RESULT" $L | grep -v "^\s*$" | tail -60
