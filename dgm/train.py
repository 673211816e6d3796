"""Train a DDPM on MNIST (Problem 1d): AdamW with warm-up, gradient clipping, EMA, checkpoints, exact resume, DDP.

``dgm train --preset cpu --out runs/mnist`` on a CPU; ``torchrun --nproc-per-node N -m dgm train ...`` on
several GPUs (NCCL) or CPU processes (gloo). Every random choice is a function of (seed, step, rank): the data
order of each epoch and each step's timesteps and noise. So ``--resume`` from a checkpoint ends with the same
weights as a run that was never interrupted. A run stops, keeping its last checkpoint, when its loss or weights
stop being finite or on Ctrl-C. The training images live on the run's device, where each step indexes its batch;
the step itself (fused AdamW, foreach EMA, ``--compile``) and the pace that sets a time budget's steps are
dgm.train_step's. The host reads the losses once per window of LOG_EVERY steps, so it never waits on a step.
"""

import argparse
import contextlib
import copy
import csv
import dataclasses
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from dgm.checkpoint import CheckpointError, checkpoint_metadata, load_checkpoint, load_into, write_sidecar
from dgm.config import (DATA_ORDER_FIELDS, EMA_INITIAL_LIMIT, FIXED_CHOICES, MODEL_FIELDS, PRESETS, TrainConfig,
                        build_model, ddpm_around, ema_initial_share, option_flag)
from dgm.data import MNISTDataError, load_mnist
from dgm.device import autocast_context, hardware_name, resolve_precision, select_device
from dgm.files import check_writable, remove_temporaries
from dgm.run_guard import check_new_run, recover_set_aside, replacing_run, run_lock, wait_for_recovery
from dgm.runs import (CHECKPOINT_FORMAT, LOSS_LOG, LOSS_LOG_COLUMNS, SAMPLES, config_of, load_optimizer,
                      run_folder_checkpoint, run_metadata, save_ema_weights, save_run, snapshot_folder,
                      truncate_loss_log)
from dgm.sampling import save_grid
from dgm.schedules import rescaled_beta_range
from dgm.train_step import build_optimizer, compile_network, seconds_per_step, steps_for_budget, training_step

# Steps between the loss log's writes. The losses of a window stay on the device and are read, and checked, at its
# end, at a checkpoint and at a sample grid: a step itself never waits for the device.
LOG_EVERY = 50


class TrainingStopped(RuntimeError):
    """A run stopped before its last step; the message says which checkpoint it keeps and how to go on, and
    ``exit_code`` is the command's (130 after Ctrl-C, as shells report an interrupt)."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


def seed_for(*keys):
    """A 63-bit seed from integers (seed, purpose, step, rank): independent streams without hand-picked offsets."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


STREAM_DATA_ORDER, STREAM_NOISE, STREAM_SAMPLES = range(3)


