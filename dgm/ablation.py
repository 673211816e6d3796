"""Problem 2 on MNIST: the shipped T = 500, 1000 and 2000 models, each sampled by the full chain, respaced to 100
and 50 steps, and by DDIM, and scored by the project's classifier; also T = 500 and 2000 with betas rescaled by 1000/T.

Book chapters "The reverse process", "The number of timesteps" and "Respacing for fast sampling". ``dgm ablation``
writes ``results/ablation.json`` and ``.csv`` and one sample grid per row under ``results/ablation_grids/``. Every
row draws N samples from the same seed, so rows of one model sampled on one device in one batch (``--batch-size N``,
as the shipped report is) start from the same x_T. The report is saved after every row and finished rows are kept,
so an interrupted run resumes where it stopped; ``--quick`` runs the same grid at N = 16 into
``runs/ablation_quick/`` (CI, trials). ``dgm.ablation_report`` reads the report and shows it as tables.
"""

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dgm._arguments import is_json_int
from dgm.ablation_report import DEFAULT_OUT, MODEL_PREFIX, REPORT_KEYS, load_report, text_table
from dgm.checkpoint import CheckpointError
from dgm.classifier import DEFAULT_CLASSIFIER, load_classifier
from dgm.data import MNISTDataError
from dgm.device import hardware_name, select_device
from dgm.evaluate import check_sample_count, real_data_floor, score_images, reference_statistics
from dgm.files import atomic_write_csv, atomic_write_text, changed_values, check_replaceable, check_writable, timestamp
from dgm.paths import MODELS, RESCALED_MODELS, RESULTS, RUNS
from dgm.runs import load_run, training_seconds
from dgm.sampling import sample_run, save_grid

OWN_MODELS_OUT = RUNS / "ablation" / "ablation"  # the default for models other than the shipped ones
# (sampler, sigma, steps): steps None is the full chain of T steps; DDIM adds no noise, so it has no sigma.
SETTINGS = (("ancestral", "beta", None), ("ancestral", "posterior", None),
            ("ancestral", "beta", 100), ("ancestral", "posterior", 100),
            ("ancestral", "beta", 50), ("ancestral", "posterior", 50),
            ("ddim", None, 100), ("ddim", None, 50))
GRID_SIZE = 64  # samples per saved grid
BATCH_SIZE = 256  # samples drawn at once by default, and by every report that does not record its batch size
DEFAULT_N = 64  # samples per row of a new report when --n is not given
QUICK_N = 16


def row_name(model, sampler, sigma, steps):
    """A stable file name for one row's grid, e.g. ``T1000_ancestral-beta_all`` for the model ddpm_mnist_T1000."""
    return f"{model.removeprefix(MODEL_PREFIX)}_{sampler}{'-' + sigma if sigma else ''}_{steps or 'all'}"


def describe_model(run):
    """What the tables need to know of one model: T, alpha_bar at the last step, training steps and time."""
    model, config, metadata = load_run(run)
    return {"name": Path(run).name, "T": config.T, "beta_min": config.beta_min,
            "beta_max": config.beta_max, "alpha_bar_T": float(model.alpha_bar[-1]), "step": metadata["step"],
            "saved_at": metadata["saved_at"],
            "training_seconds": training_seconds(run, config.batch_size), "config": config.to_dict()}


def described_models(models, n, seed, batch_size):
    """``describe_model`` of each model, once the ablation's arguments are checked: a ValueError says what is wrong."""
    check_sample_count(n)
    for name, value, least in (("seed", seed, 0), ("batch_size", batch_size, 1)):
        if not is_json_int(value) or value < least:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {least}, got {value!r}")
    names = [Path(run).name for run in models]
    if len(set(names)) < len(names):  # rows, grids and kept rows are named by the folder
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"--models names {', '.join(twice)} more than once: each model needs its own folder name")
    described = [describe_model(run) for run in models]
    longest = max(steps for _, _, steps in SETTINGS if steps is not None)
    for model in described:
        if model["T"] < longest:
            raise ValueError(f"model {model['name']} has T = {model['T']}, fewer timesteps than the {longest} "
                             "respaced steps of the ablation's settings")
    return described


