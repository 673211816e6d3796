"""Run folders on disk: the checkpoint format of ``dgm train``, saving and loading runs, ``dgm export``, loss logs.

A run folder holds ``checkpoint.safetensors`` (model, EMA and optimizer tensors, with the metadata in its header),
``checkpoint.json`` (the same metadata), ``loss.csv``, sample grids under ``samples/`` and, with ``keep_every``, EMA
snapshots under ``snapshots/``. Sampling and evaluation read runs through ``load_run``.
"""

import argparse
import csv
import io
import os
import shutil
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import torch

from dgm.checkpoint import (CheckpointError, checkpoint_metadata, checkpoint_path, load_checkpoint, load_into,
                            save_checkpoint)
from dgm.config import TrainConfig, build_model
from dgm.device import select_device
from dgm.files import atomic_write_bytes, check_writable, timestamp

CHECKPOINT_FORMAT = "dgm-ddpm-mnist/1"
CHECKPOINT_NAME = "checkpoint"
LOSS_LOG = "loss.csv"
SAMPLES = "samples"  # RUN/samples/step_0001000.png: the sample grids of a run
SNAPSHOTS = "snapshots"  # RUN/snapshots/step_0001000: the EMA weights that keep_every keeps
RUN_ENTRIES = (f"{CHECKPOINT_NAME}.safetensors", f"{CHECKPOINT_NAME}.json", LOSS_LOG, SAMPLES, SNAPSHOTS)
RUN_REPORTS = ("eval_*.json", "learning_curve.json")  # what dgm evaluate and dgm learning-curve write into a run
LOCK = ".dgm-train.lock"  # RUN/.dgm-train.lock: the process id of the dgm train writing the run
LOCK_GRACE = 10  # seconds for which an empty lock is its creator's, who writes its process id next
LOSS_LOG_COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s")
EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


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


def holds_run(out):
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


def check_new_run(out, overwrite=False):
    """Whether a new run in ``out`` must first replace an old one (``replacing_run``), changing nothing itself: an
    empty or new folder needs nothing, a training run is replaced only with ``overwrite``, and an export or a folder
    that holds no run is refused."""
    out = Path(out)
    check_writable(out, folder=True)
    if not out.is_dir() or not any(path.name != LOCK for path in out.iterdir()):
        return False
    held = holds_run(out)
    if held == "export":
        raise ValueError(f"--out {out} holds an export (made by `dgm export` for sampling), which a training run "
                         "never replaces: choose a new --out")
    if held is None:
        raise ValueError(f"--out {out} is not empty and holds no training run: choose a new --out")
    if not overwrite:
        resumable = "continue its run with --resume, " if held == "run" else ""
        raise ValueError(f"--out {out} holds a run: {resumable}pass --overwrite to delete it and start over, or "
                         "choose a new --out")
    return True


@contextmanager
def run_lock(out):
    """Hold ``out`` for one ``dgm train`` at a time: a second one writing the same run would mix two runs'
    checkpoints and loss logs. A lock whose process has ended (killed, say) is taken over. The run folder, if the
    lock created it and it holds nothing when the lock is released (the run stopped before it wrote), is removed."""
    out = Path(out)
    created = not out.exists()
    lock = out / LOCK
    while True:
        out.mkdir(parents=True, exist_ok=True)
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileNotFoundError:  # another dgm train removed the empty folder as it ended: make it again
            continue
        except FileExistsError:
            check_not_training(out)
            with suppress(FileNotFoundError):
                if time.time() - lock.stat().st_mtime < LOCK_GRACE and not lock.read_text().strip():
                    time.sleep(0.1)  # just created, its process id not yet written: look again
                    continue
                lock.unlink()
    with os.fdopen(handle, "w") as file:
        file.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        if created:
            with suppress(OSError):  # not empty, or already gone: another dgm train has it now
                out.rmdir()


def check_not_training(out):
    """Refuse ``out`` while another ``dgm train`` holds its lock."""
    lock = Path(out) / LOCK
    owner = lock_owner(lock)
    if owner is not None:
        raise ValueError(f"--out {out} is being written by another dgm train (process {owner}): wait for it to end, "
                         f"or choose another --out (if no dgm train runs, delete {lock})")