def epoch_order(seed, epoch, size):
    """The permutation of the training set used in ``epoch``."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed_for(seed, STREAM_DATA_ORDER, epoch)))


def learning_rate(config, step, steps):
    """Linear warm-up over ``warmup_steps`` steps, then constant or (``lr_schedule="cosine"``) a half cosine that
    reaches zero at step ``steps - 1`` (so the last update is a no-op)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    progress = (step + 1 - config.warmup_steps) / max(1, steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def total_steps(config, dataset_size):
    """``steps``, or ``epochs`` passes over the data at the global batch size (a time budget has set ``steps``)."""
    if config.epochs is None:
        return config.steps
    return math.ceil(config.epochs * (dataset_size // config.batch_size))


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

    def all_true(self, flag):
        """Whether a boolean tensor is true on every rank (so that all ranks stop together)."""
        flag = flag.to(torch.int32)
        if self.active:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag)

    def close(self):
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def all_finite(*modules):
    """A boolean tensor: every parameter of ``modules`` is finite."""
    return torch.stack([torch.isfinite(parameter).all() for module in modules for parameter in module.parameters()]
                       ).all()


def save_sample_grid(ema_model, config, device, path):
    """A grid of EMA samples at ``sample_steps`` respaced steps, fixed noise across the run."""
    generator = torch.Generator(device).manual_seed(seed_for(config.seed, STREAM_SAMPLES))
    save_grid(ema_model.sample(config.sample_n, steps=config.sample_steps, generator=generator).float(), path)


def load_resumable(out, config):
    """(tensors, metadata) of the run in ``out`` to resume with ``config``; refuses a config whose model or data order
    differs (MODEL_FIELDS, DATA_ORDER_FIELDS)."""
    path = run_folder_checkpoint(out)
    tensors, metadata = load_checkpoint(path, CHECKPOINT_FORMAT)
    saved = config_of(metadata, path)
    changed = [f"{option_flag(name)} {getattr(config, name)!r} (the run has {getattr(saved, name)!r})"
               for name in MODEL_FIELDS + DATA_ORDER_FIELDS if getattr(config, name) != getattr(saved, name)]
    if changed:
        raise ValueError(f"a resumed run keeps its model and the order of its images, but {', '.join(changed)}: "
                         "start a new run in another --out")
    if not isinstance(metadata.get("step"), int):
        raise CheckpointError(f"{path} records no step")
    return tensors, metadata


def training_images(config, device):
    """MNIST's training images, or the first ``--train-subset`` of them, all on ``device`` (188 MB as float32): each
    step indexes its batch where it computes."""
    images, _ = load_mnist("train", config.data)
    if config.train_subset is not None:
        if config.train_subset > len(images):
            raise ValueError(f"--train-subset {config.train_subset} exceeds the {len(images)} training images")
        images = images[:config.train_subset]
    if len(images) < config.batch_size:
        raise ValueError(f"--batch-size {config.batch_size} exceeds the {len(images)} training images")
    return images.to(device)


def restore(checkpoint, path, network, ema, optimizer):
    """Load a run folder's checkpoint (tensors, metadata), read from ``path``, into the network, its EMA and the
    optimizer; an export, which holds EMA weights alone, cannot resume."""
    tensors, metadata = checkpoint
    if metadata.get("weights") == "ema":
        raise CheckpointError(f"{path} holds EMA weights only (made by `dgm export` for sampling); resume from "
                              "the run folder that `dgm train` wrote")
    load_into(network, tensors, "model.", path)
    load_into(ema, tensors, "ema.", path)
    load_optimizer(optimizer, tensors, metadata, path)


def budgeted_config(config, network, batch, autocast, distributed, progress):
    """``config`` with ``steps`` set to as many as fit ``config.minutes``, timed on ``batch``; every process takes
    the first one's count."""
    pace = seconds_per_step(network, config, batch, autocast)
    steps = torch.tensor(steps_for_budget(config.minutes, pace), device=batch.device)
    if distributed.active:
        dist.broadcast(steps, 0)
    if progress and distributed.main:
        tqdm.write(f"{config.minutes:g} minutes at {config.batch_size / pace:.0f} images/s: {int(steps):,} steps")
    return dataclasses.replace(config, steps=int(steps))


def open_loss_log(path, start):
    """The loss log cut after step ``start`` (a resumed run rewrites what came after its checkpoint), opened for
    appending, and its CSV writer; a new log gets its header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    truncate_loss_log(path, start)
    new_log = not path.is_file() or path.stat().st_size == 0
    log = open(path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(LOSS_LOG_COLUMNS)
        log.flush()  # a run killed before its first write still leaves a log that marks the folder as its own
    return log, writer


def train(config, resume=False, progress=True, overwrite=False):
    """Train as ``config`` says and return the run folder; ``resume`` continues from its last checkpoint (a finished
    run is left as it is, and a checkpoint.json or temporary files that a kill left are repaired). A new run needs an
    empty or new folder, or ``overwrite`` to replace the run there, which is deleted only once the new run has saved
    its first checkpoint (``replacing_run``)."""
    out = Path(config.out)
    device = select_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed = Distributed(device)
    config = dataclasses.replace(config, precision=resolve_precision(config.precision, device))  # saved as it ran
    try:
        check_writable(out, folder=True)
        checkpoint, replace = None, False
        with run_lock(out) if distributed.main else contextlib.nullcontext():
            if distributed.main:  # under the lock, which removes a folder it made if a refusal leaves it empty
                report_recovery(out, progress)
                replace = not resume and check_new_run(out, overwrite)
            elif resume:
                wait_for_recovery(out)
            if resume:  # under the lock: a run still training owns its checkpoint and its temporary files
                checkpoint = load_resumable(out, config)
                if distributed.main:
                    write_sidecar(run_folder_checkpoint(out), checkpoint[1])
                    remove_temporaries(out)
            with replacing_run(out, replace) as drop_replaced:
                return training_loop(config, checkpoint, progress, out, device, distributed, replace, drop_replaced)
    finally:
        distributed.close()


def report_recovery(out, progress=True):
    """``recover_set_aside``, saying what it did."""
    done = recover_set_aside(out)
    if done and progress:
        tqdm.write(f"dgm train: {done}")


def training_loop(config, checkpoint, progress, out, device, distributed, replacing=False,
                  drop_replaced=lambda: None):
    """Train from ``checkpoint`` (None: from step 0) to the run's last step, saving into ``out`` as ``config`` says;
    ``replacing``: a run set aside in ``out`` waits for the first checkpoint, when ``drop_replaced`` deletes it."""
    if config.batch_size % distributed.world_size:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the number of processes "
                         f"{distributed.world_size}")
    images = training_images(config, device)
    steps = total_steps(config, len(images))
    start = 0 if checkpoint is None else checkpoint[1]["step"]
    if start >= steps:  # a finished run, even one kept as its EMA weights alone, has nothing left to train
        if progress and distributed.main:
            tqdm.write(f"{out} finished its {steps:,} steps; {how_to_extend(out, checkpoint[1])}")
        return out
    memory_format = torch.channels_last if config.channels_last else torch.preserve_format
    network, ema, optimizer = new_training_state(config, device, memory_format)
    if checkpoint is not None:
        restore(checkpoint, run_folder_checkpoint(out), network, ema, optimizer)
    training_model, ema_model = ddpms(network, ema, config, device, distributed)
    autocast = autocast_context(config.precision, device)
    hardware = hardware_name(device)
    if config.minutes is not None and checkpoint is None:
        batch = images[:config.batch_size // distributed.world_size].contiguous(memory_format=memory_format)
        config = budgeted_config(config, network, batch, autocast, distributed, progress)
        steps = config.steps  # saved so: a resumed run ends at the same step

    initial_share = ema_initial_share(config.ema_decay, steps)
    if checkpoint is None and initial_share > EMA_INITIAL_LIMIT:
        warnings.warn(f"after {steps:,} steps an EMA of {config.ema_decay:g} still holds "
                      f"{initial_share:.1%} of the random initial weights, which blurs "
                      "its samples: lower --ema-decay or train longer", stacklevel=3)
    log, writer, log_path = None, None, out / LOSS_LOG
    if distributed.main:
        log, writer = open_loss_log(log_path, start)

    bar = tqdm(batches(images, config, distributed, start, steps, memory_format), initial=start, total=steps,
               desc=f"training ({config.precision})", unit="step", disable=not (progress and distributed.main),
               dynamic_ncols=True)
    noise_generator = torch.Generator(device)
    saved, done = start, start
    window, window_began = [], time.perf_counter()  # (step, epoch, lr, loss on the device) since the last write
    try:
        for step, epoch, batch in bar:
            noise_generator.manual_seed(seed_for(config.seed, STREAM_NOISE, step, distributed.rank))
            if config.compile:
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are no longer read
            lr = learning_rate(config, step, steps)
            loss = training_step(training_model, network, ema, optimizer, batch, noise_generator, lr, config, autocast)
            done = step + 1
            window.append((done, epoch, lr, loss.detach()))
            saving = done % config.checkpoint_every == 0 or done == steps
            keeping = config.keep_every and (done % config.keep_every == 0 or done == steps)
            sampling = done % config.sample_every == 0 or done == steps
            if not (saving or keeping or sampling or done % LOG_EVERY == 0):
                continue
            losses = torch.stack([loss for *_, loss in window]).float()
            healthy = torch.isfinite(losses).all()
            if saving or keeping:
                healthy = healthy & all_finite(network, ema)
            if not distributed.all_true(healthy):  # the window's one wait for the device
                raise TrainingStopped(f"training diverged {diverged_at(window, losses)}: "
                                      f"{kept_checkpoint(out, saved, replacing)}; lower --lr and "
                                      f"{how_to_continue(out, saved, '--lr ...')}")
            if distributed.main:
                rate = write_window(writer, window, losses, config.batch_size, time.perf_counter() - window_began)
                bar.set_postfix(loss=f"{losses.mean():.4f}", img_s=f"{rate:.0f}")
                if saving:
                    log.flush()
                    try:
                        save_run(out, config, done, network, ema, optimizer, distributed.world_size, hardware)
                    except (KeyboardInterrupt, OSError):  # the tensors may be written and only their sidecar cut
                        saved = step_on_disk(out, saved)
                        raise
                    saved = done
                    drop_replaced()  # the new run holds a checkpoint: the run it replaces goes now
                if keeping:
                    save_ema_weights(snapshot_folder(out, done), {f"ema.{k}": v for k, v in ema.state_dict().items()},
                                     run_metadata(config, done, network, distributed.world_size, hardware))
                if sampling:
                    save_sample_grid(ema_model, config, device, out / SAMPLES / f"step_{done:07d}.png")
            window, window_began = [], time.perf_counter()
    except KeyboardInterrupt:
        if saved == steps:  # stopped while drawing the last grid: the run itself is complete
            raise TrainingStopped(f"interrupted while drawing the final samples: {out} finished its {steps:,} steps "
                                  f"and keeps its checkpoint; draw them with `dgm sample --ckpt {out}`",
                                  exit_code=130) from None
        raise TrainingStopped(f"interrupted after step {done}: {kept_checkpoint(out, saved, replacing)}; "
                              f"{how_to_continue(out, saved)}", exit_code=130) from None
    except OSError as error:  # a full disk, say, as a checkpoint, the log or a grid is written
        raise TrainingStopped(f"stopped after step {done}: {error}; {kept_checkpoint(out, saved, replacing)}; once "
                              f"that is fixed, {how_to_continue(out, saved)}") from error
    finally:
        if log is not None:
            log.close()
            truncate_loss_log(log_path, saved)  # the log ends where the checkpoint does
        bar.close()
    return out


def new_training_state(config, device, memory_format):
    """The network that ``config`` describes, seeded by ``config.seed``, its EMA and their optimizer."""
    torch.manual_seed(config.seed)
    network, _ = build_model(config)  # the DDPMs around it come from ``ddpms``, around its wrappers and its EMA
    network.to(device, memory_format=memory_format)
    return network, copy.deepcopy(network).requires_grad_(False), build_optimizer(network, config)


def ddpms(network, ema, config, device, distributed):
    """The DDPM that trains ``network`` (wrapped for DDP and compiled as ``config`` says) and the EMA's, which
    samples."""
    trained = network
    if distributed.active:
        trained = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        trained = compile_network(trained, device)
    return ddpm_around(trained, config).to(device), ddpm_around(ema, config).to(device).eval()


def batches(images, config, distributed, start, steps, memory_format):
    """(step, epoch, batch) for each step from ``start``: each epoch reads the images in its ``epoch_order``, and each
    process takes its share of the global batch."""
    local_batch = config.batch_size // distributed.world_size
    steps_per_epoch = len(images) // config.batch_size
    order, order_epoch = None, None
    for step in range(start, steps):
        epoch, position = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(config.seed, epoch, len(images)).to(images.device), epoch
        first = position * config.batch_size + distributed.rank * local_batch
        yield step, epoch, images[order[first:first + local_batch]].contiguous(memory_format=memory_format)


def write_window(writer, window, losses, batch_size, seconds):
    """The loss log's rows of a window of steps (``losses`` read from the device); returns its images per second."""
    rate = batch_size * len(window) / seconds
    for (step, epoch, lr, _), value in zip(window, losses.tolist()):
        writer.writerow([step, epoch, f"{value:.6f}", f"{lr:.3e}", f"{rate:.1f}"])
    return rate


def how_to_extend(out, metadata):
    """What a finished run can do next: train on with more steps, unless it is an export."""
    if metadata.get("weights") == "ema":
        return "it samples but cannot train further: extend the run folder it was exported from"
    return f"extend it with `dgm train --resume --out {out} --steps N`"


def step_on_disk(out, fallback):
    """The step of the checkpoint in ``out`` as its tensors' header records it, else ``fallback``."""
    try:
        return checkpoint_metadata(run_folder_checkpoint(out))["step"]
    except (CheckpointError, KeyError):
        return fallback


def diverged_at(window, losses):
    """Where a window's training stopped being finite: its first non-finite loss, else (the weights) its end."""
    finite = losses.isfinite().tolist()
    if all(finite):
        return f"by step {window[-1][0]} (its weights are no longer finite)"
    first = finite.index(False)
    return f"at step {window[first][0]} (loss {losses[first]:.4g})"


def kept_checkpoint(out, step, replacing=False):
    """What a stopped run leaves: the checkpoint of ``step``; else the run it was replacing, put back; else none."""
    if step:
        return f"{out} keeps its checkpoint of step {step}"
    return f"{out} holds the run it was replacing again, as it was" if replacing else f"{out} holds no checkpoint yet"


def how_to_continue(out, step, options=""):
    """The command that goes on after a stop: resume from the checkpoint of ``step``, or, with none, start over."""
    options = f" {options}" if options else ""
    if step:
        return f"continue with `dgm train --resume --out {out}{options}`"
    return f"start again with `dgm train --overwrite --out {out}{options}` and the run's other options"


def parse_channels(text):
    """"32,64,64" -> (32, 64, 64)."""
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated widths such as 32,64,64, got {text!r}")


def default_text(field):
    """A TrainConfig field's default for ``--help``, and the value each preset that sets it gives it."""
    def text(value):
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)

    presets = [f"{name}: {text(values[field.name])}" for name, values in PRESETS.items() if field.name in values]
    return f"default {text(field.default)}" + (f" (--preset {'; '.join(presets)})" if presets else "")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm train", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="starting values; explicit options override")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint (its saved config, plus explicit options); "
                             "a finished run is left as it is")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over, replacing the run in --out (checkpoint, loss log, samples, snapshots, and "
                             "the eval_*.json and learning_curve.json reports of it): it waits in a hidden folder "
                             "there, is deleted once the new run saves its first checkpoint, and comes back if the "
                             "new run stops before (after a kill, at the next dgm train)")
    parser.add_argument("--rescale-betas", action="store_true",
                        help="scale beta_min and beta_max by 1000 / T, as improved DDPM does (a new run only)")
    types = {"channels": parse_channels, "epochs": float, "minutes": float, "data": str, "train_subset": int,
             "keep_every": int}
    for field in dataclasses.fields(TrainConfig):
        if field.type is bool:
            parser.add_argument(option_flag(field.name), action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=default_text(field))
        else:
            parser.add_argument(option_flag(field.name), type=types.get(field.name, field.type),
                                choices=FIXED_CHOICES.get(field.name), default=argparse.SUPPRESS,
                                help=("widths, comma-separated; " * (field.name == "channels")) + default_text(field))
    args = vars(parser.parse_args(argv))
    preset, resume, overwrite, rescale = (args.pop(name) for name in ("preset", "resume", "overwrite",
                                                                       "rescale_betas"))
    values = dict(PRESETS.get(preset, {}))
    lengths = [option_flag(name) for name in ("steps", "epochs", "minutes") if name in args]
    if len(lengths) > 1:
        parser.exit(2, f"error: {' and '.join(lengths)} each set the run's length: give one\n")
    for flag, refused, reason in (("--rescale-betas", rescale, "a resumed run keeps its saved betas"),
                                  ("--minutes", "minutes" in args, "extend a resumed run with --steps"),
                                  ("--overwrite", overwrite, "--overwrite starts a new run"),
                                  ("--preset", preset, "a resumed run keeps its saved config")):
        if resume and refused:
            parser.exit(2, f"error: {flag} applies when a run starts; {reason}\n")
    try:
        if resume:
            out = args.get("out", TrainConfig.out)
            if int(os.environ.get("RANK", 0)) == 0:  # before the checkpoint is read
                with run_lock(out):
                    report_recovery(out)
            else:
                wait_for_recovery(out)
            path = run_folder_checkpoint(out)
            _, metadata = load_checkpoint(path, CHECKPOINT_FORMAT)
            values = config_of(metadata, path).to_dict()
        if lengths:  # an explicit length replaces the one of a preset or a resumed run
            values.update(epochs=None, minutes=None)
        values.update(args)
        if resume:  # the folder read, wherever the run was when it was saved
            values["out"] = str(out)
        if rescale:
            values["beta_min"], values["beta_max"] = rescaled_beta_range(
                *(values.get(name, getattr(TrainConfig, name)) for name in ("beta_min", "beta_max", "T")))
        config = TrainConfig.from_dict(values)
        out = train(config, resume=resume, overwrite=overwrite)
    except (ValueError, CheckpointError, MNISTDataError) as error:
        parser.exit(2, f"error: {error}\n")
    except OSError as error:  # a full disk or a folder that refuses a move, outside the training loop
        parser.exit(1, f"error: {error}\n")
    except TrainingStopped as stopped:
        parser.exit(stopped.exit_code, f"{stopped}\n")
    print(f"checkpoint: {run_folder_checkpoint(out)}")


if __name__ == "__main__":
    main()
