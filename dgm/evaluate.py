"""Judge MNIST samples with the project's own classifier: FID-MNIST, confidence, label entropy, speed (Problem 1d).

FID-MNIST is the Frechet distance between Gaussians fitted to the classifier's penultimate features of N samples
and of the 10,000 test images. It is comparable only between runs scored with this same classifier and the same
N (the estimate is biased upwards for small N); the real-data floor, N training images against the test set, is
printed beside it for that reason. The classifier is ``dgm.classifier``.
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from dgm._arguments import is_json_int
from dgm.checkpoint import CheckpointError, load_checkpoint
from dgm.classifier import CLASSES, DEFAULT_CLASSIFIER, load_classifier, predict
from dgm.data import MNISTDataError, load_mnist
from dgm.files import atomic_write_text, changed_values, check_replaceable, check_writable, read_report, timestamp
from dgm.paths import CHECKPOINTS, RUNS
from dgm.runs import CHECKPOINT_FORMAT, check_not_set_aside, config_of, run_folder_checkpoint
from dgm.sampling import add_sampler_options, check_steps, chosen_sigma, sample_run

REPORT_KEYS = ("settings", "samples", "real_floor")  # what marks a report of dgm evaluate
CONFIDENT = 0.9  # a sample is "confidently classified" at top-class probability >= this


def gaussian_statistics(features):
    """Mean and covariance (float64) of feature rows."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(statistics_a, statistics_b):
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two Gaussians given as (mean, covariance).

    tr((S_a S_b)^(1/2)) is the sum of square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2), which is
    symmetric positive semi-definite, so symmetric eigensolvers suffice.
    """
    (mean_a, cov_a), (mean_b, cov_b) = statistics_a, statistics_b
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def label_entropy(probabilities):
    """Entropy (nats) of the histogram of predicted labels; log 10 when every digit is equally frequent."""
    counts = torch.bincount(probabilities.argmax(dim=1), minlength=probabilities.shape[1]).double()
    return float(torch.special.entr(counts / counts.sum()).sum())


def score_images(images, classifier, reference):
    """FID-MNIST against the test statistics, mean top-class confidence, share >= CONFIDENT, label entropy."""
    features, probabilities = predict(classifier, images)
    confidence = probabilities.max(dim=1).values
    return {"fid_mnist": frechet_distance(gaussian_statistics(features), reference),
            "mean_confidence": float(confidence.mean()),
            "share_confident": float((confidence >= CONFIDENT).float().mean()),
            "label_entropy": label_entropy(probabilities)}


def check_sample_count(n):
    """Refuse an n that FID-MNIST cannot score: it needs a covariance, so two samples at least."""
    if not is_json_int(n) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (FID needs a covariance), got {n!r}")


def reference_statistics(classifier, data=None):
    """Feature mean and covariance of the 10,000 MNIST test images: the reference of FID-MNIST."""
    return gaussian_statistics(predict(classifier, load_mnist("test", data)[0])[0])


def evaluate_images(images, classifier=None, data=None, seed=0, reference=None):
    """Scores of ``images`` and of as many random training images (the real-data floor), both against the test set.

    ``reference`` is ``reference_statistics(classifier)``, computed here unless given.
    """
    classifier = load_classifier() if classifier is None else classifier
    reference = reference_statistics(classifier, data) if reference is None else reference
    return {"samples": score_images(images, classifier, reference),
            "real_floor": real_data_floor(len(images), classifier, reference, data, seed)}


def real_data_floor(n, classifier, reference, data=None, seed=0):
    """Scores of n random training images (drawn by ``seed``) against the test set: what real data reaches at n."""
    train_images = load_mnist("train", data)[0]
    chosen = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[:n]
    return score_images(train_images[chosen], classifier, reference)


def evaluate_run(ckpt, steps=None, n=1000, sampler="ancestral", sigma="beta", seed=0, device="auto",
                 classifier_path=DEFAULT_CLASSIFIER, data=None):
    """Sample n images from a run and score them; the report also holds seconds per sample, the settings and the
    run's training step and T."""
    check_sample_count(n)
    path = run_folder_checkpoint(ckpt)
    check_not_set_aside(path)
    _, metadata = load_checkpoint(path, CHECKPOINT_FORMAT)
    check_steps(steps, config_of(metadata, path).T)
    # the classifier and the test set first: a bad path or missing data should stop the run before it samples
    classifier = load_classifier(classifier_path)  # on the CPU, as every report's: no score depends on the device
    reference = reference_statistics(classifier, data)
    images, seconds = sample_run(ckpt, n, steps, sampler, sigma, seed, device, progress=True)
    report = evaluate_images(images, classifier=classifier, data=data, seed=seed, reference=reference)
    report["samples"]["seconds_per_sample"] = seconds
    report["settings"] = {"ckpt": str(ckpt), "steps": steps, "n": n, "sampler": sampler, "sigma": sigma,
                          "seed": seed, "classifier": Path(classifier_path).name,
                          "evaluated_at": timestamp(),
                          "training_step": metadata["step"], "T": metadata["config"]["T"]}
    return report