def lock_owner(lock):
    """The process id in ``lock`` if that process still runs, else None."""
    try:
        owner = int(Path(lock).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(owner, 0)
    except PermissionError:  # it runs under another user
        return owner
    except OSError:
        return None
    return owner


def clear_run(out):
    """Delete the run in ``out``: its checkpoint, loss log, samples, snapshots, the reports scored on it and
    temporary files; other files stay."""
    for path in run_files(out):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


# While `dgm train --overwrite` replaces a run, the old run's files wait in a hidden folder of the run itself, whose
# name says how far the replacement got, so that the next `dgm train` can finish one cut short (recover_set_aside).
SETTING_ASIDE = ".dgm-setting-aside"  # the old run's files move in: none of the new run's exist yet
SET_ASIDE = ".dgm-set-aside"  # all moved: the new run trains; it is dropped at the new run's first checkpoint
PUTTING_BACK = ".dgm-putting-back"  # the new run wrote no checkpoint and its files are gone: the old ones move back


def replacement_pending(out):
    """Whether ``out`` holds a run set aside by an ``--overwrite`` that has not ended."""
    return any((Path(out) / name).is_dir() for name in (SETTING_ASIDE, SET_ASIDE, PUTTING_BACK))


def wait_for_recovery(out, seconds=600):
    """For every process of a run but the first: wait while the first one finishes a cut ``--overwrite``
    (``recover_set_aside``), so that none reads the run folder half moved."""
    deadline = time.monotonic() + seconds
    while replacement_pending(out):
        if time.monotonic() > deadline:
            raise CheckpointError(f"{out} still holds a run set aside by `dgm train --overwrite` after {seconds} s")
        time.sleep(0.1)


def check_not_set_aside(path):
    """Say where a run is whose checkpoint ``path`` is missing because a killed ``--overwrite`` set it aside."""
    path = Path(path)
    if not path.is_file() and replacement_pending(path.parent):
        raise CheckpointError(f"no checkpoint at {path}: a killed `dgm train --overwrite` set the run aside in its "
                              f"folder, and `dgm train --resume --out {path.parent}` puts it back (and trains it on "
                              "if it is unfinished)")


def move_back(out, *stages):
    """Move the old run's files into ``out`` from the first of the ``stages`` folders there that exists, and remove
    that folder; False if none exists."""
    folder = next((Path(out) / stage for stage in stages if (Path(out) / stage).is_dir()), None)
    if folder is None:
        return False
    for path in folder.iterdir():
        path.rename(Path(out) / path.name)
    folder.rmdir()
    return True


def put_back(out):
    """Replace what the new run wrote in ``out`` with the old run set aside in it."""
    out = Path(out)
    clear_run(out)
    (out / SET_ASIDE).rename(out / PUTTING_BACK)
    move_back(out, PUTTING_BACK)


def recover_set_aside(out):
    """Finish an ``--overwrite`` that a kill cut short: the new run stays if it saved a checkpoint, else the old run
    comes back. Returns what was done, or None. Call it holding ``run_lock(out)``."""
    out = Path(out)
    if not move_back(out, SETTING_ASIDE, PUTTING_BACK):  # a kill cut a move short: it is finished above
        if not (out / SET_ASIDE).is_dir():
            return None
        if holds_run(out) == "run":
            shutil.rmtree(out / SET_ASIDE)
            return f"deleted the run that the run in {out} replaced, which a kill had left in {out / SET_ASIDE}"
        put_back(out)
    return f"put back the run in {out} that an `--overwrite` killed before its first checkpoint had set aside"


@contextmanager
def replacing_run(out, replace=True):
    """Set the run in ``out`` aside while a new run starts there, yielding the function that drops it at the new run's
    first checkpoint; a stop before that puts it back, so that ``--overwrite`` never leaves neither run."""
    if not replace:
        yield lambda: None
        return
    out = Path(out)
    (out / SETTING_ASIDE).mkdir()
    try:
        for path in run_files(out):
            path.rename(out / SETTING_ASIDE / path.name)
        (out / SETTING_ASIDE).rename(out / SET_ASIDE)
    except BaseException:  # before or after the folder's rename: no file of the new run exists yet
        move_back(out, SETTING_ASIDE, SET_ASIDE)
        raise

    def drop():
        shutil.rmtree(out / SET_ASIDE, ignore_errors=True)

    try:
        yield drop
    except BaseException:
        if holds_run(out) == "run":  # the new run saved a checkpoint, whatever stopped it: it stays
            drop()
        elif (out / SET_ASIDE).is_dir():
            put_back(out)
        raise


def check_export_target(source, out, overwrite=False):
    """Refuse an export into its own run, into or inside a training run, or over an earlier export without
    ``overwrite``."""
    out = Path(out)
    check_writable(out, folder=True)
    inside = next((folder for folder in out.resolve().parents if holds_run(folder) == "run"), None)
    if inside is not None:  # even as a new folder: `dgm train --overwrite` of that run would delete its samples/
        raise ValueError(f"--out {out} lies inside the run {inside}, whose snapshots and samples it would replace: "
                         "export into a folder of its own")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if out.resolve() == run_folder_checkpoint(source).parent.resolve():
        raise ValueError(f"--out {out} is the run being exported: export into another folder")
    try:
        _, metadata = load_checkpoint(run_folder_checkpoint(out), CHECKPOINT_FORMAT)
        exported = metadata.get("weights") == "ema"
    except CheckpointError:
        exported = False
    if not exported:
        raise ValueError(f"--out {out} is not empty and holds no export (a training run, or other files): export "
                         "into a new folder")
    if not overwrite:
        raise ValueError(f"--out {out} holds an export: pass --overwrite to replace it, or choose a new --out")


def export_run(run, out, dtype="float32", overwrite=False):
    """Copy a run's EMA weights (what sampling uses), config and loss log to ``out``: a few MB to ship, no optimizer.
    ``dtype`` "float16" halves the file; ``load_run`` computes in float32 either way. Exporting an export keeps the
    name of the training run it came from. ``out`` must be new or empty, or an earlier export with ``overwrite``."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {tuple(EXPORT_DTYPES)}, got {dtype!r}")
    check_export_target(run, out, overwrite)
    source = run_folder_checkpoint(run)
    tensors, metadata = load_checkpoint(source, CHECKPOINT_FORMAT)
    config_of(metadata, source)
    ema = {name: tensor.to(EXPORT_DTYPES[dtype]) if tensor.is_floating_point() else tensor
           for name, tensor in tensors.items() if name.startswith("ema.")}
    if not ema:
        raise CheckpointError(f"{source} has no EMA weights")
    log = source.parent / LOSS_LOG
    log_bytes = log.read_bytes() if log.is_file() else None
    (Path(out) / LOSS_LOG).unlink(missing_ok=True)  # an earlier export's log, gone before its weights: never mixed
    out = save_ema_weights(out, ema, {**metadata, "exported_from": metadata.get("exported_from", str(run)),
                                      "weights_dtype": dtype})
    if log_bytes is not None:
        atomic_write_bytes(out / LOSS_LOG, log_bytes)
    return out


def export_main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm export", description="Copy a run's EMA weights, config and loss log "
                                     "into a small folder that samples but cannot be resumed.")
    parser.add_argument("--ckpt", required=True, help="run folder written by `dgm train`")
    parser.add_argument("--out", required=True, help="a new folder to write (e.g. checkpoints/ddpm_mnist_T1000)")
    parser.add_argument("--dtype", choices=sorted(EXPORT_DTYPES), default="float32",
                        help="stored precision of the weights (float16: half the size; sampling computes in float32)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    args = parser.parse_args(argv)
    try:
        out = export_run(args.ckpt, args.out, args.dtype, args.overwrite)
    except (ValueError, CheckpointError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"exported the EMA weights of {args.ckpt} to {out}")


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
