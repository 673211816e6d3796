"""Sample quality over training: the EMA snapshots a run kept (``dgm train --keep-every K``), each sampled and
scored by the project's classifier at one sampler setting.

``dgm learning-curve --run RUN`` writes ``RUN/learning_curve.json`` (or ``--out``): per snapshot its step, images
seen, training minutes and the scores of ``dgm evaluate``, plus the real-data floor at the same N. The report is
saved after every snapshot and scored snapshots are kept, so the command can be re-run while the run trains and only
scores what is new.
"""

import argparse
import json
import math
from pathlib import Path

from tqdm.auto import tqdm

from dgm.checkpoint import CheckpointError, load_checkpoint
from dgm.data import MNISTDataError
from dgm.classifier import CLASSES, DEFAULT_CLASSIFIER, load_classifier
from dgm.evaluate import CONFIDENT, check_sample_count, real_data_floor, score_images, reference_statistics
from dgm.files import atomic_write_text, changed_values, check_replaceable, check_writable, read_report
from dgm.runs import (CHECKPOINT_FORMAT, SNAPSHOTS, config_of, run_folder_checkpoint, run_kind, snapshot_folder,
                      training_seconds)
from dgm.sampling import add_sampler_options, check_steps, chosen_sigma, sample_run

CURVE_NAME = "learning_curve.json"  # the report's default name, in the run folder
REPORT_KEYS = ("run", "setting", "floor", "rows")  # what marks a report of dgm learning-curve


def snapshot_steps(run):
    """The steps whose EMA weights ``run`` kept, in order."""
    folders = sorted((Path(run) / SNAPSHOTS).glob("step_*"))
    return [int(folder.name.removeprefix("step_")) for folder in folders
            if run_folder_checkpoint(folder).is_file()]


def learning_curve(run, steps=100, sampler="ancestral", sigma="posterior", n=256, seed=0, device="auto",
                   classifier_path=DEFAULT_CLASSIFIER, data=None, previous=None, save=None, replace=True):
    """Scores of every snapshot of ``run`` at one setting, ``n`` samples from ``seed``; returns the report (a dict).

    Rows of a ``previous`` report of the same run, setting, n, seed and snapshot are kept; ``save(report)`` follows
    every row. A ``previous`` report of another run or setting is replaced only with ``replace``, and then only at
    the end: an interrupted run leaves it whole.
    """
    check_sample_count(n)
    run = Path(run)
    if not run.is_dir():
        raise ValueError(f"no run folder {run}")
    kept_steps = snapshot_steps(run)
    if not kept_steps and run_kind(run) == "export":
        raise ValueError(f"{run} is an export, which keeps no snapshots: score the run folder that "
                         "`dgm train --keep-every K` wrote")
    if not kept_steps:
        raise ValueError(f"{run} kept no snapshots: train it with `dgm train --keep-every K`, or continue it with "
                         f"`dgm train --resume --out {run} --keep-every K --steps N`")
    last = run_folder_checkpoint(snapshot_folder(run, kept_steps[-1]))
    _, metadata = load_checkpoint(last, CHECKPOINT_FORMAT)
    config = config_of(metadata, last)
    check_steps(steps, config.T)
    setting = curve_setting(steps, sampler, sigma, n, seed)
    same = previous is not None and previous.get("run") == run.name and previous.get("setting") == setting
    if previous is not None and not same and not replace:
        before = {"run": previous.get("run"), **previous.get("setting", {})}
        changed = changed_values(before, {"run": run.name, **setting})
        raise ValueError(f"the report at --out holds a curve of another run or setting ({', '.join(changed)}), "
                         "which this one would replace: pass --replace to do so, or --out for a new report")
    kept = {row["step"]: row for row in previous["rows"]} if same else {}
    classifier = load_classifier(classifier_path)
    reference = reference_statistics(classifier, data)
    report = {"run": run.name, "config": config.to_dict(), "hardware": metadata.get("hardware"), "setting": setting,
              "floor": real_data_floor(n, classifier, reference, data, seed), "rows": []}
    saving_rows = save is not None and (same or previous is None)
    for index, step in enumerate(tqdm(kept_steps, desc="snapshots", unit="snapshot")):
        # Like the ablation's rows, a row stands for one saved snapshot: a run trained again into the same folder
        # writes snapshots with new save times, and those are scored again.
        _, snapshot = load_checkpoint(run_folder_checkpoint(snapshot_folder(run, step)), CHECKPOINT_FORMAT)
        if kept.get(step, {}).get("saved_at") != snapshot["saved_at"]:
            images, seconds = sample_run(snapshot_folder(run, step), n, steps, sampler, sigma, seed, device)
            minutes = training_seconds(run, config.batch_size, until_step=step)
            kept[step] = {"step": step, "saved_at": snapshot["saved_at"], "images_seen": step * config.batch_size,
                          "training_minutes": None if minutes is None else minutes / 60,
                          **score_images(images, classifier, reference), "seconds_per_sample": seconds}
        report["rows"].append(kept[step])
        if saving_rows:  # with the kept rows still ahead, so that a stop here loses none of them
            ahead = [kept[later] for later in kept_steps[index + 1:] if later in kept]
            save({**report, "rows": report["rows"] + ahead})
    if save is not None and not saving_rows:
        save(report)
    return report


