"""Images/s of one DDPM training step of the MNIST U-Net, its FLOPs, and its share of this machine's matmul rate.

Run on a quiet machine: `.venv/bin/python benchmarks/train_throughput.py [--batch 32 128] [--compile]`. Prints
each variant's images/s (memory layout; bfloat16 autocast as `dgm train --precision bf16` runs it) and achieved
GFLOP/s as `N% of matmul`, the float32 matmul rate being the best of several runs measured in the same process
(interleaved with the steps), so the ratio stands on its own (bfloat16 can pass 100%); and each batch's images/s
relative to the first batch's, which says what a fixed training time buys at each batch size.
"""

import argparse
import time

import torch

import dgm
from dgm.config import PRESETS, TrainConfig
from dgm.device import autocast_context
from dgm.unet import UNet, training_flops

MATMUL_SIZE, MATMUL_REPEATS = 1024, 10
CPU_PRESET = TrainConfig(**PRESETS["cpu"])  # its network is the default


def matmul_seconds(a, b):
    start = time.perf_counter()
    a @ b
    return time.perf_counter() - start


def training_step(model, optimizer, batch, precision):
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(precision, batch.device):
        loss = model.loss(batch)
    loss.backward()
    optimizer.step()


def step_seconds(model, optimizer, batch, precision):
    start = time.perf_counter()
    training_step(model, optimizer, batch, precision)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+",
                        default=sorted({CPU_PRESET.batch_size, 4 * CPU_PRESET.batch_size}),
                        help="batch sizes to compare (default: the cpu preset's and four times it)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (each variant's best is kept)")
    parser.add_argument("--channels", type=int, nargs=3, default=list(CPU_PRESET.channels),
                        help="U-Net widths (default: the cpu preset's)")
    parser.add_argument("--depth", type=int, default=CPU_PRESET.depth,
                        help="residual blocks per path at 14 x 14 and 7 x 7 (default: the cpu preset's)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; 1 is steadier on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    formats = [("plain (contiguous)", torch.contiguous_format, False, "fp32"),
               ("channels_last", torch.channels_last, False, "fp32"),
               ("channels_last + bf16 autocast", torch.channels_last, False, "bf16")]
    if args.compile:
        formats += [("channels_last + torch.compile", torch.channels_last, True, "fp32"),
                    ("channels_last + bf16 + torch.compile", torch.channels_last, True, "bf16")]
    def network():
        return UNet(channels=args.channels, depth=args.depth)

    prepared, flops = [], {}
    for batch_size in args.batch:
        torch.manual_seed(0)
        batch = torch.rand(batch_size, 1, 28, 28) * 2 - 1
        flops[batch_size] = training_flops(network(), batch_size)
        for label, memory_format, compiled, precision in formats:
            torch.manual_seed(0)
            unet = network().to(memory_format=memory_format)
            model = dgm.DDPM(torch.compile(unet) if compiled else unet)
            optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
            variant_batch = batch.contiguous(memory_format=memory_format)
            training_step(model, optimizer, variant_batch, precision)  # warm-up (and compilation)
            prepared.append(((label, batch_size), model, optimizer, variant_batch, precision))
    # Interleave the variants and the matmul over several rounds and keep each one's best: on a shared machine
    # this compares them under the same load.
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    best_matmul, best_step = float("inf"), {key: float("inf") for key, *_ in prepared}
    for _ in range(args.rounds):
        for _ in range(MATMUL_REPEATS):
            best_matmul = min(best_matmul, matmul_seconds(a, b))
        for key, model, optimizer, variant_batch, precision in prepared:
            best_step[key] = min(best_step[key], step_seconds(model, optimizer, variant_batch, precision))
    matmul = 2 * MATMUL_SIZE ** 3 / best_matmul / 1e9
    print(f"float32 matmul {MATMUL_SIZE}^3: {matmul:.1f} GFLOP/s (best of {args.rounds * MATMUL_REPEATS}), "
          f"torch threads: {torch.get_num_threads()}, channels {args.channels}, depth {args.depth}, "
          f"{flops[args.batch[0]] / args.batch[0] / 1e9:.3f} GFLOP per image")
    first = args.batch[0]
    for (label, batch_size), seconds in best_step.items():
        gflops = flops[batch_size] / seconds / 1e9
        images_per_second = batch_size / seconds
        relative = images_per_second / (first / best_step[label, first])
        print(f"{label:36s} batch {batch_size:4d} {images_per_second:7.0f} images/s  {gflops:6.1f} GFLOP/s  "
              f"{100 * gflops / matmul:4.0f}% of matmul  {relative:5.2f}x the images/s of batch {first}")


if __name__ == "__main__":
    main()
