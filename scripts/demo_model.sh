#!/usr/bin/env bash
# The demo model in weights/, made from real drawings through the commands a user runs:
#   openclipart-png (Debian) -> local Safebooru -> crawler crawl -> crawler filter -> colorizer train (GAN, and the
#   same U-Net without the adversarial loss as a baseline, side by side for the same time) -> export -> evaluate.
#
#   bash scripts/demo_model.sh [WORK_DIR] [MINUTES]     (defaults: data/demo, 45)
#
# The two trainings run at once, one CPU thread each, so they get the same machine for the same time.
# Stages already done are skipped: re-running continues (training resumes from its checkpoints).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-data/demo}
MINUTES=${2:-45}
PORT=${PORT:-8765}
BIN=${BIN:-.venv/bin}
QUERIES="people animals food plants transportation recreation signs_and_symbols"   # the 7 training categories
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

COMMON=(--config configs/cpu-demo.yaml "data.source=$WORK/curated/manifest.jsonl" "run_dir=$WORK/runs"
        data.workers=1 "train.max_minutes=$MINUTES" train.steps=6000)
OMP_NUM_THREADS=1 "$BIN/colorizer" train "${COMMON[@]}" name=demo-gan > "$WORK/train-gan.log" 2>&1 &
GAN=$!
OMP_NUM_THREADS=1 "$BIN/colorizer" train "${COMMON[@]}" name=demo-regression loss.adversarial_weight=0 \
  > "$WORK/train-regression.log" 2>&1 &
REG=$!
wait $GAN
wait $REG

for run in demo-gan demo-regression; do
  "$BIN/colorizer" export "$WORK/runs/$run/checkpoints/last.pt" --out "$WORK/models/$run" --half
done
bash scripts/demo_eval.sh "$WORK"    # both models and the baselines, on the test split and on OpenMoji
echo "done: models in $WORK/models, reports in $WORK/eval; the app's default is $WORK/models/demo-gan (weights/)"
