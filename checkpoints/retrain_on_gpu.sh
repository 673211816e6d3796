#!/usr/bin/env bash
# Retrain the five MNIST DDPMs of the ablation on one GPU, one after another, score them, and pack them as they finish.
#
#   bash checkpoints/retrain_on_gpu.sh PACK MINUTES N [dgm train options ...]
#
# The recipe is RECIPE below: the gpu preset's U-Net 64/128/256 with two residual blocks per path at 14 x 14 and
# 7 x 7 and self-attention at 7 x 7, compiled (CUDA graphs); options after N go to every run after it.
# 1. T = 1000 trains for MINUTES: its own timing of the compiled step sets its steps (`dgm train --minutes`). If it
#    fails to compile, it trains again with --no-compile, and so do the others.
# 2. benchmarks/train_throughput.py --run runs/gpu/T1000: the step's images/s and its share of the GPU's bfloat16
#    matmul rate, measured alone on the GPU (runs/gpu/benchmark.log).
# 3. T = 500 and 2000 with the problem set's betas, then with --rescale-betas, each for T = 1000's steps, so that the
#    five differ only in T and the betas.
#    Each run saves its checkpoint every CHECKPOINT_EVERY steps (default 2000) and, when it ends, is exported
#    (`dgm export --dtype float16` into checkpoints/, float32 into runs/gpu_fp32/, the weights the ablation scores)
#    and packed into PACK/ddpm_mnist_<model>.tar.gz.
# 4. `dgm ablation --n N --batch-size N --out results/ablation` of the float32 exports, T = 1000 first; then
#    PACK/results.tar.gz: results/ablation.*, the grids, the benchmark and the logs.
#    Unpack in the repository's root: for f in PACK/*.tar.gz; do tar -xzf "$f"; done
# With DEADLINE set (seconds from the start), a run stops EXPORT_SECONDS + PACK_SECONDS before it and the ablation
# PACK_SECONDS before it, having saved every row it finished (the same `dgm ablation` command resumes it). A script
# that fails, or is stopped by TERM or INT, exports and packs on its way out what the runs had saved, and the logs.
# On a GPU machine with torch but without MNIST or a network, bring data/MNIST/raw along as a tar and run
#   tar -xzf mnist.tar.gz && PYTHON=python3 DEADLINE=570 bash checkpoints/retrain_on_gpu.sh PACK 0.7 512
# A tiny end-to-end check on a CPU, in a clone (it replaces checkpoints/ddpm_mnist_T* and results/ablation*):
#   bash checkpoints/retrain_on_gpu.sh /tmp/pack 0.05 8 --channels 4,8,8 --batch-size 8 --train-subset 512 \
#       --device cpu
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,4p' "$0" >&2
    exit 2
fi
PACK=$(realpath -m "$1"); MINUTES=$2; N=$3; shift 3
PYTHON=${PYTHON:-.venv/bin/python}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-2000}
DEADLINE=${DEADLINE:-}
EXPORT_SECONDS=20  # kept back from DEADLINE for exporting a run
PACK_SECONDS=20  # kept back from DEADLINE for packing
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
RECIPE=(--preset gpu --depth 2 --attention --compile)
MODELS=("1000" "500" "2000" "500 --rescale-betas" "2000 --rescale-betas")  # T = 1000 first: it sets the steps
EXTRA=("$@")
EXPORTED=()

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
    if [ "$left" -lt 1 ]; then
        return 124
    fi
    timeout "$left" "$@"
}

train_model() {  # train_model MODEL [options ...]: one run into runs/gpu/; dgm train's status (124: the deadline)
    local model=$1
    shift
    # $model unquoted: "500 --rescale-betas" is T and a flag.
    before_deadline $((EXPORT_SECONDS + PACK_SECONDS)) "$PYTHON" -m dgm train "${RECIPE[@]}" --T $model \
        --checkpoint-every "$CHECKPOINT_EVERY" "$@" "${EXTRA[@]}" --out "runs/gpu/$(run_name "$model")" \
        > "runs/gpu/$(run_name "$model").log" 2>&1
}

