#!/usr/bin/env bash
# The full-length variants of the cpu preset (book: "The 30-minute CPU preset"): each is the preset's recipe at 6,400
# steps, `dgm train --preset cpu --steps 6400` (what 30 minutes bought on the AVX512-BF16 CPU that trained them, before
# the preset had a time budget; the variant steps6400 is that run), with one setting changed, trained alone on both
# cores, then scored like the preset by `dgm learning-curve` (100 respaced steps, sigma^2 = beta_tilde, N = 256) into
# results/cpu_preset_variants/NAME.json. The depths run for as many steps as fit the same minutes; more steps fill
# the rest of the 30 minutes (and 16,000, 32,000 and 64,000 steps, about one, two and five hours, go past them to see
# what more time buys: these three are also judged by the baseline bar, on their full chain, into
# results/cpu_recipe_full_chain/NAME.json), and the adaptive group norm runs for 7,200 steps too, beside them; another
# seed measures how far two runs of the same recipe differ (its last step only); the cosine noise schedule of improved
# DDPM replaces the linear one, v-prediction the noise as the network's target, and both together; the timesteps are
# drawn in proportion to P2's weights instead of weighting the terms; longer EMAs average the same training; and
# float32 trains it as `--precision auto` does on a CPU without native bfloat16 (its minutes are its own hardware's:
# the learning curve records it).
# About fifteen hours on the 2-core AMD EPYC with AVX512-BF16 that ran them; run some variants with
# `bash results/cpu_preset_variants.sh NAME ...`.
# A variant whose run folder holds a checkpoint resumes from it, and a finished one is only scored again: the script
# can be stopped and run again.
# Run from the repository root: bash results/cpu_preset_variants.sh
set -euo pipefail
DGM=${DGM:-.venv/bin/dgm}
declare -A OPTIONS=(
  [steps6400]=""
  [depth1]="--depth 1 --steps 9600"
  [depth3]="--depth 3 --steps 4800 --keep-every 1200"
  [p2_gamma2]="--p2-gamma 2"
  [lr3e-3]="--lr 3e-3"
  [steps7200]="--steps 7200 --keep-every 1800 --sample-every 3600"
  [steps16000]="--steps 16000 --keep-every 3200 --sample-every 8000"
  [steps32000]="--steps 32000 --keep-every 6400 --sample-every 8000"
  [steps64000]="--steps 64000 --keep-every 12800 --sample-every 16000"
  [adagn_steps7200]="--time-conditioning adagn --steps 7200 --keep-every 1800 --sample-every 3600"
  [seed1]="--seed 1 --keep-every 6400"
  [cosine]="--noise-schedule cosine"
  [v]="--prediction v"
  [cosine_v]="--noise-schedule cosine --prediction v"
  [weighted_t]="--timestep-sampling weighted"
  [ema0.999]="--ema-decay 0.999"
  [ema0.9995]="--ema-decay 0.9995"
  [fp32]="--precision fp32"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(steps6400 depth1 depth3 p2_gamma2 lr3e-3 steps7200 steps16000 steps32000 steps64000
                                 adagn_steps7200 seed1 cosine v cosine_v weighted_t ema0.999 ema0.9995 fp32)
# Past the budget: judged by the baseline bar too, from N samples; the longest from four times as many (its first
# 256 are the others' 256: the same seed, batches of 256), halving the standard error where the runs near the bar.
declare -A FULL_CHAIN=([steps16000]=256 [steps32000]=256 [steps64000]=1024)
for name in "${names[@]}"; do
  [ -n "${OPTIONS[$name]+set}" ] || { echo "unknown variant $name; known: ${!OPTIONS[*]}" >&2; exit 2; }
done
mkdir -p runs/cpu_variants results/cpu_preset_variants results/cpu_recipe_full_chain
for name in "${names[@]}"; do
  if [ -f "runs/cpu_variants/$name/checkpoint.json" ]; then
    "$DGM" train --resume --out "runs/cpu_variants/$name" >> "runs/cpu_variants/$name.log" 2>&1
  else
    # shellcheck disable=SC2086  # the options are words
    "$DGM" train --preset cpu --steps 6400 ${OPTIONS[$name]} --out "runs/cpu_variants/$name" \
      > "runs/cpu_variants/$name.log" 2>&1
  fi
  "$DGM" learning-curve --run "runs/cpu_variants/$name" --out "results/cpu_preset_variants/$name.json"
  [ -z "${FULL_CHAIN[$name]+set}" ] ||
    "$DGM" evaluate --ckpt "runs/cpu_variants/$name" --n "${FULL_CHAIN[$name]}" --json "results/cpu_recipe_full_chain/$name.json"
done