def format_table(report):
    """The report as a two-column text table: samples and the real-data floor."""
    rows = [("FID-MNIST (lower is better)", "fid_mnist", "{:.3f}"),
            ("mean top-class confidence", "mean_confidence", "{:.3f}"),
            (f"share with confidence >= {CONFIDENT}", "share_confident", "{:.3f}"),
            (f"label entropy (uniform = log 10 = {math.log(CLASSES):.3f})", "label_entropy", "{:.3f}"),
            ("seconds per sample", "seconds_per_sample", "{:.4f}")]
    lines = [f"{'metric':48s} {'samples':>10s} {'real floor':>11s}"]
    for label, key, fmt in rows:
        sample = report["samples"].get(key)
        floor = report["real_floor"].get(key)
        lines.append(f"{label:48s} {fmt.format(sample) if sample is not None else '-':>10s} "
                     f"{fmt.format(floor) if floor is not None else '-':>11s}")
    return "\n".join(lines)


def model_name(ckpt):
    """The folder name of a run, an export or the checkpoint file in one: what tells two models apart in a report."""
    ckpt = Path(ckpt)
    return (ckpt.parent if ckpt.suffix in (".safetensors", ".json") else ckpt).name


def check_same_settings(report, path, settings):
    """Refuse to replace the report at ``path`` unless it was made with ``settings`` and a model of the same name:
    another measurement, such as the book's results/cpu_preset_eval.json, would be lost."""
    before = {**report["settings"], "ckpt": model_name(report["settings"].get("ckpt", ""))}
    changed = changed_values(before, settings)
    if changed:
        raise ValueError(f"{path} holds a report made with other settings ({', '.join(changed)}): pass --replace to "
                         "replace it, or --json for a new report")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="run folder or checkpoint .safetensors file")
    parser.add_argument("--steps", type=int, default=None, help="respaced sampling steps (default: all T)")
    parser.add_argument("--n", type=int, default=1000,
                        help="number of samples (FID-MNIST depends on it; default %(default)s)")
    add_sampler_options(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of x_T and the noise (default %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    parser.add_argument("--classifier", type=Path, default=DEFAULT_CLASSIFIER)
    parser.add_argument("--data", default=None)
    parser.add_argument("--json", type=Path, default=None,
                        help="report path (default: RUN/eval_SAMPLER[-SIGMA]_steps-K_n-N_seed-S.json; for a shipped "
                        "model under checkpoints/, runs/eval/MODEL/eval_...json)")
    parser.add_argument("--replace", action="store_true",
                        help="replace a --json report made with another checkpoint or settings")
    args = parser.parse_args(argv)
    args.sigma = chosen_sigma(parser, args)
    run_folder = Path(args.ckpt) if Path(args.ckpt).is_dir() else Path(args.ckpt).parent
    sampler = args.sampler + (f"-{args.sigma}" if args.sampler == "ancestral" else "")
    if run_folder.resolve().is_relative_to(CHECKPOINTS):  # the shipped folders stay as cloned
        run_folder = RUNS / "eval" / run_folder.resolve().name
    path = args.json or run_folder / f"eval_{sampler}_steps-{args.steps or 'all'}_n-{args.n}_seed-{args.seed}.json"
    try:
        check_writable(path, option="--json")
        check_replaceable(path, "an evaluation report", REPORT_KEYS, option="--json")
        check_sample_count(args.n)
        if path.is_file() and not args.replace:
            check_same_settings(read_report(path, "an evaluation report", REPORT_KEYS), path,
                                {"ckpt": model_name(args.ckpt), "steps": args.steps, "n": args.n,
                                 "sampler": args.sampler, "sigma": args.sigma, "seed": args.seed,
                                 "classifier": Path(args.classifier).name})
        report = evaluate_run(args.ckpt, args.steps, args.n, args.sampler, args.sigma, args.seed, args.device,
                              args.classifier, args.data)
    except (ValueError, CheckpointError, MNISTDataError) as error:
        parser.exit(2, f"error: {error}\n")
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    print(f"report: {path}")