def run_ablation(models=MODELS + RESCALED_MODELS, n=DEFAULT_N, seed=0, device="auto", grids=RESULTS / "ablation_grids",
                 data=None, classifier_path=DEFAULT_CLASSIFIER, previous=None, save=None, batch_size=BATCH_SIZE):
    """Every model x every setting of SETTINGS at ``n`` samples from ``seed``, sampled ``batch_size`` at a time;
    returns the report (a dict).

    Rows of a ``previous`` report with the same model checkpoint, setting, n, seed and batch size are kept, not
    sampled again; ``save(report)`` is called after every row, so an interrupted run resumes where it stopped. A
    complete ``previous`` report that holds every row is returned as it is.
    """
    described = described_models(models, n, seed, batch_size)
    runs = {model["name"]: run for model, run in zip(described, models)}
    if (previous or {}).get("batch_size", BATCH_SIZE) != batch_size:  # other batches draw other samples: keep no rows
        previous = None
    saved_at = {model["name"]: model["saved_at"] for model in (previous or {}).get("models", [])}
    kept = {row_key(row, saved_at[row["model"]]): row for row in (previous or {}).get("rows", [])
            if row["model"] in saved_at and (Path(grids) / row["grid"]).is_file()}
    jobs = [(model, (sampler, sigma, steps), {"model": model["name"], "T": model["T"], "sampler": sampler,
                                              "sigma": sigma, "steps": steps or model["T"],
                                              "respaced": steps is not None, "n": n, "seed": seed})
            for model in described for sampler, sigma, steps in SETTINGS]
    keys = [row_key(row, model["saved_at"]) for model, _, row in jobs]
    if previous is not None and previous.get("complete") and set(keys) <= kept.keys() \
            and len(previous["rows"]) == len(keys):
        return previous  # every row is measured already, in whatever order: the report stands as it was written
    classifier = load_classifier(classifier_path)
    reference = reference_statistics(classifier, data)
    floor = real_data_floor(n, classifier, reference, data, seed)
    report = {"n": n, "seed": seed, "batch_size": batch_size, "floor": floor, "models": described, "rows": [],
              "complete": False, "classifier": Path(classifier_path).name,
              "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                          "device": hardware_name(select_device(device))}}
    for index, (model, (sampler, sigma, steps), row) in enumerate(tqdm(jobs, desc="ablation rows", unit="row")):
        if keys[index] in kept:
            report["rows"].append(kept[keys[index]])
            continue
        name = row_name(model["name"], sampler, sigma, steps)
        images, seconds = sample_run(runs[model["name"]], n, steps, sampler, sigma or "beta", seed, device,
                                     batch_size, progress=True)
        save_grid(images[:GRID_SIZE], Path(grids) / f"{name}.png")
        report["rows"].append({**row, **score_images(images, classifier, reference), "fid_floor": floor["fid_mnist"],
                               "seconds_per_sample": seconds, "device": report["machine"]["device"],
                               "grid": f"{name}.png"})
        if save is not None:  # with the kept rows still ahead, so that a stop here loses none of them
            save({**report, "rows": report["rows"] + [kept[key] for key in keys[index + 1:] if key in kept]})
    report.update(complete=True, finished_at=timestamp())
    return report


def row_key(row, saved_at):
    """What makes two rows the same measurement: the model checkpoint, the setting, n and seed."""
    return (row["model"], saved_at, row["sampler"], row["sigma"], row["steps"], row["respaced"], row["n"], row["seed"])


def write_report(report, out):
    """``out``.json (everything) and ``out``.csv (the rows), each written atomically."""
    out = Path(out)
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    atomic_write_csv(out.with_suffix(".csv"), report["rows"])
    return out.with_suffix(".json")


def replaced_copies(out, grids):
    """Where ``--replace`` keeps the report it replaces, and its grids, until the new report holds every row."""
    return Path(f"{out}.replaced.json"), Path(f"{out}.replaced.csv"), Path(f"{grids}.replaced")


def keep_replaced(out, grids):
    """Copy the report at ``out`` and its grids aside (``replaced_copies``), unless an unfinished replacement already
    kept an earlier one there. The JSON copy comes last, so that it exists only beside complete copies of the rest."""
    json_copy, csv_copy, grids_copy = replaced_copies(out, grids)
    if json_copy.exists():
        return
    shutil.rmtree(grids_copy, ignore_errors=True)  # left by a copy that was cut short
    if grids.is_dir():
        shutil.copytree(grids, grids_copy)
    for source, copy in ((out.with_suffix(".csv"), csv_copy), (out.with_suffix(".json"), json_copy)):
        if source.is_file():
            shutil.copy2(source, copy.with_name(copy.name + ".tmp"))
            os.replace(copy.with_name(copy.name + ".tmp"), copy)


def restore_hint(out, grids):
    """How to put back the report that an unfinished ``--replace`` keeps aside; None if it keeps none."""
    json_copy, csv_copy, grids_copy = replaced_copies(out, grids)
    if not json_copy.exists():
        return None
    return (f"dgm ablation: the same command finishes the new report; the one it replaces is {json_copy}. To restore "
            f"it instead: rm -r {grids} && mv {grids_copy} {grids} && mv {csv_copy} {out.with_suffix('.csv')} && "
            f"mv {json_copy} {out.with_suffix('.json')}")


def discard_replaced(out, grids):
    """Remove the copies of a replaced report once the new one is complete."""
    json_copy, csv_copy, grids_copy = replaced_copies(out, grids)
    json_copy.unlink(missing_ok=True)
    csv_copy.unlink(missing_ok=True)
    shutil.rmtree(grids_copy, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[str(m) for m in MODELS + RESCALED_MODELS],
                        help="run folders to compare")
    parser.add_argument("--n", type=int, default=None, help="samples per row (FID-MNIST depends on it; default: "
                        f"the existing report's, else {DEFAULT_N})")
    parser.add_argument("--seed", type=int, default=None, help="default: the existing report's, else 0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="samples drawn at once: on a GPU, all N at "
                        "once saves launches; another batch size draws other samples from the same seed (default: "
                        f"the existing report's, else {BATCH_SIZE})")
    parser.add_argument("--replace", action="store_true",
                        help="allow an N, seed or batch size other than the existing report's, which samples every "
                        "row anew and replaces it")
    parser.add_argument("--out", type=Path, default=None, help="report path without suffix (default: "
                        "results/ablation for the shipped models, runs/ablation/ablation for others, "
                        "runs/ablation_quick/ablation with --quick)")
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_N}, written under runs/ (CI, trials)")
    parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)
    if args.quick and args.n is not None:
        parser.exit(2, f"error: --quick sets N = {QUICK_N}: give --quick or --n, not both\n")
    shipped = {Path(model).resolve() for model in MODELS + RESCALED_MODELS}
    own = not all(Path(model).resolve() in shipped for model in args.models)
    out = args.out or (RUNS / "ablation_quick" / "ablation" if args.quick else OWN_MODELS_OUT if own else DEFAULT_OUT)
    if out.suffix in (".json", ".csv"):
        parser.exit(2, f"error: --out is the report's path without suffix ({out.with_suffix('')}): the .json, the "
                    ".csv and the grids' folder are named after it\n")
    grids = out.parent / f"{out.name}_grids"
    try:
        for path in (out.with_suffix(".json"), out.with_suffix(".csv")):
            check_writable(path)
        check_writable(grids, folder=True)
        check_replaceable(out.with_suffix(".json"), "an ablation report", REPORT_KEYS, table=True)
        previous = load_report(out.with_suffix(".json")) if out.with_suffix(".json").is_file() else None
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    # Unset options resume the existing report; set to other values, they would discard its rows.
    existing = {"n": DEFAULT_N, "seed": 0, "batch_size": BATCH_SIZE, **{key: previous[key] for key in
                ("n", "seed", "batch_size") if key in (previous or {})}}
    chosen = {"n": QUICK_N if args.quick else args.n, "seed": args.seed, "batch_size": args.batch_size}
    settings = {key: existing[key] if value is None else value for key, value in chosen.items()}
    changed = changed_values(existing, settings)
    if previous is not None and changed and not args.replace:
        parser.exit(2, f"error: {out.with_suffix('.json')} holds {len(previous['rows'])} rows that these settings "
                    f"would sample anew ({', '.join(changed)}): pass --replace to do so, or --out for a new report\n")
    dropped = sorted({model["name"] for model in (previous or {}).get("models", [])}
                     - {Path(model).name for model in args.models})
    if dropped and not args.replace:
        parser.exit(2, f"error: {out.with_suffix('.json')} holds rows of {', '.join(dropped)}, which --models leaves "
                    "out and the new report would drop: name them too, pass --replace to drop them, or --out for a "
                    "new report\n")
    try:
        described_models(args.models, settings["n"], settings["seed"], settings["batch_size"])
    except (ValueError, CheckpointError) as error:  # refused before anything is replaced
        parser.exit(2, f"error: {error}\n")
    if previous is not None and (changed or dropped):  # --replace: the report stays in a copy until this one ends
        keep_replaced(out, grids)
        print(f"dgm ablation: the report it replaces stays in {replaced_copies(out, grids)[0]} (and its .csv and "
              "grids) until this one holds every row", file=sys.stderr)
    try:
        report = run_ablation(args.models, settings["n"], settings["seed"], args.device, grids, args.data,
                              previous=previous, save=lambda partial: write_report(partial, out),
                              batch_size=settings["batch_size"])
    except BaseException as error:  # Ctrl-C, missing data, a device error: say where the rows are
        hint = restore_hint(out, grids)
        if hint is None and isinstance(error, KeyboardInterrupt) and out.with_suffix(".json").is_file():
            hint = f"dgm ablation: {out.with_suffix('.json')} keeps every row measured so far; the same command " \
                   "samples the rest"
        if hint:
            print(hint, file=sys.stderr)
        if isinstance(error, (ValueError, CheckpointError, MNISTDataError)):
            parser.exit(2, f"error: {error}\n")
        raise
    discard_replaced(out, grids)
    print(text_table(report))
    if report is previous:
        print(f"report: {out.with_suffix('.json')} already holds every row (unchanged); grids: {grids}")
    else:
        print(f"report: {write_report(report, out)}; grids: {grids}")


if __name__ == "__main__":
    main()
