"""Sample a trained MNIST run and save a grid (Problem 1d; respaced steps are Problem 2).

``dgm sample --ckpt runs/mnist --steps 50 --n 64 --out grid.png``; from Python, ``sample_run`` and ``save_grid``.
Sampling uses the run's EMA weights.
"""

import argparse
import io
import math
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

from dgm._arguments import is_json_int
from dgm.checkpoint import CheckpointError
from dgm.ddpm import SAMPLERS, SIGMA_CHOICES
from dgm.device import select_device
from dgm.files import atomic_write_bytes, check_writable
from dgm.paths import CHECKPOINTS, RESULTS
from dgm.runs import load_run


def sample_run(ckpt, n=64, steps=None, sampler="ancestral", sigma="beta", seed=0, device="auto", batch_size=256,
               progress=False):
    """(images in [-1, 1] on the CPU, seconds per image) from the EMA weights of run ``ckpt``, in batches."""
    if not is_json_int(n) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not is_json_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not is_json_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    device = select_device(device)
    model, config, _ = load_run(ckpt, device=device)
    check_steps(steps, config.T)
    if device.type == "cpu":  # as in training: oneDNN's channels-last convolutions are faster on a CPU
        model.eps_model.to(memory_format=torch.channels_last)
    generator = torch.Generator(device).manual_seed(seed)
    batches = []
    start = time.perf_counter()
    for first in range(0, n, batch_size):
        batches.append(model.sample(min(batch_size, n - first), steps=steps, sigma=sigma, sampler=sampler,
                                    generator=generator, progress=progress).float().cpu())
    seconds = time.perf_counter() - start
    return torch.cat(batches).clamp(-1, 1), seconds / n


def check_steps(steps, T):
    """Refuse a number of respaced sampling steps that the model's chain of T steps does not have."""
    if steps is not None and (not is_json_int(steps) or not 1 <= steps <= T):
        raise ValueError(f"--steps must be an integer in 1..T = 1..{T} for this model, got {steps!r}")


def check_image_path(path):
    """Refuse an output path that is not a writable .png file (``save_grid`` writes PNG), before the samples are drawn,
    not after."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"--out must name a PNG file such as grid.png, got {str(path)!r}")
    shipped = next((folder for folder in (CHECKPOINTS, RESULTS) if Path(path).resolve().is_relative_to(folder)), None)
    if shipped is not None:  # a grid there would pass for one of the shipped reports' (dgm ablation keeps its rows)
        raise ValueError(f"--out {path} lies in {shipped.name}/, which holds the shipped files the book reads: write "
                         "the grid elsewhere, such as runs/")
    check_writable(path)


def save_grid(images, path, nrow=None):
    """Save images in [-1, 1] as one PNG grid, square by default, written atomically."""
    path = Path(path)
    png = io.BytesIO()
    save_image(images * 0.5 + 0.5, png, nrow=nrow or math.ceil(math.sqrt(len(images))), format="png")
    atomic_write_bytes(path, png.getvalue())
    return path


def add_sampler_options(parser, sigma="beta"):
    """``--sampler`` and ``--sigma`` (default ``sigma``), as the commands that sample take them."""
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default="ancestral")
    parser.add_argument("--sigma", choices=SIGMA_CHOICES, default=None,
                        help=f"the ancestral sampler's noise: sigma^2 = beta or posterior (beta_tilde); "
                        f"default {sigma}")
    parser.set_defaults(default_sigma=sigma)


def chosen_sigma(parser, args):
    """The ``--sigma`` to sample with, the command's default unless given; refused with DDIM, which adds no noise."""
    if args.sampler == "ddim" and args.sigma is not None:
        parser.exit(2, "error: --sigma sets the ancestral sampler's noise; DDIM adds none\n")
    return args.sigma or args.default_sigma


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm sample", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="run folder or checkpoint .safetensors file")
    parser.add_argument("--steps", type=int, default=None, help="respaced sampling steps (default: all T)")
    parser.add_argument("--n", type=int, default=64, help="samples in the grid (default %(default)s)")
    parser.add_argument("--out", default="grid.png",
                        help="the grid, a .png file outside checkpoints/ and results/ (default %(default)s)")
    add_sampler_options(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of x_T and the noise (default %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    args = parser.parse_args(argv)
    args.sigma = chosen_sigma(parser, args)
    try:
        check_image_path(args.out)
        images, seconds = sample_run(args.ckpt, args.n, args.steps, args.sampler, args.sigma, args.seed, args.device,
                                     progress=True)
    except (ValueError, CheckpointError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"{save_grid(images, args.out)}: {args.n} samples, {seconds:.3f} s per sample")


if __name__ == "__main__":
    main()
