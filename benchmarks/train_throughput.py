"""Images/s of one DDPM training step of the MNIST U-Net, its FLOPs, and its share of this machine's matmul rate.

Run on a quiet machine: `.venv/bin/python benchmarks/train_throughput.py [--batch 128] [--compile]`. Prints each
variant's images/s and achieved GFLOP/s as `N% of matmul`, the float32 matmul rate being the best of several runs
measured in the same process (interleaved with the steps), so the ratio stands on its own.
"""

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import dgm
from dgm.train import PRESETS
from dgm.unet import UNet

MATMUL_SIZE, MATMUL_REPEATS = 1024, 10


def matmul_seconds(a, b):
    start = time.perf_counter()
    a @ b
    return time.perf_counter() - start


def training_step(model, optimizer, batch):
    optimizer.zero_grad(set_to_none=True)
    loss = model.loss(batch)
    loss.backward()
    optimizer.step()


def step_seconds(model, optimizer, batch):
    start = time.perf_counter()
    training_step(model, optimizer, batch)
    return time.perf_counter() - start


def step_flops(model, batch):
    """FLOPs of one training step (forward, backward; the optimizer's elementwise work is not counted)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    with FlopCounterMode(display=False) as counter:
        training_step(model, optimizer, batch)
    return counter.get_total_flops()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=PRESETS["cpu"]["batch_size"])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (each variant's best is kept)")
    parser.add_argument("--channels", type=int, nargs=3, default=list(PRESETS["cpu"]["channels"]),
                        help="U-Net widths (default: the cpu preset's, the shipped models')")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; 1 is steadier on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = torch.rand(args.batch, 1, 28, 28) * 2 - 1
    flops = step_flops(dgm.DDPM(UNet(channels=args.channels)), batch)
    variants = [("plain (contiguous)", torch.contiguous_format, False),
                ("channels_last", torch.channels_last, False)]
    if args.compile:
        variants.append(("channels_last + torch.compile", torch.channels_last, True))
    prepared = []
    for label, memory_format, compiled in variants:
        torch.manual_seed(0)
        network = UNet(channels=args.channels).to(memory_format=memory_format)
        model = dgm.DDPM(torch.compile(network) if compiled else network)
        optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
        variant_batch = batch.contiguous(memory_format=memory_format)
        training_step(model, optimizer, variant_batch)  # warm-up (and compilation)
        prepared.append((label, model, optimizer, variant_batch))
    # Interleave the variants and the matmul over several rounds and keep each one's best: on a shared machine
    # this compares them under the same load.
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    best_matmul, best_step = float("inf"), {label: float("inf") for label, *_ in prepared}
    for _ in range(args.rounds):
        for _ in range(MATMUL_REPEATS):
            best_matmul = min(best_matmul, matmul_seconds(a, b))
        for label, model, optimizer, variant_batch in prepared:
            best_step[label] = min(best_step[label], step_seconds(model, optimizer, variant_batch))
    matmul = 2 * MATMUL_SIZE ** 3 / best_matmul / 1e9
    print(f"float32 matmul {MATMUL_SIZE}^3: {matmul:.1f} GFLOP/s (best of {args.rounds * MATMUL_REPEATS}), "
          f"torch threads: {torch.get_num_threads()}, batch {args.batch}, channels {args.channels}, "
          f"{flops / 1e9:.2f} GFLOP per step")
    for label, seconds in best_step.items():
        gflops = flops / seconds / 1e9
        print(f"{label:32s} {args.batch / seconds:7.0f} images/s  {gflops:6.1f} GFLOP/s  "
              f"{100 * gflops / matmul:4.0f}% of matmul")


if __name__ == "__main__":
    main()
