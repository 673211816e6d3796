#!/usr/bin/env bash
# Retrain the five shipped MNIST DDPMs on one GPU with the `gpu` preset, score them, and pack what changed (issue 4).
#
#   bash checkpoints/retrain_on_gpu.sh PACK MINUTES N [dgm train options ...]
#
# 1. Probe: the five runs side by side for PROBE_STEPS steps; their slowest median step time sets STEPS, the number
#    of steps that fills MINUTES of training. All five then share it, so they differ only in T and the betas.
# 2. Train T = 500, 1000, 2000 with the problem set's betas and T = 500, 2000 with --rescale-betas, side by side
#    (one process each, OMP_NUM_THREADS=2), into runs/gpu/. Extra options go to every `dgm train`.
# 3. `dgm export` each into checkpoints/, `dgm ablation --n N` (results/ablation.*: its T = 1000 full-chain row is
#    the baseline bar's verdict), then a tar of checkpoints/ddpm_mnist_T* and those results, split
#    into parts of at most 15 MiB in PACK. Unpack in the repository's root: cat PACK/part-* | tar -x
#
# On the lent GPU machine, which has torch but no MNIST and no network, carry the IDX files compressed. Here, once:
#   echo /.carry/ >> .git/info/exclude; mkdir -p .carry; tar -czf .carry/mnist.tar.gz data/MNIST/raw
# then run, with carry [".carry"] and timeout_s 600 (one command's limit there):
#   tar -xzf .carry/mnist.tar.gz && PYTHON=python3 bash checkpoints/retrain_on_gpu.sh $OUT 4 512
# Nothing of it has been timed on a GPU yet: the probe, the ablation's sampling and the packing must fit beside the
# MINUTES of training, so the first run there should print its times (it does) and leave a margin.
# Test it on a CPU in a clone (it overwrites checkpoints/ and results/), at a tiny size:
#   bash checkpoints/retrain_on_gpu.sh /tmp/pack 0.1 8 --channels 4,8,8 --batch-size 8 --train-subset 512 --device cpu
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,4p' "$0" >&2
    exit 2
fi
PACK=$(realpath -m "$1"); MINUTES=$2; N=$3; shift 3
PYTHON=${PYTHON:-.venv/bin/python}
PROBE_STEPS=${PROBE_STEPS:-100}
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
MODELS=("500" "1000" "2000" "500 --rescale-betas" "2000 --rescale-betas")

run_name() {  # "500 --rescale-betas" -> T500_rescaled
    set -- $1
    echo "T$1${2:+_rescaled}"
}

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
EXTRA=("$@")

# The loss logs record images/s per step; the first steps (start-up, compilation) are left out by the median.
rm -rf runs/gpu runs/gpu_probe && mkdir -p runs/gpu runs/gpu_probe
echo "probe: $PROBE_STEPS steps of each run, side by side ($(date +%T))"
train_all runs/gpu_probe "$PROBE_STEPS"
STEPS=$("$PYTHON" - "$MINUTES" runs/gpu_probe <<'EOF'
import csv, statistics, sys
from pathlib import Path
from dgm.train import TrainConfig
minutes, folder = float(sys.argv[1]), Path(sys.argv[2])
seconds = []
for log in sorted(folder.glob("*/loss.csv")):
    batch = TrainConfig.from_json(log.parent / "checkpoint.json").batch_size
    seconds.append(statistics.median(batch / float(row["images_per_s"]) for row in csv.DictReader(open(log))))
print(max(1, int(minutes * 60 / max(seconds))))
EOF
)
echo "training: $STEPS steps of each run ($(date +%T))"
train_all runs/gpu "$STEPS"
for model in "${MODELS[@]}"; do
    "$PYTHON" -m dgm export --ckpt "runs/gpu/$(run_name "$model")" --out "checkpoints/ddpm_mnist_$(run_name "$model")"
done
echo "ablation: N = $N ($(date +%T))"
"$PYTHON" -m dgm ablation --n "$N"
mkdir -p "$PACK"
tar -c checkpoints/ddpm_mnist_T* results/ablation.json results/ablation.csv results/ablation_grids | split -b 15M - "$PACK/part-"
echo "packed: $(ls "$PACK" | wc -l) parts, $(du -sh "$PACK" | cut -f1) ($(date +%T))"
