#!/usr/bin/env bash
# Retrain the five shipped MNIST DDPMs on one GPU with the `gpu` preset, score them, and pack what changed.
#
#   bash checkpoints/retrain_on_gpu.sh PACK MINUTES N [dgm train options ...]
#
# 1. Probe: the five runs side by side for PROBE_STEPS steps; the slowest run's median step time over the middle half
#    of its steps (when all five are running) sets STEPS, the number of steps that fills MINUTES of training. All
#    five then share it, so they differ only in T and the betas.
# 2. Train T = 500, 1000, 2000 with the problem set's betas and T = 500, 2000 with --rescale-betas, side by side
#    (one process each, OMP_NUM_THREADS=2), into runs/gpu/, each saving its checkpoint every CHECKPOINT_EVERY steps
#    (default 250). `dgm train` keeps the training images on the GPU and steps with a fused AdamW and a foreach EMA,
#    in bfloat16 and channels-last. Extra options go to every `dgm train` (`--compile`, say).
# 3. `dgm export --dtype float16` each into checkpoints/ and pack them into PACK/models.tar.gz-* (parts of at most
#    15 MiB); also export each in float32 into runs/gpu_fp32/, the weights the ablation scores.
# 4. `dgm ablation --n N --batch-size N` of the float32 exports, all N samples of a row at once, T = 1000 first, then
#    PACK/results.tar.gz: results/ablation.*, the grids and the training and export logs.
#    Unpack in the repository's root: cat PACK/models.tar.gz-* | tar -xz; tar -xzf PACK/results.tar.gz
# What is finished is packed as it goes. With DEADLINE set (seconds from the start), training stops EXPORT_SECONDS +
# PACK_SECONDS before it, and the runs' last checkpoints are exported and packed; the ablation stops PACK_SECONDS
# before it, having saved every row it finished (`dgm ablation --models runs/gpu_fp32/ddpm_mnist_*` run again resumes
# it with the report's N and batch). A script that fails, or is stopped by TERM or INT, exports and packs on its way
# out the checkpoints that the runs had saved, and the logs.
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
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-250}
DEADLINE=${DEADLINE:-}
EXPORT_SECONDS=30  # kept back from DEADLINE for exporting the runs
PACK_SECONDS=30  # kept back from DEADLINE for packing
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
MODELS=("1000" "500" "2000" "500 --rescale-betas" "2000 --rescale-betas")
EXTRA=("$@")
EXPORTED=

run_name() {  # "500 --rescale-betas" -> T500_rescaled
    set -- $1
    echo "T$1${2:+_rescaled}"
}

log() { echo "[$(date +%T), ${SECONDS}s] $*"; }

before_deadline() {  # before_deadline RESERVE COMMAND ...: the command, stopped RESERVE seconds before DEADLINE
    local reserve=$1 left
    shift
    if [ -z "$DEADLINE" ]; then
        "$@"
        return
    fi
    left=$((DEADLINE - SECONDS - reserve))
    timeout $((left > 1 ? left : 1)) "$@"
}

train_all() {  # train_all FOLDER STEPS: the five runs side by side; fails if any fails other than at the deadline
    local folder=$1 steps=$2 pids=() model pid failed=0 status
    for model in "${MODELS[@]}"; do
        # $model unquoted: "500 --rescale-betas" is T and a flag.
        before_deadline $((EXPORT_SECONDS + PACK_SECONDS)) "$PYTHON" -m dgm train --preset gpu --T $model \
            --steps "$steps" --checkpoint-every "$CHECKPOINT_EVERY" "${EXTRA[@]}" \
            --out "$folder/$(run_name "$model")" > "$folder/$(run_name "$model").log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        status=0
        wait "$pid" || status=$?
        if [ "$status" -eq 124 ]; then
            log "a run in $folder stopped at the deadline; its last checkpoint stands"
        elif [ "$status" -ne 0 ]; then
            failed=1
        fi
    done
    return $failed
}

export_runs() {  # the runs' last checkpoints: float16 into checkpoints/ and PACK, float32 into runs/gpu_fp32/
    local model run name pids=() names=() exported=() i
    EXPORTED=1
    for model in "${MODELS[@]}"; do
        run=runs/gpu/$(run_name "$model")
        name=ddpm_mnist_$(run_name "$model")
        [ -f "$run/checkpoint.safetensors" ] || continue
        ("$PYTHON" -m dgm export --ckpt "$run" --out "checkpoints/$name" --dtype float16 --overwrite \
            && "$PYTHON" -m dgm export --ckpt "$run" --out "runs/gpu_fp32/$name" --overwrite) \
            > "runs/gpu/export_$name.log" 2>&1 &
        pids+=($!)
        names+=("$name")
    done
    for i in "${!pids[@]}"; do
        if wait "${pids[$i]}"; then
            exported+=("checkpoints/${names[$i]}")
        else
            log "the export of ${names[$i]} failed (runs/gpu/export_${names[$i]}.log)"
        fi
    done
    if [ ${#exported[@]} -gt 0 ]; then
        tar -cz "${exported[@]}" | split -b 15M - "$PACK/models.tar.gz-"
    fi
    log "exported and packed: ${exported[*]:-nothing}"
}

pack_results() {
    tar -czf "$PACK/results.tar.gz" results/ablation.json results/ablation.csv results/ablation_grids runs/gpu/*.log \
        runs/gpu_probe/*.log 2>/dev/null || true
    log "packed: $(ls "$PACK")"
}

finish() {  # on every exit: export what the runs saved (unless done), then pack the results and logs
    trap - EXIT TERM INT
    if [ -z "$EXPORTED" ]; then
        export_runs || true
    fi
    pack_results
}

mkdir -p "$PACK"
rm -rf runs/gpu runs/gpu_probe runs/gpu_fp32 results/ablation.json results/ablation.csv results/ablation_grids
rm -f "$PACK"/models.tar.gz-* "$PACK/results.tar.gz"
mkdir -p runs/gpu runs/gpu_probe runs/gpu_fp32
trap finish EXIT  # the models saved so far and the logs come back even when a step fails
trap 'exit 143' TERM  # a stopped script, too, runs finish
trap 'exit 130' INT
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
export_runs
log "ablation: N = $N"
before_deadline "$PACK_SECONDS" "$PYTHON" -m dgm ablation --n "$N" --batch-size "$N" --models \
    $(for model in "${MODELS[@]}"; do echo "runs/gpu_fp32/ddpm_mnist_$(run_name "$model")"; done) \
    > runs/gpu/ablation.log 2>&1 || log "the ablation stopped early (exit $?): pack what it finished"
tail -n 44 runs/gpu/ablation.log
