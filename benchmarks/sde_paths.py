"""Seconds to simulate 100,000 paths of 1,000 Euler-Maruyama steps of the VP-SDE toy, per array backend.

Run on a quiet machine: `.venv/bin/python benchmarks/sde_paths.py`. Prints each simulator's time and its ratio to
the NumPy float64 forward simulation measured in the same run.
"""

import time

import numpy as np
import torch

import dgm
from dgm.mixture import toy_mixture

PATHS, STEPS = 100_000, 1_000


def seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main():
    sde = dgm.VPSDE()
    p0 = toy_mixture()

    def score(x, t):
        return sde.score(p0, x, t)

    x0 = p0.sample(PATHS, rng=0)
    x1 = np.random.default_rng(1).standard_normal(PATHS)
    rows = []
    for label, convert in (("numpy float64", lambda a: a), ("torch float64", torch.from_numpy),
                           ("torch float32", lambda a: torch.from_numpy(a).float())):
        rows.append((f"forward SDE, {label}", seconds(lambda: sde.sample_forward(convert(x0), STEPS, rng=2))))
        rows.append((f"reverse SDE, exact score, {label}",
                     seconds(lambda: sde.sample_reverse(convert(x1), score, STEPS, rng=3))))
        rows.append((f"probability-flow ODE, exact score, {label}",
                     seconds(lambda: sde.sample_probability_flow(convert(x1), score, STEPS))))
    reference = rows[0][1]
    print(f"{PATHS:,} paths x {STEPS:,} steps, torch threads: {torch.get_num_threads()}")
    for label, value in rows:
        print(f"{label:50s} {value:6.2f} s   {value / reference:5.2f}x numpy forward")


if __name__ == "__main__":
    main()
