"""``dgm export``: a run's EMA weights, config and loss log in a small folder that samples but cannot resume, as
the shipped checkpoints are."""

import argparse
from pathlib import Path

import torch

from dgm.checkpoint import CheckpointError, load_checkpoint
from dgm.files import atomic_write_bytes, check_writable
from dgm.runs import CHECKPOINT_FORMAT, LOSS_LOG, config_of, run_folder_checkpoint, run_kind, save_ema_weights

EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def check_export_target(source, out, overwrite=False):
    """Refuse an export into its own run, into or inside a training run, or over an earlier export without
    ``overwrite``."""
    out = Path(out)
    check_writable(out, folder=True)
    inside = next((folder for folder in out.resolve().parents if run_kind(folder) == "run"), None)
    if inside is not None:  # even as a new folder: `dgm train --overwrite` of that run would delete its samples/
        raise ValueError(f"--out {out} lies inside the run {inside}, whose snapshots and samples it would replace: "
                         "export into a folder of its own")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if out.resolve() == run_folder_checkpoint(source).parent.resolve():
        raise ValueError(f"--out {out} is the run being exported: export into another folder")
    if run_kind(out) != "export":
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


def main(argv=None):
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
