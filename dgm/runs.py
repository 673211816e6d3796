"""Run folders on disk: the checkpoint format of ``dgm train``, saving and loading runs, loss logs.

A run folder holds ``checkpoint.safetensors`` (model, EMA and optimizer tensors, with the metadata in its header),
``checkpoint.json`` (the same metadata), ``loss.csv``, sample grids under ``samples/`` and, with ``keep_every``, EMA
snapshots under ``snapshots/``; while ``--overwrite`` replaces it, a hidden stage folder (dgm.run_guard). Sampling
and evaluation read runs through ``load_run``.
"""

import csv
import io
from pathlib import Path

import torch

from dgm.checkpoint import (CheckpointError, checkpoint_metadata, checkpoint_path, load_checkpoint, load_into,
                            save_checkpoint)
from dgm.config import TrainConfig, build_model
from dgm.device import select_device
from dgm.files import atomic_write_bytes, timestamp

CHECKPOINT_FORMAT = "dgm-ddpm-mnist/1"
CHECKPOINT_NAME = "checkpoint"
LOSS_LOG = "loss.csv"
SAMPLES = "samples"  # RUN/samples/step_0001000.png: the sample grids of a run
SNAPSHOTS = "snapshots"  # RUN/snapshots/step_0001000: the EMA weights that keep_every keeps
RUN_ENTRIES = (f"{CHECKPOINT_NAME}.safetensors", f"{CHECKPOINT_NAME}.json", LOSS_LOG, SAMPLES, SNAPSHOTS)
RUN_REPORTS = ("eval_*.json", "learning_curve.json")  # what dgm evaluate and dgm learning-curve write into a run
LOSS_LOG_COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s")


def run_folder_checkpoint(out):
    """The checkpoint file of a run folder (or ``out`` itself if it names a .safetensors file)."""
    return checkpoint_path(out, CHECKPOINT_NAME)


def snapshot_folder(out, step):
    """Where ``keep_every`` keeps the EMA weights of ``step`` (a folder that ``load_run`` and ``dgm sample`` read)."""
    return Path(out) / SNAPSHOTS / f"step_{step:07d}"


def config_of(metadata, path):
    """The TrainConfig that a checkpoint's metadata records; a missing or invalid one is a ``CheckpointError``."""
    try:
        return TrainConfig.from_dict(metadata["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has no valid config: {error}") from None


def run_metadata(config, step, network, world_size=1, hardware=None):
    """What every checkpoint of a run records beside its tensors: format, step, config, model, hardware, versions,
    time."""
    return {"format": CHECKPOINT_FORMAT, "step": step, "world_size": world_size, "config": config.to_dict(),
            "model": network.config(), "hardware": hardware, "torch": torch.__version__,
            "saved_at": timestamp()}


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


def load_optimizer(optimizer, tensors, metadata, path):
    """Restore AdamW's moments and step counts saved by ``save_run``, each moment in its parameter's memory layout
    (the fused kernel reads them flat, alongside the parameter). A run saved with the fused kernel resumes with it
    where ``optimizer`` has it (the same arithmetic, so an exact resume), and without it elsewhere."""
    state = {}
    try:
        for name, tensor in tensors.items():
            if name.startswith("optimizer."):
                _, index, key = name.split(".", 2)
                state.setdefault(int(index), {})[key] = tensor
        groups = [{**group, "fused": group.get("fused") and optimizer.defaults.get("fused")}
                  for group in metadata["optimizer_param_groups"]]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
        for parameter, moments in optimizer.state.items():
            for key, value in moments.items():
                if value.shape == parameter.shape:
                    moments[key] = torch.empty_like(parameter, dtype=value.dtype).copy_(value)
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{path}: the optimizer state does not fit the model ({error})") from None


def load_run(path, device="cpu", weights="ema"):
    """(DDPM, config, metadata) of a run folder or checkpoint file, with its ``weights`` ("ema" or "model")."""
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    path = run_folder_checkpoint(path)
    check_not_set_aside(path)
    tensors, metadata = load_checkpoint(path, CHECKPOINT_FORMAT)
    config = config_of(metadata, path)
    if not any(name.startswith(f"{weights}.") for name in tensors):
        raise CheckpointError(f"{path} holds no {weights!r} weights (an export keeps only the EMA weights): "
                              "load it with weights='ema'")
    network, model = build_model(config)
    load_into(network, tensors, f"{weights}.", path)
    return model.to(select_device(device)).eval(), config, metadata


def run_files(out):
    """What ``dgm train`` and the commands that score a run wrote in ``out``: RUN_ENTRIES, RUN_REPORTS and the
    temporary files of a killed write."""
    return [path for path in Path(out).iterdir() if path.name in RUN_ENTRIES
            or any(path.match(pattern) for pattern in (*RUN_REPORTS, ".*.tmp"))]


def run_kind(out):
    """"run" if ``out`` holds a training run's checkpoint, "export" if an export's, "log" if only a training run's
    loss log (a run stopped before its first checkpoint), else None."""
    try:
        metadata = checkpoint_metadata(run_folder_checkpoint(out))
    except CheckpointError:
        metadata = None
    if metadata is not None and metadata.get("format") == CHECKPOINT_FORMAT:
        return "export" if metadata.get("weights") == "ema" else "run"
    log = Path(out) / LOSS_LOG
    text = log.read_text(errors="replace") if log.is_file() else None
    if text == "" or text is not None and text.split("\n", 1)[0] == ",".join(LOSS_LOG_COLUMNS):
        return "log"  # an empty one too: a run killed as it opened its log
    return None


# While `dgm train --overwrite` replaces a run, the old run's files wait in a hidden folder of the run itself, whose
# name says how far the replacement got, so that the next `dgm train` can finish one cut short (dgm.run_guard).
SETTING_ASIDE = ".dgm-setting-aside"  # the old run's files move in: none of the new run's exist yet
SET_ASIDE = ".dgm-set-aside"  # all moved: the new run trains; it is dropped at the new run's first checkpoint
PUTTING_BACK = ".dgm-putting-back"  # the new run wrote no checkpoint and its files are gone: the old ones move back


def replacement_pending(out):
    """Whether ``out`` holds a run set aside by an ``--overwrite`` that has not ended."""
    return any((Path(out) / name).is_dir() for name in (SETTING_ASIDE, SET_ASIDE, PUTTING_BACK))


def check_not_set_aside(path):
    """Say where a run is whose checkpoint ``path`` is missing because a killed ``--overwrite`` set it aside."""
    path = Path(path)
    if not path.is_file() and replacement_pending(path.parent):
        raise CheckpointError(f"no checkpoint at {path}: a killed `dgm train --overwrite` set the run aside in its "
                              f"folder, and `dgm train --resume --out {path.parent}` puts it back (and trains it on "
                              "if it is unfinished)")


def truncate_loss_log(path, step):
    """Keep the loss log's rows up to ``step`` (a resumed or stopped run drops what came after its checkpoint)."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path, newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("step", "").isdigit() and int(row["step"]) <= step]
    text = io.StringIO()
    writer = csv.DictWriter(text, LOSS_LOG_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())


def training_seconds(run, batch_size, until_step=None):
    """Wall-clock seconds of a run's training steps (up to ``until_step``), summed from its loss log; None if none."""
    log = Path(run) / LOSS_LOG
    if not log.is_file():
        return None
    with open(log, newline="") as file:
        return sum(batch_size / float(row["images_per_s"]) for row in csv.DictReader(file)
                   if until_step is None or int(row["step"]) <= until_step)