def curve_setting(steps, sampler, sigma, n, seed):
    """What a curve's rows are measured at; DDIM adds no noise, so its curve has no sigma."""
    return {"steps": steps, "sampler": sampler, "sigma": sigma if sampler == "ancestral" else None, "n": n,
            "seed": seed}


def load_curve(path):
    """The report ``dgm learning-curve`` wrote."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `dgm learning-curve --run RUN` to write it")
    return read_report(path, "a learning curve", REPORT_KEYS)


def text_table(report):
    """One line per snapshot: step, images seen, training minutes and the scores; the real-data floor first."""
    def scores(row):
        return (f"{row['fid_mnist']:10.1f} {row['share_confident']:13.3f} "
                f"{row['label_entropy'] / math.log(CLASSES):17.3f}")

    lines = [f"{'step':>7s} {'images':>10s} {'minutes':>8s} {'FID-MNIST':>10s} {f'share >= {CONFIDENT}':>13s} "
             f"{'entropy / log 10':>17s}", f"{'real':>7s} {'':>10s} {'':>8s} {scores(report['floor'])}"]
    for row in report["rows"]:
        minutes = "-" if row["training_minutes"] is None else f"{row['training_minutes']:.0f}"
        lines.append(f"{row['step']:7d} {row['images_seen']:10,d} {minutes:>8s} {scores(row)}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm learning-curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run folder trained with --keep-every")
    parser.add_argument("--steps", type=int, default=100, help="respaced sampling steps (default 100)")
    add_sampler_options(parser, sigma="posterior")
    parser.add_argument("--n", type=int, default=256, help="samples per snapshot (FID-MNIST depends on it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help=f"report path (default: RUN/{CURVE_NAME})")
    parser.add_argument("--replace", action="store_true",
                        help="replace a curve of the run at another setting, whose rows would all be scored anew; "
                        "it stays until the new curve is complete")
    parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)
    args.sigma = chosen_sigma(parser, args)
    out = args.out or Path(args.run) / CURVE_NAME

    def save(report):
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")

    try:
        check_writable(out)
        check_replaceable(out, "a learning curve", REPORT_KEYS)
        previous = load_curve(out) if out.is_file() else None
        report = learning_curve(args.run, args.steps, args.sampler, args.sigma, args.n, args.seed, args.device,
                                data=args.data, previous=previous, save=save, replace=args.replace)
    except (ValueError, CheckpointError, MNISTDataError) as error:
        parser.exit(2, f"error: {error}\n")
    print(text_table(report))
    print(f"report: {out}")


if __name__ == "__main__":
    main()
