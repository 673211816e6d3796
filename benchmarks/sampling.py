"""Seconds per MNIST image of DDPM sampling at 1000, 100 and 50 steps (Problem 2's respacing), and their ratios.

Run on a quiet machine: `.venv/bin/python benchmarks/sampling.py [--ckpt RUN] [--n 8]`. Speed does not depend on
the weights, so without --ckpt a freshly initialised U-Net of the cpu preset is timed. The 50-step sampler should
be at least 19x faster than the 1000-step one (the per-step cost is the same network call).
"""

import argparse
import time

import torch

import dgm
from dgm.config import PRESETS
from dgm.runs import load_run
from dgm.unet import UNet

STEP_COUNTS = (1000, 100, 50)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="a run folder; default: an untrained cpu-preset U-Net")
    parser.add_argument("--n", type=int, default=8, help="images per batch")
    parser.add_argument("--sampler", default="ancestral")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; 1 is steadier on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.ckpt:
        model = load_run(args.ckpt)[0]
    else:
        model = dgm.DDPM(UNet(channels=PRESETS["cpu"]["channels"], depth=PRESETS["cpu"]["depth"])).eval()
    model.eps_model.to(memory_format=torch.channels_last)
    model.sample(args.n, steps=5, sampler=args.sampler)  # warm-up
    seconds = {}
    for steps in STEP_COUNTS:
        start = time.perf_counter()
        model.sample(args.n, steps=steps, sampler=args.sampler, generator=torch.Generator().manual_seed(0),
                     progress=True)
        seconds[steps] = (time.perf_counter() - start) / args.n
    print(f"{args.n} images per batch, sampler {args.sampler}, torch threads: {torch.get_num_threads()}")
    for steps in STEP_COUNTS:
        print(f"{steps:5d} steps: {seconds[steps]:8.4f} s per image   "
              f"{seconds[STEP_COUNTS[0]] / seconds[steps]:6.1f}x faster than {STEP_COUNTS[0]} steps")


if __name__ == "__main__":
    main()
