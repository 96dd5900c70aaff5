#!/usr/bin/env bash
# Evaluation of the demo model (scripts/demo_model.sh) beside two baselines, all through `colorizer evaluate` at the
# default inference settings (the model's own scale, hint dots on colored pixels off the lines, 0 and 16 hints):
# on the held-out test split of the openclipart crawl (line art by XDoG) and on 200 OpenMoji drawings the designers
# drew twice (real line art -> their colors), in both color modes, also without the averaged views (--no-tta);
# then flat and soft at fixed resolutions beside the default (the scale check). Writes WORK/eval/<what>/report.json
# and grid.png.
#
#   bash scripts/demo_eval.sh [WORK_DIR] [MODEL_DIR]      (defaults: data/demo, WORK_DIR/models/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-data/demo}
MODEL=${2:-$WORK/models/demo}
BIN=${BIN:-.venv/bin}
MANIFEST="$WORK/curated/manifest.jsonl"

if [ ! -d "$WORK/openmoji/black" ]; then
  (cd "$WORK" && npm pack openmoji@17.0.0 >/dev/null && tar xzf openmoji-17.0.0.tgz && mv package openmoji-package \
     && rm openmoji-17.0.0.tgz)
  "$BIN/python" scripts/openmoji_pairs.py "$WORK/openmoji-package" "$WORK/openmoji" --size 256 --count 200
fi

for set in test openmoji; do
  if [ "$set" = test ]; then DATA=(--data "$MANIFEST" --split test); else
     DATA=(--data "$WORK/openmoji/color" --lineart "$WORK/openmoji/black"); fi
  for mode in flat soft; do
    "$BIN/colorizer" evaluate --model "$MODEL" "${DATA[@]}" --mode $mode --hints 0,16 --out "$WORK/eval/$mode-$set"
    "$BIN/colorizer" evaluate --model "$MODEL" "${DATA[@]}" --mode $mode --hints 0,16 --no-tta \
      --out "$WORK/eval/$mode-$set-no-tta" > /dev/null   # what averaging the views buys
  done
  "$BIN/colorizer" evaluate --baseline lineart "${DATA[@]}" --hints 0,16 --out "$WORK/eval/lineart-$set"
  "$BIN/colorizer" evaluate --baseline mean-color --mean-from "$MANIFEST" "${DATA[@]}" --hints 0,16 \
    --out "$WORK/eval/mean-color-$set"
done
for res in 64 128 192 256 384 512; do   # the scale check: the default must do at least as well as any of these
  for mode in flat soft; do
    "$BIN/colorizer" evaluate --model "$MODEL" --data "$WORK/openmoji/color" --lineart "$WORK/openmoji/black" \
      --mode $mode --hints 0,16 --resolution $res --out "$WORK/eval/res$res-$mode-openmoji" > /dev/null
  done
done
echo "reports in $WORK/eval/*/report.json"
