# On the lent H200: environment, native builds (beside the weight build), then the full-size runs named in
# $STEPS (ours0 ours24 ours16 ours12 up0 up24), each with its own time limit. Results: $OUT/fullsize.jsonl,
# log: $OUT/log.txt.
. bench/device/setup_env.sh
W=/tmp/weights; R=$OUT/fullsize.jsonl; L=$OUT/log.txt
bash bench/device/build_native.sh >>$L 2>&1 & B=$!
timeout 240 python3 bench/hunyuan_fullsize.py build --weights $W --out $R >>$L 2>&1 || echo "build rc=$?" >>$L
wait $B
for step in $STEPS; do
  case $step in
    ours*) cap=${step#ours}; args="ours --jobs ${JOBS:-2} --cap-gb $cap";;
    up*) cap=${step#up}; args="upstream --cap-gb $cap";;
  esac
  echo "== $step $(date +%T)" >>$L
  timeout ${STEP_S:-200} python3 bench/hunyuan_fullsize.py $args --weights $W --out $R $EXTRA >>$L 2>&1 || echo "$step rc=$?" >>$L
done
grep -v "^RESULT" $L | tail -60
