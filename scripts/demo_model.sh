#!/usr/bin/env bash
# The demo model in weights/, made from real drawings through the commands a user runs:
#   openclipart-png (Debian) -> local Safebooru -> crawler crawl -> crawler filter -> colorizer train -> export
#   -> evaluate. 17 of openclipart's 22 categories; buildings, education, electronics, office and tools are never
#   seen (scripts/openclipart_catalog.py), for the README's pictures and the app's examples.
#
#   bash scripts/demo_model.sh [WORK_DIR] [MINUTES] [FINETUNE_MINUTES]     (defaults: data/demo, 120, 75)
#
# Two training runs with both CPU threads and nothing else running (configs/cpu-demo.yaml, its recipe chosen by the
# ablation in BENCHMARKS.md): MINUTES from scratch (exported to models/demo-base), then FINETUNE_MINUTES more from
# it (train.init_from, a fresh learning-rate schedule and D) -> models/demo. The shipped model's first run was made
# before line art filled dark areas with ink (lineart.dark_fill_prob); the fine-tune taught it that (BENCHMARKS.md).
# Stages already done are skipped: re-running continues (training resumes).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-data/demo}
MINUTES=${2:-120}
FINETUNE_MINUTES=${3:-75}
PORT=${PORT:-8765}
BIN=${BIN:-.venv/bin}
QUERIES=$("$BIN/python" -c "import sys; sys.path.insert(0, 'scripts'); import openclipart_catalog as c; print(' '.join(c.TRAIN_CATEGORIES))")
export WANDB_MODE=${WANDB_MODE:-offline}
mkdir -p "$WORK"

if [ ! -d "$WORK/openclipart/png" ]; then
  (cd "$WORK" && apt-get download openclipart-png && dpkg-deb -x openclipart-png_*.deb openclipart-deb \
     && mv openclipart-deb/usr/share/openclipart openclipart && rm -rf openclipart-deb openclipart-png_*.deb)
fi
"$BIN/python" scripts/openclipart_catalog.py "$WORK/openclipart/png" "$WORK/catalog" --categories train

"$BIN/crawler" serve-local "$WORK/catalog" --port "$PORT" > "$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 60); do grep -q "serving" "$WORK/serve.log" && break; sleep 1; done
# shellcheck disable=SC2086
"$BIN/crawler" crawl $QUERIES --base-url "http://127.0.0.1:$PORT" --rate 0 --out "$WORK/raw" --no-progress
kill $SERVER

"$BIN/crawler" filter "$WORK/raw" --out "$WORK/curated" --config configs/curate-openclipart.yaml --quiet \
  | tee "$WORK/filter-summary.md"

"$BIN/colorizer" train --config configs/cpu-demo.yaml "data.source=$WORK/curated/manifest.jsonl" \
  "run_dir=$WORK/runs" "train.max_minutes=$MINUTES" train.steps=100000 name=demo > "$WORK/train.log" 2>&1
"$BIN/colorizer" export "$WORK/runs/demo/checkpoints/last.pt" --out "$WORK/models/demo-base" --half
if [ "$FINETUNE_MINUTES" = 0 ]; then
  rm -rf "$WORK/models/demo" && cp -r "$WORK/models/demo-base" "$WORK/models/demo"
else
  "$BIN/colorizer" train --config configs/cpu-demo.yaml "data.source=$WORK/curated/manifest.jsonl" \
    "run_dir=$WORK/runs" "train.max_minutes=$FINETUNE_MINUTES" train.steps=100000 name=demo-ft \
    "train.init_from=$WORK/models/demo-base" > "$WORK/train-ft.log" 2>&1
  "$BIN/colorizer" export "$WORK/runs/demo-ft/checkpoints/last.pt" --out "$WORK/models/demo" --half
fi
bash scripts/demo_eval.sh "$WORK"    # the model and the baselines, on the test split and on OpenMoji
echo "done: model in $WORK/models/demo, reports in $WORK/eval; copy it to weights/ with scripts/demo_card.py"
