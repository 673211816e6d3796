"""Images/s of `dgm train`'s training step on the MNIST U-Net, its FLOPs, and its share of this device's matmul rate.

Run on a quiet machine: `.venv/bin/python benchmarks/train_throughput.py [--batch 32 128] [--compile]`. Times the
step that `dgm train` runs (dgm.train_step: fused AdamW, clipped gradients, the EMA update) on a batch already on
the device, in each variant (memory layout; bfloat16 autocast as `--precision bf16` runs it; `--compile`, with CUDA
graphs on a GPU), and
prints its images/s and achieved GFLOP/s as `N% of matmul`. The reference is the best of several large matmuls
timed in the same process, interleaved with the steps: float32 on a CPU, bfloat16 on a CUDA GPU (its tensor-core
rate), so the ratio stands on its own (on a CPU bfloat16 steps can pass 100%). Each batch's images/s relative to the
first batch's says what a fixed training time buys at each batch size. Defaults: the `cpu` preset's network and
batch on a CPU, the `gpu` preset's on a GPU; `--run RUN` times the recipe of a run of `dgm train` (its network,
batch, precision and `--compile`), as checkpoints/retrain_on_gpu.sh does for the runs it trains.
"""

import argparse
import time

import torch

from dgm.config import PRESETS, TrainConfig, build_model
from dgm.device import autocast_context, select_device
from dgm.runs import run_folder_checkpoint
from dgm.train_step import standalone_step
from dgm.unet import training_flops

# The reference matmul per device type: (its dtype, its size n of an n x n by n x n product, products per timing).
MATMUL = {"cpu": (torch.float32, 1024, 1), "cuda": (torch.bfloat16, 8192, 10)}
MATMUL_TIMINGS = 10  # per round, interleaved with the steps
STEPS_PER_TIMING = {"cpu": 1, "cuda": 20}  # a GPU step is short: time several to average out the clock's grain
WARMUP_STEPS = 3  # untimed (compilation, the allocator, cuDNN's first calls)


def elapsed(work, device, repeats):
    """Seconds per call of ``work()`` over ``repeats`` calls, waiting for the device before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def prepare_step(config, device, memory_format, batch):
    """A closure running one `dgm train` step of a fresh network of ``config`` on ``batch`` (seeded, warmed up)."""
    torch.manual_seed(0)
    network, _ = build_model(config)
    network.to(device, memory_format=memory_format)
    step = standalone_step(network, config, batch.contiguous(memory_format=memory_format),
                           autocast_context(config.precision, device))
    elapsed(step, device, WARMUP_STEPS)
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU if present), cpu, cuda or cuda:N")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="the network and batch to default to (default: gpu on a GPU, cpu on a CPU)")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="batch sizes to compare (default: the preset's and four times it)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (each variant's best is kept)")
    parser.add_argument("--channels", type=int, nargs=3, default=None, help="U-Net widths (default: the preset's)")
    parser.add_argument("--depth", type=int, default=None,
                        help="residual blocks per path at 14 x 14 and 7 x 7 (default: the preset's)")
    parser.add_argument("--attention", action=argparse.BooleanOptionalAction, default=None,
                        help="self-attention at 7 x 7 (default: the preset's)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="measure only the variants of this precision (default: both)")
    parser.add_argument("--run", default=None,
                        help="a run folder of `dgm train`: time its recipe (instead of --preset and the network's "
                             "options) at its batch, precision and compile setting")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; 1 is steadier on a busy machine)")
    args = parser.parse_args(argv)
    try:
        device = select_device(args.device)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    if args.threads:
        torch.set_num_threads(args.threads)
    network = {name: value for name, value in (("channels", args.channels), ("depth", args.depth),
                                               ("attention", args.attention)) if value is not None}
    if args.run is not None:
        if args.preset or network:
            parser.exit(2, "error: --run times that run's recipe; give it without --preset, --channels, --depth and "
                           "--attention\n")
        try:
            base = TrainConfig.from_json(run_folder_checkpoint(args.run).with_suffix(".json"))
        except (OSError, KeyError, ValueError) as error:
            parser.exit(2, f"error: --run {args.run}: no config of `dgm train` there ({error})\n")
        args.precision = args.precision or base.precision
        args.compile = args.compile or base.compile
        batches = args.batch or [base.batch_size]
    else:
        preset = PRESETS[args.preset or ("gpu" if device.type == "cuda" else "cpu")]
        base = TrainConfig(**{**preset, "minutes": None, **network})
        batches = args.batch or sorted({base.batch_size, 4 * base.batch_size})
    variants = [("plain (contiguous)", torch.contiguous_format, False, "fp32"),
                ("channels_last", torch.channels_last, False, "fp32"),
                ("channels_last + bf16 autocast", torch.channels_last, False, "bf16")]
    if args.compile:
        variants += [("channels_last + torch.compile", torch.channels_last, True, "fp32"),
                     ("channels_last + bf16 + torch.compile", torch.channels_last, True, "bf16")]
    variants = [variant for variant in variants if args.precision in (None, variant[3])]

    flops_per_image = training_flops(build_model(base)[0].to(device), 1)
    steps = []
    for batch_size in batches:
        torch.manual_seed(0)
        batch = torch.rand(batch_size, 1, 28, 28, device=device) * 2 - 1
        for label, memory_format, compiled, precision in variants:
            config = TrainConfig(**{**base.to_dict(), "batch_size": batch_size, "precision": precision,
                                    "compile": compiled})
            steps.append(((label, batch_size), prepare_step(config, device, memory_format, batch)))
    # Interleave the variants and the matmul over several rounds and keep each one's best: on a shared machine
    # this compares them under the same load.
    dtype, size, products = MATMUL[device.type]
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    best_matmul, best_step = float("inf"), {key: float("inf") for key, _ in steps}
    for _ in range(args.rounds):
        for _ in range(MATMUL_TIMINGS):
            best_matmul = min(best_matmul, elapsed(lambda: a @ b, device, products))
        for key, step in steps:
            best_step[key] = min(best_step[key], elapsed(step, device, STEPS_PER_TIMING[device.type]))
    matmul = 2 * size ** 3 / best_matmul / 1e9
    threads = f"torch threads: {torch.get_num_threads()}" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"{str(dtype).removeprefix('torch.')} matmul {size}^3: {matmul:.1f} GFLOP/s (best of {args.rounds * MATMUL_TIMINGS}), "
          f"{threads}, channels {list(base.channels)}, depth {base.depth}, attention {base.attention}, "
          f"{flops_per_image / 1e9:.3f} GFLOP per image")
    first = batches[0]
    for (label, batch_size), seconds in best_step.items():
        gflops = flops_per_image * batch_size / seconds / 1e9
        images_per_second = batch_size / seconds
        relative = images_per_second / (first / best_step[label, first])
        print(f"{label:36s} batch {batch_size:4d} {images_per_second:7.0f} images/s  {gflops:8.1f} GFLOP/s  "
              f"{100 * gflops / matmul:4.0f}% of matmul  {relative:5.2f}x the images/s of batch {first}")


if __name__ == "__main__":
    main()
