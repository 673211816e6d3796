"""Seconds per MNIST image of DDPM sampling over the full chain and respaced to 100 and 50 steps (Problem 2's
respacing), and their ratios.

Run on a quiet machine: `.venv/bin/python benchmarks/sampling.py [--ckpt RUN] [--n 8]`. Speed does not depend on
the weights, so without --ckpt a freshly initialised U-Net of the cpu preset (T = 1000) is timed. Every step costs
one network call, so the ratios should come close to the ratios of the step counts.
"""

import argparse
import time

import torch

import dgm
from dgm.config import PRESETS
from dgm.runs import load_run
from dgm.unet import UNet

RESPACED_STEPS = (100, 50)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="a run folder; default: an untrained cpu-preset U-Net")
    parser.add_argument("--n", type=int, default=8, help="images per batch")
    parser.add_argument("--sampler", default="ancestral", choices=sorted(dgm.SAMPLERS))
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
    step_counts = [model.T] + [steps for steps in RESPACED_STEPS if steps < model.T]
    model.sample(args.n, steps=min(5, model.T), sampler=args.sampler)  # warm-up
    seconds = {}
    for steps in step_counts:
        start = time.perf_counter()
        model.sample(args.n, steps=steps, sampler=args.sampler, generator=torch.Generator().manual_seed(0),
                     progress=True)
        seconds[steps] = (time.perf_counter() - start) / args.n
    print(f"{args.n} images per batch, sampler {args.sampler}, torch threads: {torch.get_num_threads()}")
    for steps in step_counts:
        print(f"{steps:5d} steps: {seconds[steps]:8.4f} s per image   "
              f"{seconds[model.T] / seconds[steps]:6.1f}x faster than {model.T} steps")


if __name__ == "__main__":
    main()