export_model() {  # export_model MODEL: the run's last checkpoint, float16 into checkpoints/ and PACK, float32 into
    local name run   # runs/gpu_fp32/
    name=ddpm_mnist_$(run_name "$1")
    run=runs/gpu/$(run_name "$1")
    EXPORTED+=("$(run_name "$1")")
    if [ ! -f "$run/checkpoint.safetensors" ]; then
        log "$name: no checkpoint to export"
        return 1
    fi
    if "$PYTHON" -m dgm export --ckpt "$run" --out "checkpoints/$name" --dtype float16 --overwrite \
            > "runs/gpu/export_$name.log" 2>&1 \
        && "$PYTHON" -m dgm export --ckpt "$run" --out "runs/gpu_fp32/$name" --overwrite \
            >> "runs/gpu/export_$name.log" 2>&1; then
        tar -czf "$PACK/$name.tar.gz" "checkpoints/$name"
        log "$name: exported and packed ($(tail -n 1 "$run/loss.csv"))"
    else
        log "$name: the export failed (runs/gpu/export_$name.log)"
        return 1
    fi
}

pack_results() {
    tar -czf "$PACK/results.tar.gz" results/ablation.json results/ablation.csv results/ablation_grids runs/gpu/*.log \
        2>/dev/null || true
    log "packed: $(ls "$PACK")"
}

finish() {  # on every exit: export the runs that saved a checkpoint and are not exported yet, then pack the results
    local model
    trap - EXIT TERM INT
    for model in "${MODELS[@]}"; do
        if [[ " ${EXPORTED[*]} " != *" $(run_name "$model") "* ]] \
            && [ -f "runs/gpu/$(run_name "$model")/checkpoint.safetensors" ]; then
            export_model "$model" || true
        fi
    done
    pack_results
}

mkdir -p "$PACK"
rm -rf runs/gpu runs/gpu_fp32 results/ablation.json results/ablation.csv results/ablation_grids
rm -f "$PACK"/*.tar.gz
mkdir -p runs/gpu runs/gpu_fp32
trap finish EXIT  # the models saved so far and the logs come back even when a step fails
trap 'exit 143' TERM  # a stopped script, too, runs finish
trap 'exit 130' INT

log "T = 1000: $MINUTES minutes of steps with ${RECIPE[*]} ${EXTRA[*]}"
status=0
train_model 1000 --minutes "$MINUTES" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 124 ]; then
    log "T = 1000 failed (exit $status, runs/gpu/T1000.log); again without --compile"
    tail -n 5 runs/gpu/T1000.log
    mv runs/gpu/T1000.log runs/gpu/T1000_compiled.log
    RECIPE+=(--no-compile)
    status=0
    train_model 1000 --minutes "$MINUTES" --overwrite || status=$?
fi
if [ "$status" -ne 0 ]; then
    log "T = 1000 stopped (exit $status); see runs/gpu/T1000.log"
    exit 1
fi
STEPS=$("$PYTHON" -c 'import sys; from dgm.config import TrainConfig; print(TrainConfig.from_json(sys.argv[1]).steps)' \
    runs/gpu/T1000/checkpoint.json)
export_model 1000 || true
log "benchmark of T = 1000's step"
before_deadline "$PACK_SECONDS" "$PYTHON" benchmarks/train_throughput.py --run runs/gpu/T1000 --rounds 3 \
    > runs/gpu/benchmark.log 2>&1 || log "the benchmark stopped early (exit $?)"
cat runs/gpu/benchmark.log
for model in "${MODELS[@]:1}"; do
    log "T = $model: $STEPS steps"
    status=0
    train_model "$model" --steps "$STEPS" || status=$?
    if [ "$status" -eq 124 ]; then
        log "T = $model stopped at the deadline; its last checkpoint stands"
        break
    elif [ "$status" -ne 0 ]; then
        log "T = $model failed (exit $status, runs/gpu/$(run_name "$model").log)"
        tail -n 5 "runs/gpu/$(run_name "$model").log"
        continue
    fi
    export_model "$model" || true
done
log "ablation: N = $N"
before_deadline "$PACK_SECONDS" "$PYTHON" -m dgm ablation --n "$N" --batch-size "$N" --out results/ablation --models \
    $(for model in "${MODELS[@]}"; do name=runs/gpu_fp32/ddpm_mnist_$(run_name "$model");
      [ -d "$name" ] && echo "$name"; done) \
    > runs/gpu/ablation.log 2>&1 && sed -n '/^model /,$p' runs/gpu/ablation.log \
    || log "the ablation stopped early (exit $?): pack the rows it finished"
