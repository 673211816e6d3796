"""The training config of ``dgm train``: every setting a run depends on, its checks, the presets, and the model
(U-Net and DDPM) that a config describes.

Saved as JSON beside every checkpoint (dgm.runs) and read back with ``TrainConfig.from_dict``. README.md, "Presets",
describes the presets.
"""

import dataclasses
import json
import math
from pathlib import Path

from dgm._arguments import is_json_int
from dgm.ddpm import DDPM, LOSS_WEIGHTINGS, PREDICTIONS
from dgm.device import PRECISIONS
from dgm.schedules import NOISE_SCHEDULES, PROBLEM_SET_BETA_MAX, PROBLEM_SET_BETA_MIN, PROBLEM_SET_T
from dgm.unet import UNet

LR_SCHEDULES = ("constant", "cosine")
# Config fields with a fixed set of values: TrainConfig checks them, `dgm train` lists them.
FIXED_CHOICES = {"lr_schedule": LR_SCHEDULES, "precision": PRECISIONS, "noise_schedule": NOISE_SCHEDULES,
                 "prediction": PREDICTIONS, "loss_weighting": LOSS_WEIGHTINGS}
# Fields of options that the library does not have, each with the one value at which its code computes alike: a saved
# config (the shipped checkpoints' does) may carry them at that value, which is dropped; any other value is refused.
FIXED_VALUE_FIELDS = {"time_conditioning": "add", "timestep_sampling": "uniform", "p2_gamma": 1.0}
# The fields that define the model a checkpoint holds: a resumed run cannot change them.
MODEL_FIELDS = ("T", "beta_min", "beta_max", "noise_schedule", "prediction", "channels", "attention", "depth")
# The fields that set which images each step reads (dgm.train.epoch_order): a resumed run keeps them too, so that it
# trains as one uninterrupted run would and its loss log's rates and its config hold for every step.
DATA_ORDER_FIELDS = ("batch_size", "seed", "train_subset")
EMA_INITIAL_LIMIT = 0.01  # the largest share of the initial weights that the EMA may keep at the end of a run


