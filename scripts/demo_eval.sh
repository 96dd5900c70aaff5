#!/usr/bin/env bash
# Evaluation of the demo models (scripts/demo_model.sh) beside three baselines, all through `colorizer evaluate`:
# on the held-out test split of the openclipart crawl (line art by XDoG) and on OpenMoji's real line art with its
# color twins (drawn by the designers). Writes WORK/eval/<model>-<set>/report.json and grid.png.
#
#   bash scripts/demo_eval.sh [WORK_DIR]      (default data/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-data/demo}
BIN=${BIN:-.venv/bin}
MANIFEST="$WORK/curated/manifest.jsonl"

if [ ! -d "$WORK/openmoji/black" ]; then
  (cd "$WORK" && npm pack openmoji@17.0.0 >/dev/null && tar xzf openmoji-17.0.0.tgz && mv package openmoji-package \
     && rm openmoji-17.0.0.tgz)
  "$BIN/python" scripts/openmoji_pairs.py "$WORK/openmoji-package" "$WORK/openmoji" --size 256 --count 300
fi

for set in test openmoji; do
  if [ "$set" = test ]; then DATA=(--data "$MANIFEST" --split test); else
     DATA=(--data "$WORK/openmoji/color" --lineart "$WORK/openmoji/black"); fi
  for run in demo-gan demo-regression; do
    "$BIN/colorizer" evaluate --model "$WORK/models/$run" "${DATA[@]}" --out "$WORK/eval/$run-$set"
  done
  "$BIN/colorizer" evaluate --baseline lineart "${DATA[@]}" --out "$WORK/eval/lineart-$set"
  "$BIN/colorizer" evaluate --baseline mean-color --mean-from "$MANIFEST" "${DATA[@]}" \
    --out "$WORK/eval/mean-color-$set"
done
echo "reports in $WORK/eval/*/report.json"
