# On the lent H200: environment, native builds (beside the weight build of $MODELS, default 2.1), then the
# full-size runs named in $STEPS, each within what is left of $DEADLINE_S seconds:
#   2.1: ours0 ours24 ours16 ours12 up0 up24 (ours0/ours24 run two jobs, the rest one)
#   hy3dgen shapes: ENGINE-ours / ENGINE-up / ENGINE-fast-ours / ENGINE-fast-up, ENGINE hunyuan3d-2 or -2mini
#   (two jobs for ours, one upstream; fast = the turbo DiT with FlashVDM); a step may end in @CAP (GB), and an
#   ours step's name may end in :N to fix the surface decoding's num_chunks (hunyuan3d-2-ours:8000@24)
# Results: $OUT/fullsize.jsonl, log: $OUT/log.txt.
. bench/device/setup_env.sh
W=/tmp/weights; R=$OUT/fullsize.jsonl; L=$OUT/log.txt
start=$(date +%s); deadline=${DEADLINE_S:-560}
bash bench/device/build_native.sh >>$L 2>&1 & B=$!
timeout 300 python3 bench/hunyuan_fullsize.py build --models ${MODELS:-2.1} --weights $W --out $R >>$L 2>&1 || echo "build rc=$?" >>$L
wait $B
for named in $STEPS; do
  step=${named%@*}; capped=""; [ "$step" != "$named" ] && capped="--cap-gb ${named#*@}"
  chunks=""; [ "${step%:*}" != "$step" ] && { chunks="--engine-settings {\"num_chunks\":${step#*:}}"; step=${step%:*}; }
  case $step in
    hunyuan3d-*-fast-ours) args="ours --engine ${step%-fast-ours} --preset fast --jobs 2";;
    hunyuan3d-*-fast-up) args="upstream --engine ${step%-fast-up} --preset fast";;
    hunyuan3d-*-ours) args="ours --engine ${step%-ours} --jobs 2";;
    hunyuan3d-*-up) args="upstream --engine ${step%-up}";;
    ours0|ours24) cap=${step#ours}; args="ours --jobs 2 --cap-gb $cap";;
    ours*) cap=${step#ours}; args="ours --jobs 1 --cap-gb $cap";;
    up*) cap=${step#up}; args="upstream --cap-gb $cap";;
  esac
  left=$(( deadline - ($(date +%s) - start) - 5 ))
  [ $left -lt 30 ] && { echo "== $named skipped: ${left}s left" >>$L; continue; }
  limit=$(( left < ${STEP_S:-150} ? left : ${STEP_S:-150} ))
  echo "== $named $(date +%T) limit ${limit}s" >>$L
  timeout $limit python3 bench/hunyuan_fullsize.py $args $capped $chunks --weights $W --out $R >>$L 2>&1 || echo "$named rc=$?" >>$L
done
grep -v "^RESULT" $L | grep -v "^\s*$" | tail -60
