#!/usr/bin/env bash
# The trials behind the cpu preset's learning rate and timestep weighting (book: "The 30-minute CPU preset").
# Each is the cpu preset cut to a third of its steps (1,600, its cosine decay ending there) at one rate and one
# weighting, trained two side by side with one thread each, then scored like the preset by `dgm learning-curve`
# (100 respaced steps, sigma^2 = beta_tilde, N = 256) into results/cpu_preset_trials/NAME.json.
# About 45 minutes on this 2-core machine. Run from the repository root: bash results/cpu_preset_trials.sh
set -euo pipefail
DGM=${DGM:-.venv/bin/dgm}

trial() {  # trial NAME LR WEIGHTING
  OMP_NUM_THREADS=1 "$DGM" train --preset cpu --steps 1600 --keep-every 1600 --sample-every 1600 \
    --lr "$2" --loss-weighting "$3" --out "runs/cpu_trials/$1" > "runs/cpu_trials/$1.log" 2>&1
}

mkdir -p runs/cpu_trials results/cpu_preset_trials
trial p2_lr5e-4 5e-4 p2 & trial p2_lr8e-3 8e-3 p2 & wait
trial p2_lr2e-3 2e-3 p2 & trial uniform_lr2e-3 2e-3 uniform & wait
trial p2_lr4e-3 4e-3 p2 & trial uniform_lr4e-3 4e-3 uniform & wait
for run in runs/cpu_trials/*/; do
  "$DGM" learning-curve --run "$run" --out "results/cpu_preset_trials/$(basename "$run").json"
done
