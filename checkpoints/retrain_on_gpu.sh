#!/usr/bin/env bash
# Retrain the five shipped MNIST DDPMs on one GPU with the `gpu` preset, score them, and pack what changed.
#
#   bash checkpoints/retrain_on_gpu.sh PACK MINUTES N [dgm train options ...]
#
# 1. Probe: the five runs side by side for PROBE_STEPS steps; the slowest run's median step time over the middle half
#    of its steps (when all five are running) sets STEPS, the number of steps that fills MINUTES of training. All
#    five then share it, so they differ only in T and the betas.
# 2. Train T = 500, 1000, 2000 with the problem set's betas and T = 500, 2000 with --rescale-betas, side by side
#    (one process each, OMP_NUM_THREADS=2), into runs/gpu/. Extra options go to every `dgm train`.
# 3. `dgm export --dtype float16` each into checkpoints/ and pack them into PACK/models.tar.gz-* (parts of at most
#    15 MiB); also export each in float32 into runs/gpu_fp32/, the weights the ablation scores.
# 4. `dgm ablation --n N --batch-size N` of the float32 exports, all N samples of a row at once, T = 1000 first, then
#    PACK/results.tar.gz: results/ablation.*, the grids and the training logs.
#    Unpack in the repository's root: cat PACK/models.tar.gz-* | tar -xz; tar -xzf PACK/results.tar.gz
# With DEADLINE set (seconds from the start), the ablation is stopped in time to pack what it finished: it saves after
# every row, and `dgm ablation --models runs/gpu_fp32/ddpm_mnist_*` run again resumes it with the report's N and batch.
# The shipped models: `bash checkpoints/retrain_on_gpu.sh PACK 2.75 512` on one H200 (checkpoints/README.md).
# A tiny end-to-end check on a CPU, in a clone (it replaces checkpoints/ddpm_mnist_T* and results/ablation*):
#   PROBE_STEPS=8 bash checkpoints/retrain_on_gpu.sh /tmp/pack 0.1 8 --channels 4,8,8 --batch-size 8 \
#       --train-subset 512 --device cpu
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,4p' "$0" >&2
    exit 2
fi
PACK=$(realpath -m "$1"); MINUTES=$2; N=$3; shift 3
PYTHON=${PYTHON:-.venv/bin/python}
PROBE_STEPS=${PROBE_STEPS:-600}
DEADLINE=${DEADLINE:-}
PACK_SECONDS=30  # kept back from DEADLINE for packing
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
MODELS=("1000" "500" "2000" "500 --rescale-betas" "2000 --rescale-betas")
EXTRA=("$@")

run_name() {  # "500 --rescale-betas" -> T500_rescaled
    set -- $1
    echo "T$1${2:+_rescaled}"
}

log() { echo "[$(date +%T), ${SECONDS}s] $*"; }

train_all() {  # train_all FOLDER STEPS: the five runs side by side; fails if any fails
    local folder=$1 steps=$2 pids=() model pid
    for model in "${MODELS[@]}"; do
        # $model unquoted: "500 --rescale-betas" is T and a flag.
        "$PYTHON" -m dgm train --preset gpu --T $model --steps "$steps" "${EXTRA[@]}" \
            --out "$folder/$(run_name "$model")" > "$folder/$(run_name "$model").log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
}

pack_results() {
    tar -czf "$PACK/results.tar.gz" results/ablation.json results/ablation.csv results/ablation_grids runs/gpu/*.log \
        runs/gpu_probe/*.log 2>/dev/null || true
    log "packed: $(ls "$PACK")"
}

mkdir -p "$PACK"
trap pack_results EXIT  # the logs come back even when a step fails
rm -rf runs/gpu runs/gpu_probe runs/gpu_fp32 results/ablation.json results/ablation.csv results/ablation_grids
mkdir -p runs/gpu runs/gpu_probe runs/gpu_fp32
log "probe: $PROBE_STEPS steps of each run, side by side"
train_all runs/gpu_probe "$PROBE_STEPS"
STEPS=$("$PYTHON" - "$MINUTES" runs/gpu_probe <<'EOF'
import csv, statistics, sys
from pathlib import Path
from dgm.config import TrainConfig
minutes, folder = float(sys.argv[1]), Path(sys.argv[2])
seconds = []
for log in sorted(folder.glob("*/loss.csv")):
    batch = TrainConfig.from_json(log.parent / "checkpoint.json").batch_size
    rows = list(csv.DictReader(open(log)))
    middle = rows[len(rows) // 4:max(len(rows) // 4 + 1, 3 * len(rows) // 4)]  # the five runs overlap here
    seconds.append(statistics.median(batch / float(row["images_per_s"]) for row in middle))
    print(f"{log.parent.name}: {seconds[-1] * 1e3:.1f} ms per step", file=sys.stderr)
print(max(1, int(minutes * 60 / max(seconds))))
EOF
)
log "training: $STEPS steps of each run"
train_all runs/gpu "$STEPS"
log "exporting; the T = 1000 run's last step: $(tail -n 1 runs/gpu/T1000/loss.csv)"
for model in "${MODELS[@]}"; do
    "$PYTHON" -m dgm export --ckpt "runs/gpu/$(run_name "$model")" --out "checkpoints/ddpm_mnist_$(run_name "$model")" \
        --dtype float16 --overwrite &
    "$PYTHON" -m dgm export --ckpt "runs/gpu/$(run_name "$model")" \
        --out "runs/gpu_fp32/ddpm_mnist_$(run_name "$model")" &
done
wait
tar -cz checkpoints/ddpm_mnist_T* | split -b 15M - "$PACK/models.tar.gz-"
log "ablation: N = $N"
ABLATION=("$PYTHON" -m dgm ablation --n "$N" --batch-size "$N" --models
          $(for model in "${MODELS[@]}"; do echo "runs/gpu_fp32/ddpm_mnist_$(run_name "$model")"; done))
if [ -n "$DEADLINE" ]; then
    left=$((DEADLINE - SECONDS - PACK_SECONDS))
    ABLATION=(timeout $((left > 1 ? left : 1)) "${ABLATION[@]}")
fi
"${ABLATION[@]}" > runs/gpu/ablation.log 2>&1 || log "the ablation stopped early (exit $?): pack what it finished"
tail -n 44 runs/gpu/ablation.log
