#!/bin/bash
# The GPU proof in one go, each step under a time limit so that a short lease still brings back what finished:
#   1. every shipped editor's CUDA path on the default model (benchmarks.device_check),
#   2. ROME's throughput for --case-batch 1, 4 and 16 (benchmarks.throughput),
#   3. the findings at a larger n: ROME on as many cases per split as 4 workers finish in the time left.
#
#   bash benchmarks/gpu_proof.sh DATASET_DIR OUT_DIR [SECONDS]      (default 480 s in all)
#
# Needs the harness importable (pip install -e ., or PYTHONPATH at the checkout) with transformers 5.23 or later;
# the results folder of step 3 is packed into OUT_DIR/findings.tgz. docs/performance.md holds the last figures.
set -u
DATA=${1:?give the published-format dataset folder}
OUT=${2:?give the folder for the tables and logs}
BUDGET=${3:-480}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
log() { echo "[$(( $(date +%s) - START )) s] $*" | tee -a "$OUT/proof.log"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/proof.log" 2>&1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  >> "$OUT/proof.log" 2>&1
log "device check"
timeout -k 5 $(( BUDGET * 30 / 100 )) python3 -m benchmarks.device_check --device cuda --models gemma3-270m --edits 2 \
  --dataset-dir "$DATA" --editors ft rome r-rome memit emmet alphaedit grace wise lora ike mend \
  2> "$OUT/device_check.err" | tee "$OUT/device_check.md"
log "throughput"
timeout -k 5 $(( BUDGET * 40 / 100 )) python3 -m benchmarks.throughput --device cuda --model gemma3-270m --editors rome \
  --case-batch 1 4 16 --cases 16 --dataset-dir "$DATA" 2> "$OUT/throughput.err" | tee "$OUT/throughput.md"
REMAINING=$(left)
# Cases per split that 4 workers finish in the time left, from the K = 1 seconds per case (10 if it was not measured).
LIMIT=$(python3 - "$OUT/throughput.md" "$REMAINING" <<'EOF'
import sys
rows = [line.split("|") for line in open(sys.argv[1]) if line.startswith("| rome ")]
seconds = next((float(r[6]) for r in rows if r[4].strip() == "1"), None)
budget = max(int(sys.argv[2]) - 40, 30)  # model load and start-up of the workers
print(10 if seconds is None else max(5, min(100, int(4 * budget / (5 * seconds) * 0.8))))
EOF
)
if [ "$REMAINING" -lt 60 ]; then  # timeout 0 would mean no limit at all
  log "findings skipped: $REMAINING s left"
  exit 0
fi
RUNS=$(mktemp -d "$OUT/runs.XXXXXX")  # a new folder: no earlier run is continued, mixed or removed
log "findings: rome, --limit $LIMIT, -n 4, $REMAINING s left, into $RUNS"
timeout -k 10 -s INT "$REMAINING" python3 -m pytest suites/ --editor rome --model gemma3-270m --dataset-dir "$DATA" \
  --limit "$LIMIT" --record-only --results-dir "$RUNS" --run-name rome -n 4 -q -p no:cacheprovider \
  > "$OUT/findings.log" 2>&1
log "findings exit $?"
tar czf "$OUT/findings.tgz" -C "$RUNS" rome && rm -rf "$RUNS"  # a device returns files two folders down at most
log done
