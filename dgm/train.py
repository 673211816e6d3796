"""Train a DDPM on MNIST (Problem 1d): AdamW with warm-up, gradient clipping, EMA, checkpoints, exact resume, DDP.

``dgm train --preset cpu --out runs/mnist`` on a laptop; ``torchrun --nproc-per-node N -m dgm train ...`` on
several GPUs (NCCL) or CPU processes (gloo). Every random choice is a function of (seed, step, rank): the data
order of each epoch and each step's timesteps and noise. So ``--resume`` from a checkpoint ends with the same
weights as a run that was never interrupted.
"""

import argparse
import contextlib
import copy
import csv
import dataclasses
import json
import math
import os
import platform
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torchvision.utils import save_image
from tqdm.auto import tqdm

from dgm.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, load_into, save_checkpoint
from dgm.data import MNISTDataError, load_mnist
from dgm.ddpm import DDPM, LOSS_WEIGHTINGS, PREDICTIONS, TIMESTEP_SAMPLINGS
from dgm.schedules import NOISE_SCHEDULES, rescaled_beta_range
from dgm.unet import TIME_CONDITIONINGS, UNet

CHECKPOINT_FORMAT = "dgm-ddpm-mnist/1"
CHECKPOINT_NAME = "checkpoint"
LOSS_LOG = "loss.csv"
SNAPSHOTS = "snapshots"  # RUN/snapshots/step_0001000: the EMA weights that keep_every keeps
LOSS_LOG_COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")  # of the forward and backward passes; weights and optimizer stay fp32
# Config fields with a fixed set of values: TrainConfig checks them, `dgm train` lists them (with time_conditioning,
# which dgm.unet.UNet checks).
FIXED_CHOICES = {"lr_schedule": LR_SCHEDULES, "precision": PRECISIONS, "noise_schedule": NOISE_SCHEDULES,
                 "prediction": PREDICTIONS, "loss_weighting": LOSS_WEIGHTINGS, "timestep_sampling": TIMESTEP_SAMPLINGS}


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on; saved as JSON next to every checkpoint. ``batch_size`` is global (all ranks)."""

    T: int = 1000
    beta_min: float = 1e-4
    beta_max: float = 0.02
    noise_schedule: str = "linear"  # "linear" from beta_min to beta_max, or "cosine" (dgm.schedules.cosine_schedule)
    prediction: str = "eps"  # what the U-Net predicts: the noise "eps" or the velocity "v" (DDPM.predict_eps)
    channels: tuple = (32, 64, 64)
    attention: bool = False  # self-attention at the U-Net's quarter resolution (dgm.unet.SelfAttention)
    depth: int = 1  # residual blocks per path at the U-Net's half and quarter resolutions (dgm.unet.UNet)
    time_conditioning: str = "add"  # how the U-Net's blocks take t: "add" or "adagn" (dgm.unet.ResidualBlock)
    steps: int = 10_000
    epochs: float | None = None  # if set, overrides steps: that many passes over the training set
    minutes: float | None = None  # if set, a new run sets steps to as many as fit that many minutes (steps_for_budget)
    batch_size: int = 128
    lr: float = 2e-4
    warmup_steps: int = 500
    lr_schedule: str = "constant"  # after warm-up: "constant", or "cosine" decay to zero at the last step
    loss_weighting: str = "uniform"  # of the timesteps in the loss: "uniform" (Ho et al.) or "p2" (DDPM.loss)
    p2_gamma: float = 1.0  # the exponent of the "p2" weighting (1 + SNR)^(-p2_gamma) (DDPM.timestep_weights)
    timestep_sampling: str = "uniform"  # t drawn "uniform", or "weighted" by loss_weighting, terms equal (DDPM.loss)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"
    out: str = "runs/mnist"
    data: str | None = None  # data folder; None is dgm.data.default_root()
    train_subset: int | None = None  # the first N training images only (tests, quick trials)
    sample_every: int = 1000
    sample_n: int = 64
    sample_steps: int = 100
    checkpoint_every: int = 500
    keep_every: int | None = None  # also keep the EMA weights every that many steps and at the end (RUN/snapshots/)
    channels_last: bool = True
    compile: bool = False
    precision: str = "auto"  # "bf16" autocasts on any device, "fp32" never, "auto" where bf16 is native (native_bf16)

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        positive = ("T", "steps", "batch_size", "sample_every", "sample_n", "sample_steps", "checkpoint_every")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.keep_every is not None and (not isinstance(self.keep_every, int) or self.keep_every < 1):
            raise ValueError(f"keep_every must be a positive integer or None, got {self.keep_every!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.train_subset is not None and (not isinstance(self.train_subset, int) or self.train_subset < 1):
            raise ValueError(f"train_subset must be a positive integer or None, got {self.train_subset!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.lr <= 0 or self.grad_clip <= 0 or self.warmup_steps < 0:
            raise ValueError(f"lr and grad_clip must be positive and warmup_steps >= 0, got lr={self.lr}, "
                             f"grad_clip={self.grad_clip}, warmup_steps={self.warmup_steps}")
        for name, allowed in FIXED_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.p2_gamma > 0:
            raise ValueError(f"p2_gamma must be positive, got {self.p2_gamma}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")
        if self.minutes is not None and self.epochs is not None:
            raise ValueError(f"give a run epochs or minutes, not both (got epochs={self.epochs}, "
                             f"minutes={self.minutes})")

    def to_dict(self):
        return {**dataclasses.asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, values):
        """The config from a dict (a checkpoint's JSON); unknown keys are an error, not silently dropped."""
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        return cls(**values)

    @classmethod
    def from_json(cls, path):
        """The config saved beside a checkpoint (``RUN/checkpoint.json``)."""
        return cls.from_dict(json.loads(Path(path).read_text())["config"])


# Starting points, overridden by explicit options. All share the U-Net 32/96/192 except "gpu"; the widths grow at
# the low resolutions, where they cost little. A high rate decayed to zero and a short EMA suit short runs.
# "cpu": the reader's preset: 30 minutes of steps of 32 images, as many as the CPU fits (minutes), in bfloat16 where
#   the CPU computes in it natively (precision "auto"; float32 elsewhere, where the same steps take longer and learn
#   as much: the variant fp32). A step costs about the same per image at batch 32 as at 128, so a quarter of the
#   batch buys four times the steps. Its rate and its P2 weighting won trials of 1,600 steps
#   (results/cpu_preset_trials.sh). Its U-Net has two residual blocks per path at 14 x 14 and 7 x 7 (depth 2;
#   dgm.unet.training_flops prices its steps). The variants (results/cpu_preset_variants.sh) change one setting of
#   the recipe at 6,400 steps, what 30 minutes bought on an AVX512-BF16 CPU: depth 2 beat 9,600 steps at depth 1
#   and 4,800 at depth 3; a lower rate, P2's exponent 2, 7,200 steps, the adaptive group norm, v-prediction, the
#   cosine schedule (with either target), timesteps drawn by P2's weights and EMAs of 0.999 and 0.9995 raised the
#   share by no more than two standard errors. On a CPU with AMX the minutes buy over 15,000 steps, which end at the
#   bar's share, and there the U-Net 64/128/256 in the same minutes scored lower (results/cpu_preset_wide.json); over
#   32,000 steps its full chain stays short of the baseline bar's share, and over 64,000 it does no better. It keeps
#   its EMA weights every 1,600 steps (book chapter "The number of timesteps", "The 30-minute CPU preset").
# "ablation": the CPU recipe of the T = 500 / 1000 / 2000 models the "gpu" ones replaced (results/ablation_on_cpu.json,
#   checkpoints/README.md): 1,700 steps of 128
#   images (3.6 epochs) at the cpu preset's rate, weighting and precision with the U-Net at depth 1, about 17
#   minutes on 2 cores. The earlier recipe (rate 1e-3, uniform weighting, float32: about 40 minutes) made the longer
#   runs of results/README.md.
# "gpu": the recipe of the shipped T = 500 / 1000 / 2000 models (checkpoints/README.md): the U-Net 64/128/256 (2.9 M
#   parameters) for 3,722 steps of 256 images (15.9 epochs) at the rate 1e-3, P2-weighted, bfloat16, EMA 0.998: what a
#   budget of 2.75 minutes bought on one H200 with the five models training side by side (about 2.9 by their loss logs;
#   checkpoints/retrain_on_gpu.sh). An EMA of 0.9995 over 4,492 steps still held 0.9995^4492 = 11% of the random initial
#   weights and drew blurs (results/gpu_ema_0.9995_ablation.json); train() warns when that share exceeds
#   EMA_INITIAL_LIMIT.
PRESETS = {
    "cpu": {"channels": (32, 96, 192), "depth": 2, "batch_size": 32, "minutes": 30, "lr": 4e-3, "warmup_steps": 100,
            "lr_schedule": "cosine", "loss_weighting": "p2", "ema_decay": 0.998, "precision": "auto",
            "sample_every": 3200, "checkpoint_every": 400, "keep_every": 1600},
    "ablation": {"channels": (32, 96, 192), "batch_size": 128, "steps": 1700, "lr": 4e-3, "warmup_steps": 100,
                 "lr_schedule": "cosine", "loss_weighting": "p2", "ema_decay": 0.995, "precision": "auto",
                 "sample_every": 500, "checkpoint_every": 100},
    "gpu": {"channels": (64, 128, 256), "batch_size": 256, "steps": 3722, "lr": 1e-3, "warmup_steps": 500,
            "lr_schedule": "cosine", "loss_weighting": "p2", "ema_decay": 0.998, "precision": "auto",
            "sample_every": 2000, "checkpoint_every": 1000},
}


EMA_INITIAL_LIMIT = 0.01  # the largest share of the initial weights that the EMA may keep at the end of a run


def ema_initial_share(ema_decay, steps):
    """The weight that the EMA, started as a copy of the network, still gives its random initial weights after
    ``steps`` updates: ema_decay ** steps."""
    return ema_decay ** steps


def option_flag(name):
    """The ``dgm train`` option that sets the config field ``name``: ``--p2-gamma`` for ``p2_gamma``."""
    return "--" + name.replace("_", "-")


def select_device(name="auto", local_rank=0):
    """CUDA (this process's GPU under torchrun) if present, else CPU; ``name`` overrides. Apple's MPS is refused: it
    has no float64, in which the schedule tables and the samplers' long respaced jumps are computed (dgm/ddpm.py)."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == "mps":
        raise ValueError("device 'mps' is not supported: Apple's GPU has no float64, which the schedule tables need; "
                         "use --device cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for, but torch finds no CUDA GPU here; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    return device


def ddpm_around(network, config):
    """The DDPM of the config (its schedule, T and prediction target) around a network or a wrapper of it."""
    return DDPM(network, beta_min=config.beta_min, beta_max=config.beta_max, T=config.T,
                noise_schedule=config.noise_schedule, prediction=config.prediction)


def build_model(config):
    """The U-Net noise predictor and the DDPM around it, as the config describes."""
    network = UNet(channels=config.channels, attention=config.attention, depth=config.depth,
                   time_conditioning=config.time_conditioning)
    return network, ddpm_around(network, config)


def seed_for(*keys):
    """A 63-bit seed from integers (seed, purpose, step, rank): independent streams without hand-picked offsets."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


STREAM_DATA_ORDER, STREAM_NOISE, STREAM_SAMPLES = range(3)


def epoch_order(seed, epoch, size):
    """The permutation of the training set used in ``epoch``."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed_for(seed, STREAM_DATA_ORDER, epoch)))


def learning_rate(config, step, steps):
    """Linear warm-up over ``warmup_steps`` steps, then constant or (``lr_schedule="cosine"``) a half cosine that
    reaches zero at step ``steps - 1`` (so the last update is a no-op): short runs end sharper when the rate decays."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    progress = (step + 1 - config.warmup_steps) / max(1, steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def native_bf16(device):
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU that supports it, a CPU with AVX512-BF16 or
    AMX. Elsewhere bfloat16 is emulated: on an AVX2-only CPU it trains the cpu preset's U-Net over ten times slower
    than float32 (benchmarks/train_throughput.py)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_precision(precision, device):
    """``"auto"`` becomes ``"bf16"`` where ``device`` computes in bfloat16 natively, else ``"fp32"``; the others
    stay."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def autocast_context(precision, device):
    """bfloat16 autocast for ``precision="bf16"`` (or "auto" resolved to it); else none. On a CPU with AVX512-BF16
    it trains the cpu preset's U-Net about 1.5 times as fast as fp32 (benchmarks/train_throughput.py)."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def total_steps(config, dataset_size):
    """``steps``, or ``epochs`` passes over the data at the global batch size (a time budget has set ``steps``)."""
    if config.epochs is None:
        return config.steps
    return math.ceil(config.epochs * (dataset_size // config.batch_size))


# A time budget (``minutes``) is spent on steps timed before the run: at most PROBE_SECONDS, or a fiftieth of the
# budget, of steps after PROBE_WARMUP_STEPS untimed ones (at least PROBE_MIN_STEPS timed); the run then takes as many
# steps as fill BUDGET_SHARE of the budget at that pace, leaving the rest for the pace to drift.
PROBE_SECONDS, PROBE_WARMUP_STEPS, PROBE_MIN_STEPS, BUDGET_SHARE = 10.0, 3, 5, 0.95


def steps_for_budget(minutes, seconds_per_step):
    """The steps that fill BUDGET_SHARE of ``minutes`` at ``seconds_per_step`` (at least one)."""
    return max(1, math.floor(minutes * 60 * BUDGET_SHARE / seconds_per_step))


def training_step(training_model, network, ema, optimizer, batch, noise, lr, config, autocast):
    """One AdamW step on ``batch`` at rate ``lr`` with clipped gradients, then the EMA update; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        loss = training_model.loss(batch, generator=noise, weighting=config.loss_weighting,
                                   p2_gamma=config.p2_gamma, timestep_sampling=config.timestep_sampling)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
    optimizer.step()
    with torch.no_grad():
        for averaged, current in zip(ema.parameters(), network.parameters()):
            averaged.lerp_(current, 1 - config.ema_decay)
    return loss


def seconds_per_step(network, config, batch, autocast):
    """The pace of this process's training steps on ``batch``, timed on copies of the network, its EMA and a new
    optimizer under a forked random state, so the run itself is untouched (uncompiled, and without DDP's traffic)."""
    network = copy.deepcopy(network)
    ema = copy.deepcopy(network).requires_grad_(False)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    model = ddpm_around(network, config).to(batch.device)
    noise = torch.Generator(batch.device).manual_seed(0)
    duration = min(PROBE_SECONDS, config.minutes * 60 / 50)
    with torch.random.fork_rng(devices=[batch.device] if batch.device.type == "cuda" else []):
        timed, began = -PROBE_WARMUP_STEPS, None
        while timed < PROBE_MIN_STEPS or time.perf_counter() - began < duration:
            if timed == 0:
                began = time.perf_counter()
            training_step(model, network, ema, optimizer, batch, noise, config.lr, config, autocast).item()  # waits
            timed += 1
    return (time.perf_counter() - began) / timed


class Distributed:
    """Rank and world size from torchrun's environment; initialises the process group when there are several."""

    def __init__(self, device):
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        self.active = self.world_size > 1
        if self.active and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self):
        return self.rank == 0

    def close(self):
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def run_folder_checkpoint(out):
    """The checkpoint file of a run folder (or ``out`` itself if it names a .safetensors file)."""
    return checkpoint_path(out, CHECKPOINT_NAME)


def hardware_name(device):
    """The processor a run trains on, for its records: the GPU's name, or the CPU's model, vector instructions (with
    "+ BF16" where bfloat16 is native, "+ AMX" where matrix tiles compute it) and threads: what its minutes mean."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return device.type
    cpuinfo = Path("/proc/cpuinfo")  # Linux; elsewhere platform's name for the processor
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    model = model or platform.processor() or platform.machine()
    instructions = (torch.backends.cpu.get_cpu_capability() + " + BF16" * native_bf16(device)
                    + " + AMX" * torch.cpu._is_amx_tile_supported())
    return f"{model}, {instructions}, {torch.get_num_threads()} threads"


def run_metadata(config, step, network, world_size=1, hardware=None):
    """What every checkpoint of a run records beside its tensors: format, step, config, model, hardware, versions,
    time."""
    return {"format": CHECKPOINT_FORMAT, "step": step, "world_size": world_size, "config": config.to_dict(),
            "model": network.config(), "hardware": hardware, "torch": torch.__version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def save_run(out, config, step, network, ema, optimizer, world_size=1, hardware=None):
    """Model, EMA and optimizer tensors plus config and step, as RUN/checkpoint.safetensors and .json."""
    tensors = {f"model.{k}": v for k, v in network.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        tensors.update({f"optimizer.{index}.{key}": torch.as_tensor(value) for key, value in state.items()})
    metadata = {**run_metadata(config, step, network, world_size, hardware),
                "optimizer_param_groups": optimizer_state["param_groups"]}
    save_checkpoint(run_folder_checkpoint(out), tensors, metadata)


def save_ema_weights(out, tensors, metadata):
    """The ``ema.*`` tensors alone as OUT/checkpoint.*: what sampling needs, loadable by ``load_run``, not resumable."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {key: value for key, value in metadata.items() if key != "optimizer_param_groups"}
    save_checkpoint(run_folder_checkpoint(out), tensors, {**metadata, "weights": "ema"})
    return out


def snapshot_folder(out, step):
    """Where ``keep_every`` keeps the EMA weights of ``step`` (a folder that ``load_run`` and ``dgm sample`` read)."""
    return Path(out) / SNAPSHOTS / f"step_{step:07d}"


def load_optimizer(optimizer, tensors, metadata, path):
    """Restore AdamW's moments and step counts saved by ``save_run``."""
    state = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    try:
        optimizer.load_state_dict({"state": state, "param_groups": metadata["optimizer_param_groups"]})
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"{path}: the optimizer state does not fit the model ({error})") from None


def load_run(path, device="cpu", weights="ema"):
    """(DDPM, config, metadata) of a run folder or checkpoint file, with its ``weights`` ("ema" or "model")."""
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    path = run_folder_checkpoint(path)
    tensors, metadata = load_checkpoint(path, CHECKPOINT_FORMAT)
    try:
        config = TrainConfig.from_dict(metadata["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has no valid config: {error}") from None
    network, model = build_model(config)
    load_into(network, tensors, f"{weights}.", path)
    return model.to(device).eval(), config, metadata


EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def export_run(run, out, dtype="float32"):
    """Copy a run's EMA weights (what sampling uses), config and loss log to ``out``: a few MB to ship, no optimizer.
    ``dtype`` "float16" halves the file; ``load_run`` computes in float32 either way. Exporting an export keeps the
    name of the training run it came from."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {tuple(EXPORT_DTYPES)}, got {dtype!r}")
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"out must be a folder to export into, but {out} is a file")
    source = run_folder_checkpoint(run)
    tensors, metadata = load_checkpoint(source, CHECKPOINT_FORMAT)
    ema = {name: tensor.to(EXPORT_DTYPES[dtype]) if tensor.is_floating_point() else tensor
           for name, tensor in tensors.items() if name.startswith("ema.")}
    if not ema:
        raise CheckpointError(f"{source} has no EMA weights")
    out = save_ema_weights(out, ema, {**metadata, "exported_from": metadata.get("exported_from", str(run)),
                                      "weights_dtype": dtype})
    log = source.parent / LOSS_LOG
    if log.is_file():
        shutil.copyfile(log, out / LOSS_LOG)
    return out


def export_main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm export", description=export_run.__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="run folder written by `dgm train`")
    parser.add_argument("--out", required=True, help="folder to write (e.g. checkpoints/ddpm_mnist_T1000)")
    parser.add_argument("--dtype", choices=sorted(EXPORT_DTYPES), default="float32",
                        help="stored precision of the weights (float16: half the size; sampling computes in float32)")
    args = parser.parse_args(argv)
    try:
        out = export_run(args.ckpt, args.out, args.dtype)
    except (ValueError, CheckpointError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"exported the EMA weights of {args.ckpt} to {out}")


def truncate_loss_log(path, step):
    """Keep the loss log's rows up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
    if not path.is_file():
        return
    with open(path, newline="") as file:
        rows = [row for row in csv.DictReader(file) if int(row["step"]) <= step]
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, LOSS_LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def training_seconds(run, batch_size, until_step=None):
    """Wall-clock seconds of a run's training steps (up to ``until_step``), summed from its loss log; None if none."""
    log = Path(run) / LOSS_LOG
    if not log.is_file():
        return None
    with open(log, newline="") as file:
        return sum(batch_size / float(row["images_per_s"]) for row in csv.DictReader(file)
                   if until_step is None or int(row["step"]) <= until_step)


def save_sample_grid(ema_model, config, step, device, path):
    """A grid of EMA samples at ``sample_steps`` respaced steps, fixed noise across the run."""
    generator = torch.Generator(device).manual_seed(seed_for(config.seed, STREAM_SAMPLES))
    images = ema_model.sample(config.sample_n, steps=config.sample_steps, generator=generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.float().clamp(-1, 1) * 0.5 + 0.5, path, nrow=int(math.isqrt(config.sample_n)))


def train(config, resume=False, progress=True):
    """Train as ``config`` says and return the run folder; ``resume`` continues from its last checkpoint (a finished
    run is left as it is)."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a run folder, but {out} is a file")
    device = select_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed = Distributed(device)
    config = dataclasses.replace(config, precision=resolve_precision(config.precision, device))  # saved as it ran
    try:
        return _train(config, resume, progress, out, device, distributed)
    finally:
        distributed.close()


def _train(config, resume, progress, out, device, distributed):
    if config.batch_size % distributed.world_size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes "
                         f"{distributed.world_size}")
    local_batch = config.batch_size // distributed.world_size
    images, _ = load_mnist("train", config.data)
    if config.train_subset is not None:
        images = images[:config.train_subset]
    steps_per_epoch = len(images) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(images)} training images")
    steps = total_steps(config, len(images))
    memory_format = torch.channels_last if config.channels_last and device.type == "cpu" else torch.preserve_format

    torch.manual_seed(config.seed)
    network, model = build_model(config)
    network.to(device, memory_format=memory_format)
    model.to(device)
    ema = copy.deepcopy(network).requires_grad_(False)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = 0
    if resume:
        path = run_folder_checkpoint(out)
        tensors, metadata = load_checkpoint(path, CHECKPOINT_FORMAT)
        start = int(metadata["step"])
        if start >= steps:  # a finished run, even one kept as its EMA weights alone, has nothing left to train
            return out
        if metadata.get("weights") == "ema":
            raise CheckpointError(f"{path} holds EMA weights only (made by `dgm export` for sampling); resume from "
                                  "the run folder that `dgm train` wrote")
        load_into(network, tensors, "model.", path)
        load_into(ema, tensors, "ema.", path)
        load_optimizer(optimizer, tensors, metadata, path)

    trained = network
    if distributed.active:
        trained = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        trained = torch.compile(trained)
    training_model = ddpm_around(trained, config).to(device)
    ema_model = ddpm_around(ema, config).to(device).eval()
    autocast = autocast_context(config.precision, device)
    hardware = hardware_name(device)
    if config.minutes is not None and not resume:
        pace = seconds_per_step(network, config, images[:local_batch].to(device).contiguous(
            memory_format=memory_format), autocast)
        steps = torch.tensor(steps_for_budget(config.minutes, pace), device=device)
        if distributed.active:
            dist.broadcast(steps, 0)  # every rank takes the first rank's count
        config = dataclasses.replace(config, steps=int(steps))  # saved so: a resumed run ends at the same step
        steps = config.steps
        if progress and distributed.main:
            tqdm.write(f"{config.minutes:g} minutes at {config.batch_size / pace:.0f} images/s: {steps:,} steps")

    initial_share = ema_initial_share(config.ema_decay, steps)
    if not resume and initial_share > EMA_INITIAL_LIMIT:
        warnings.warn(f"after {steps:,} steps an EMA of {config.ema_decay:g} still holds "
                      f"{initial_share:.1%} of the random initial weights, which blurs "
                      "its samples: lower --ema-decay or train longer", stacklevel=2)
    log, writer = None, None
    if distributed.main:
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / LOSS_LOG
        if resume:
            truncate_loss_log(log_path, start)
        else:
            log_path.unlink(missing_ok=True)
        new_log = not log_path.is_file()
        log = open(log_path, "a", newline="")
        writer = csv.writer(log)
        if new_log:
            writer.writerow(LOSS_LOG_COLUMNS)

    bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"training ({config.precision})", unit="step",
               disable=not (progress and distributed.main), dynamic_ncols=True)
    noise = torch.Generator(device)
    order, order_epoch = None, None
    try:
        for step in bar:
            began = time.perf_counter()
            epoch, position = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = epoch_order(config.seed, epoch, len(images)), epoch
            first = position * config.batch_size + distributed.rank * local_batch
            batch = images[order[first:first + local_batch]].to(device).contiguous(memory_format=memory_format)
            noise.manual_seed(seed_for(config.seed, STREAM_NOISE, step, distributed.rank))
            loss = training_step(training_model, network, ema, optimizer, batch, noise,
                                 learning_rate(config, step, steps), config, autocast)
            done = step + 1
            if distributed.main:
                loss_value = loss.item()
                rate = config.batch_size / (time.perf_counter() - began)
                writer.writerow([done, epoch, f"{loss_value:.6f}", f"{learning_rate(config, step, steps):.3e}",
                                 f"{rate:.1f}"])
                bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{rate:.0f}")
                if done % config.checkpoint_every == 0 or done == steps:
                    log.flush()
                    save_run(out, config, done, network, ema, optimizer, distributed.world_size, hardware)
                if config.keep_every and (done % config.keep_every == 0 or done == steps):
                    save_ema_weights(snapshot_folder(out, done), {f"ema.{k}": v for k, v in ema.state_dict().items()},
                                     run_metadata(config, done, network, distributed.world_size, hardware))
                if done % config.sample_every == 0 or done == steps:
                    save_sample_grid(ema_model, config, done, device, out / "samples" / f"step_{done:07d}.png")
    finally:
        if log is not None:
            log.close()
        bar.close()
    return out


def parse_channels(text):
    """"32,64,64" -> (32, 64, 64)."""
    return tuple(int(c) for c in text.split(","))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm train", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="starting values; explicit options override")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint (its saved config, plus explicit options); "
                             "a finished run is left as it is")
    parser.add_argument("--rescale-betas", action="store_true",
                        help="scale beta_min and beta_max by 1000 / T, as improved DDPM does (a new run only)")
    types = {"channels": parse_channels, "epochs": float, "minutes": float, "data": str, "train_subset": int,
             "keep_every": int}
    choices = {**FIXED_CHOICES, "time_conditioning": TIME_CONDITIONINGS}
    for field in dataclasses.fields(TrainConfig):
        if field.type is bool:
            parser.add_argument(option_flag(field.name), action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS)
        else:
            parser.add_argument(option_flag(field.name), type=types.get(field.name, field.type),
                                choices=choices.get(field.name), default=argparse.SUPPRESS,
                                help=f"default {field.default}" + (" (comma-separated)" * (field.name == "channels")))
    args = vars(parser.parse_args(argv))
    preset, resume, rescale = args.pop("preset"), args.pop("resume"), args.pop("rescale_betas")
    values = dict(PRESETS.get(preset, {}))
    if resume and rescale:
        parser.exit(2, "error: --rescale-betas applies when a run starts; a resumed run keeps its saved betas\n")
    if resume and "minutes" in args:
        parser.exit(2, "error: --minutes sets the steps when a run starts; extend a resumed run with --steps\n")
    if resume:
        out = Path(args.get("out", TrainConfig.out))
        try:
            _, metadata = load_checkpoint(run_folder_checkpoint(out), CHECKPOINT_FORMAT)
        except CheckpointError as error:
            parser.exit(2, f"error: cannot resume: {error}\n")
        values = metadata["config"]
    if {"steps", "epochs"} & args.keys() and "minutes" not in args:
        values["minutes"] = None  # an explicit length replaces the time budget of a preset or a resumed run
    values.update(args)
    try:
        if rescale:
            values["beta_min"], values["beta_max"] = rescaled_beta_range(
                *(values.get(name, getattr(TrainConfig, name)) for name in ("beta_min", "beta_max", "T")))
        config = TrainConfig.from_dict(values)
        out = train(config, resume=resume)
    except (ValueError, CheckpointError, MNISTDataError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"checkpoint: {run_folder_checkpoint(out)}")


if __name__ == "__main__":
    main()