def option_flag(name):
    """The ``dgm train`` option that sets the config field ``name``: ``--batch-size`` for ``batch_size``."""
    return "--" + name.replace("_", "-")


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on; saved as JSON next to every checkpoint. ``batch_size`` is global (all ranks)."""

    T: int = PROBLEM_SET_T
    beta_min: float = PROBLEM_SET_BETA_MIN
    beta_max: float = PROBLEM_SET_BETA_MAX
    noise_schedule: str = "linear"  # "linear" from beta_min to beta_max, or "cosine" (dgm.schedules.cosine_schedule)
    prediction: str = "eps"  # what the U-Net predicts: the noise "eps" or the velocity "v" (DDPM.predict_eps)
    channels: tuple = (32, 64, 64)
    attention: bool = False  # self-attention at the U-Net's quarter resolution (dgm.unet.SelfAttention)
    depth: int = 1  # residual blocks per path at the U-Net's half and quarter resolutions (dgm.unet.UNet)
    steps: int = 10_000
    epochs: float | None = None  # if set, overrides steps: that many passes over the training set
    minutes: float | None = None  # if set, a new run sets steps to as many as fit that many minutes (dgm.train_step)
    batch_size: int = 128
    lr: float = 2e-4
    warmup_steps: int = 500
    lr_schedule: str = "constant"  # after warm-up: "constant", or "cosine" decay to zero at the last step
    loss_weighting: str = "uniform"  # of the timesteps in the loss: "uniform" (Ho et al.) or "p2" (DDPM.loss)
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
    precision: str = "auto"  # "bf16" autocasts on any device, "fp32" never, "auto" where bf16 is native

    def __post_init__(self):
        self.channels = tuple(self.channels) if isinstance(self.channels, (list, tuple)) else self.channels
        for message in self.problems():
            raise ValueError(message)

    def problems(self):
        """One message per invalid setting, each naming its ``dgm train`` option."""
        def bad(name, requirement):
            return f"{option_flag(name)} must be {requirement}, got {getattr(self, name)!r}"

        found = []
        for name in ("T", "steps", "batch_size", "sample_every", "sample_n", "sample_steps", "checkpoint_every",
                     "depth"):
            if not is_json_int(getattr(self, name)) or getattr(self, name) < 1:
                found.append(bad(name, "a positive integer"))
        if is_json_int(self.T) and self.T < 2:
            found.append(bad("T", "an integer >= 2"))
        if not found and self.sample_steps > self.T:
            found.append(f"--sample-steps must be at most --T = {self.T} (the sample grids respace the chain), "
                         f"got {self.sample_steps}")
        for name in ("keep_every", "train_subset"):
            if getattr(self, name) is not None and (not is_json_int(getattr(self, name)) or getattr(self, name) < 1):
                found.append(bad(name, "a positive integer or None"))
        if not is_json_int(self.seed) or self.seed < 0:
            found.append(bad("seed", "a non-negative integer"))
        if not is_json_int(self.warmup_steps) or self.warmup_steps < 0:
            found.append(bad("warmup_steps", "a non-negative integer"))
        if not (is_number(self.beta_min) and is_number(self.beta_max) and 0 < self.beta_min <= self.beta_max < 1):
            found.append(f"--beta-min and --beta-max need 0 < beta_min <= beta_max < 1, got {self.beta_min!r} and "
                         f"{self.beta_max!r}")
        if not (isinstance(self.channels, tuple) and len(self.channels) == 3
                and all(is_json_int(c) and c > 0 for c in self.channels) and self.channels[0] % 2 == 0):
            found.append(bad("channels", "three positive widths, the first even"))
        for name in ("lr", "grad_clip"):
            if not is_number(getattr(self, name)) or getattr(self, name) <= 0:
                found.append(bad(name, "a finite positive number"))
        if not is_number(self.weight_decay) or self.weight_decay < 0:
            found.append(bad("weight_decay", "a finite number >= 0"))
        if not is_number(self.ema_decay) or not 0 <= self.ema_decay < 1:
            found.append(bad("ema_decay", "in [0, 1)"))
        for name in ("epochs", "minutes"):
            value = getattr(self, name)
            if value is not None and (not is_number(value) or value <= 0):
                found.append(bad(name, "a finite positive number"))
        if self.minutes is not None and self.epochs is not None:
            found.append(f"give a run --epochs or --minutes, not both (got {self.epochs} and {self.minutes})")
        for name in ("attention", "channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                found.append(bad(name, "True or False"))
        for name, allowed in FIXED_CHOICES.items():
            if getattr(self, name) not in allowed:
                found.append(bad(name, f"one of {allowed}"))
        return found

    def to_dict(self):
        return {**dataclasses.asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, values):
        """The config from a dict (a checkpoint's JSON). Unknown keys are an error, not silently dropped; a field of
        FIXED_VALUE_FIELDS is dropped at its one supported value and refused at any other."""
        if not isinstance(values, dict):
            raise ValueError(f"a config must be a JSON object, got {type(values).__name__}")
        values = dict(values)
        for name, supported in FIXED_VALUE_FIELDS.items():
            value = values.pop(name, supported)
            if value != supported:
                raise ValueError(f"the config sets {name} = {value!r}, an option this library does not have "
                                 f"(a saved {name} loads only as {supported!r})")
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        return cls(**values)

    @classmethod
    def from_json(cls, path):
        """The config saved beside a checkpoint (``RUN/checkpoint.json``)."""
        return cls.from_dict(json.loads(Path(path).read_text())["config"])


# Starting points, overridden by explicit options; both use P2 weighting, a rate decayed by a cosine to zero and
# bfloat16 where the device computes in it natively. checkpoints/README.md lists the models they made.
PRESETS = {
    # The reader's preset: 30 minutes of steps of 32 images on a CPU, a U-Net 32/96/192 of depth 2.
    "cpu": {"channels": (32, 96, 192), "depth": 2, "batch_size": 32, "minutes": 30, "lr": 4e-3, "warmup_steps": 100,
            "lr_schedule": "cosine", "loss_weighting": "p2", "ema_decay": 0.998, "precision": "auto",
            "sample_every": 3200, "checkpoint_every": 400, "keep_every": 1600},
    # The shipped T = 500 / 1000 / 2000 models: the U-Net 64/128/256, 3,722 steps of 256 images on a GPU.
    "gpu": {"channels": (64, 128, 256), "batch_size": 256, "steps": 3722, "lr": 1e-3, "warmup_steps": 500,
            "lr_schedule": "cosine", "loss_weighting": "p2", "ema_decay": 0.998, "precision": "auto",
            "sample_every": 2000, "checkpoint_every": 1000},
}


def ema_initial_share(ema_decay, steps):
    """The weight that the EMA, started as a copy of the network, still gives its random initial weights after
    ``steps`` updates: ema_decay ** steps."""
    return ema_decay ** steps


def ddpm_around(network, config):
    """The DDPM of the config (its schedule, T and prediction target) around a network or a wrapper of it."""
    return DDPM(network, beta_min=config.beta_min, beta_max=config.beta_max, T=config.T,
                noise_schedule=config.noise_schedule, prediction=config.prediction)


def build_model(config):
    """The U-Net noise predictor and the DDPM around it, as the config describes."""
    network = UNet(channels=config.channels, attention=config.attention, depth=config.depth)
    return network, ddpm_around(network, config)
