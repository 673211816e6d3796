"""Images/s of one DDPM training step of the MNIST U-Net, its FLOPs, and its share of this machine's matmul rate.

Run on a quiet machine: `.venv/bin/python benchmarks/train_throughput.py [--batch 128] [--compile]`. Prints each
variant's images/s and achieved GFLOP/s as `N% of matmul`, the float32 matmul rate being the best of several runs
measured in the same process, so the ratio stands on its own.
"""

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import dgm
from dgm.unet import UNet

MATMUL_SIZE, MATMUL_REPEATS = 1024, 10


def matmul_gflops():
    """Best-of-several float32 GFLOP/s of a square matmul (2 n^3 FLOPs each)."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    a @ b
    best = float("inf")
    for _ in range(MATMUL_REPEATS):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIZE ** 3 / best / 1e9


def training_step(model, optimizer, batch):
    optimizer.zero_grad(set_to_none=True)
    loss = model.loss(batch)
    loss.backward()
    optimizer.step()


def measure(label, model, batch, steps, matmul):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    with FlopCounterMode(display=False) as counter:
        training_step(model, optimizer, batch)
    flops = counter.get_total_flops()
    training_step(model, optimizer, batch)  # warm-up (and compilation)
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        training_step(model, optimizer, batch)
        best = min(best, time.perf_counter() - start)
    gflops = flops / best / 1e9
    print(f"{label:34s} {len(batch) / best:7.0f} images/s  {flops / 1e9:6.2f} GFLOP/step  "
          f"{gflops:6.1f} GFLOP/s  {100 * gflops / matmul:4.0f}% of matmul")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (best is kept)")
    parser.add_argument("--channels", type=int, nargs=3, default=[32, 64, 64])
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    matmul = matmul_gflops()
    print(f"float32 matmul {MATMUL_SIZE}^3: {matmul:.1f} GFLOP/s (best of {MATMUL_REPEATS}), "
          f"torch threads: {torch.get_num_threads()}, batch {args.batch}, channels {args.channels}")
    batch = torch.rand(args.batch, 1, 28, 28) * 2 - 1
    variants = [("plain (contiguous)", torch.contiguous_format, False),
                ("channels_last", torch.channels_last, False)]
    if args.compile:
        variants.append(("channels_last + torch.compile", torch.channels_last, True))
    for label, memory_format, compiled in variants:
        torch.manual_seed(0)
        network = UNet(channels=args.channels).to(memory_format=memory_format)
        model = dgm.DDPM(torch.compile(network) if compiled else network)
        measure(label, model, batch.contiguous(memory_format=memory_format), args.steps, matmul)
    matmul_after = matmul_gflops()
    print(f"float32 matmul again: {matmul_after:.1f} GFLOP/s (a large change means the machine was busy)")


if __name__ == "__main__":
    main()
