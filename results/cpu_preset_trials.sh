#!/usr/bin/env bash
# The trials behind the cpu preset's choices (book: "The 30-minute CPU preset"). Each is the cpu preset cut to
# 1,600 steps (its cosine decay ending there), with one rate and one timestep weighting, in float32 or bfloat16;
# three of them change the network: self-attention at 7 x 7, the wider U-Net 48/128/256, or two residual blocks
# per path at 14 x 14 and 7 x 7 (--depth 2). They train two side by side with one thread each (with one thread, a
# trial's weights do not depend on what else runs); then each is scored like the preset by `dgm learning-curve`
# (100 respaced steps, sigma^2 = beta_tilde, N = 256) into results/cpu_preset_trials/NAME.json. About 75 minutes
# on the 2-core CPU that ran them.
# Run from the repository root: bash results/cpu_preset_trials.sh
set -euo pipefail
DGM=${DGM:-.venv/bin/dgm}

trial() {  # trial NAME LR WEIGHTING PRECISION [more dgm train options]
  local name=$1 lr=$2 weighting=$3 precision=$4
  shift 4
  OMP_NUM_THREADS=1 "$DGM" train --preset cpu --steps 1600 --keep-every 1600 --sample-every 1600 \
    --lr "$lr" --loss-weighting "$weighting" --precision "$precision" "$@" --out "runs/cpu_trials/$name" \
    > "runs/cpu_trials/$name.log" 2>&1
}

mkdir -p runs/cpu_trials results/cpu_preset_trials
trial p2_lr5e-4 5e-4 p2 fp32 & trial p2_lr8e-3 8e-3 p2 fp32 & wait
trial p2_lr2e-3 2e-3 p2 fp32 & trial uniform_lr2e-3 2e-3 uniform fp32 & wait
trial p2_lr4e-3 4e-3 p2 fp32 & trial uniform_lr4e-3 4e-3 uniform fp32 & wait
trial p2_lr4e-3_bf16 4e-3 p2 bf16 & trial p2_lr4e-3_bf16_attention 4e-3 p2 bf16 --attention & wait
trial p2_lr4e-3_bf16_wide 4e-3 p2 bf16 --channels 48,128,256 & trial p2_lr4e-3_bf16_depth2 4e-3 p2 bf16 --depth 2 & wait
for run in runs/cpu_trials/*/; do
  "$DGM" learning-curve --run "$run" --out "results/cpu_preset_trials/$(basename "$run").json"
done
