"""Judge MNIST samples with the project's own classifier: FID-MNIST, confidence, label entropy, speed (Problem 1d).

FID-MNIST is the Frechet distance between Gaussians fitted to the classifier's penultimate features of N samples
and of the 10,000 test images. It is comparable only between runs scored with this same classifier and the same
N (the estimate is biased upwards for small N); the real-data floor, N training images against the test set, is
printed beside it for that reason. ``dgm train-classifier`` trains the classifier once; its weights are shipped
in ``checkpoints/``.
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dgm.checkpoint import CheckpointError, load_checkpoint, load_into, save_checkpoint
from dgm.data import MNISTDataError, load_mnist
from dgm.files import atomic_write_text, check_writable
from dgm.sampling import add_sampler_options, check_steps, chosen_sigma, sample_run
from dgm.device import select_device
from dgm.paths import CHECKPOINTS, RUNS
from dgm.runs import CHECKPOINT_FORMAT, config_of, run_folder_checkpoint

CLASSIFIER_FORMAT = "dgm-mnist-classifier/1"
DEFAULT_CLASSIFIER = CHECKPOINTS / "mnist_classifier.safetensors"
CONFIDENT = 0.9  # a sample is "confidently classified" at top-class probability >= this
CLASSES = 10
DROPOUT = 0.3
WEIGHT_DECAY = 1e-4
MAX_SHIFT = 2  # training augmentation: random translations by up to this many pixels
OUTLIER_SHARE = 0.25  # noise images per digit image in each training batch
OUTLIER_WEIGHT = 0.5  # weight of their push towards the uniform prediction (Hendrycks et al. 2019)


class Classifier(nn.Module):
    """A small CNN for 1 x 28 x 28 digits in [-1, 1]; ``features`` is its penultimate layer (FID-MNIST)."""

    def __init__(self, channels=(32, 64, 128), feature_dim=256):
        super().__init__()
        layers, previous = [], 1
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.MaxPool2d(2)]
            previous = width
        self.convolutions = nn.Sequential(*layers)
        side = 28 // 2 ** len(channels)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(previous * side * side, feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(DROPOUT)
        self.head = nn.Linear(feature_dim, CLASSES)
        self.channels, self.feature_dim = tuple(channels), feature_dim

    def features(self, x):
        return self.hidden(self.convolutions(x))

    def forward(self, x):
        return self.head(self.dropout(self.features(x)))

    def config(self):
        return {"channels": list(self.channels), "feature_dim": self.feature_dim}


def shift(images, max_shift, generator):
    """Random translations by up to ``max_shift`` pixels (zero-padded with the background value -1)."""
    padded = F.pad(images, [max_shift] * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator)
    side = images.shape[-1]
    return padded[..., offsets[0]:offsets[0] + side, offsets[1]:offsets[1] + side]


def noise_images(n, generator):
    """Digit-free images for outlier exposure: Gaussian pixel noise at random scales, half of it blurred to blobs."""
    noise = torch.randn(n, 1, 28, 28, generator=generator)
    blurred = F.avg_pool2d(noise, 5, stride=1, padding=2)
    noise = torch.where(torch.arange(n)[:, None, None, None] % 2 == 0, noise, blurred / blurred.std())
    scale = torch.rand(n, 1, 1, 1, generator=generator) * 1.5 + 0.25
    return (noise * scale + torch.rand(n, 1, 1, 1, generator=generator) - 0.5).clamp(-1, 1)


@torch.no_grad()
def predict(classifier, images, batch_size=1000):
    """(penultimate features, class probabilities) of images in [-1, 1], in batches, on the classifier's device."""
    classifier.eval()
    device = next(classifier.parameters()).device
    features, probabilities = [], []
    for first in range(0, len(images), batch_size):
        batch_features = classifier.features(images[first:first + batch_size].to(device, torch.float32))
        features.append(batch_features.cpu())
        probabilities.append(classifier.head(batch_features).softmax(dim=1).cpu())
    return torch.cat(features), torch.cat(probabilities)


def train_classifier(out=DEFAULT_CLASSIFIER, epochs=4, batch_size=128, lr=2e-3, seed=0, data=None, device="auto",
                     progress=True):
    """Train the feature classifier on the 60,000 training images, test it, save it; returns the test accuracy.

    Noise images in every batch are pushed towards the uniform prediction (outlier exposure), so that samples
    that look like no digit get low confidence instead of an arbitrary confident label.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite positive number, got {lr!r}")
    device = select_device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = load_mnist("train", data)
    test_images, test_labels = load_mnist("test", data)
    classifier = Classifier().to(device)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    steps = epochs * math.ceil(len(images) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, desc="classifier", disable=not progress, dynamic_ncols=True)
    for _ in range(epochs):
        classifier.train()
        order = torch.randperm(len(images), generator=generator)
        for first in range(0, len(images), batch_size):
            index = order[first:first + batch_size]
            outliers = noise_images(int(len(index) * OUTLIER_SHARE), generator)
            batch = torch.cat([shift(images[index], MAX_SHIFT, generator), outliers]).to(device)
            logits = classifier(batch)
            digits, noise = logits[:len(index)], logits[len(index):]
            loss = (F.cross_entropy(digits, labels[index].to(device))
                    - OUTLIER_WEIGHT * noise.log_softmax(dim=1).mean())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    _, probabilities = predict(classifier, test_images)
    accuracy = float((probabilities.argmax(dim=1) == test_labels).float().mean())
    metadata = {"format": CLASSIFIER_FORMAT, "model": classifier.config(), "test_accuracy": accuracy,
                "training": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                             "outlier_share": OUTLIER_SHARE, "outlier_weight": OUTLIER_WEIGHT},
                "torch": torch.__version__}
    save_checkpoint(out, classifier.state_dict(), metadata)
    return accuracy


def load_classifier(path=DEFAULT_CLASSIFIER, device="cpu"):
    """The shipped (or given) classifier in eval mode."""
    tensors, metadata = load_checkpoint(path, CLASSIFIER_FORMAT)
    classifier = Classifier(**metadata["model"])
    load_into(classifier, tensors, "", path)
    return classifier.to(device).eval()


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


def score_images(images, classifier, test_statistics):
    """FID-MNIST against the test statistics, mean top-class confidence, share >= 0.9, label entropy."""
    features, probabilities = predict(classifier, images)
    confidence = probabilities.max(dim=1).values
    return {"fid_mnist": frechet_distance(gaussian_statistics(features), test_statistics),
            "mean_confidence": float(confidence.mean()),
            "share_confident": float((confidence >= CONFIDENT).float().mean()),
            "label_entropy": label_entropy(probabilities)}


def check_sample_count(n):
    """Refuse an n that FID-MNIST cannot score: it needs a covariance, so two samples at least."""
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (FID needs a covariance), got {n!r}")


def test_statistics(classifier, data=None):
    """Feature mean and covariance of the 10,000 MNIST test images: the reference of FID-MNIST."""
    return gaussian_statistics(predict(classifier, load_mnist("test", data)[0])[0])


def evaluate_images(images, classifier=None, data=None, seed=0, reference=None):
    """Scores of ``images`` and of as many random training images (the real-data floor), both against the test set.

    ``reference`` is ``test_statistics(classifier)``, computed here unless given.
    """
    classifier = load_classifier() if classifier is None else classifier
    reference = test_statistics(classifier, data) if reference is None else reference
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
    _, metadata = load_checkpoint(path, CHECKPOINT_FORMAT)
    check_steps(steps, config_of(metadata, path).T)
    # the classifier and the test set first: a bad path or missing data should stop the run before it samples
    classifier = load_classifier(classifier_path, device=select_device(device))
    reference = test_statistics(classifier, data)
    images, seconds = sample_run(ckpt, n, steps, sampler, sigma, seed, device, progress=True)
    report = evaluate_images(images, classifier=classifier, data=data, seed=seed, reference=reference)
    report["samples"]["seconds_per_sample"] = seconds
    report["settings"] = {"ckpt": str(ckpt), "steps": steps, "n": n, "sampler": sampler, "sigma": sigma,
                          "seed": seed, "classifier": Path(classifier_path).name,
                          "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="run folder or checkpoint .safetensors file")
    parser.add_argument("--steps", type=int, default=None, help="respaced sampling steps (default: all T)")
    parser.add_argument("--n", type=int, default=1000, help="number of samples (FID-MNIST depends on it)")
    add_sampler_options(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--classifier", type=Path, default=DEFAULT_CLASSIFIER)
    parser.add_argument("--data", default=None)
    parser.add_argument("--json", type=Path, default=None,
                        help="report path (default: RUN/eval_SAMPLER[-SIGMA]_steps-K_n-N_seed-S.json; for a shipped "
                        "model under checkpoints/, runs/eval/MODEL/eval_...json)")
    args = parser.parse_args(argv)
    args.sigma = chosen_sigma(parser, args)
    run_folder = Path(args.ckpt) if Path(args.ckpt).is_dir() else Path(args.ckpt).parent
    sampler = args.sampler + (f"-{args.sigma}" if args.sampler == "ancestral" else "")
    if run_folder.resolve().is_relative_to(CHECKPOINTS):  # the shipped folders stay as cloned
        run_folder = RUNS / "eval" / run_folder.resolve().name
    path = args.json or run_folder / f"eval_{sampler}_steps-{args.steps or 'all'}_n-{args.n}_seed-{args.seed}.json"
    try:
        check_writable(path, option="--json")
        report = evaluate_run(args.ckpt, args.steps, args.n, args.sampler, args.sigma, args.seed, args.device,
                              args.classifier, args.data)
    except (ValueError, CheckpointError, MNISTDataError) as error:
        parser.exit(2, f"error: {error}\n")
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    print(f"report: {path}")


def train_classifier_main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm train-classifier", description="Train the MNIST classifier whose "
                                     "features and confidences score samples (FID-MNIST, share confident).")
    parser.add_argument("--out", type=Path, default=DEFAULT_CLASSIFIER, help="a .safetensors file (default: the "
                        "shipped classifier, which every score of results/ used)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.out.suffix != ".safetensors":
        parser.exit(2, f"error: --out {args.out} must end in .safetensors (its metadata goes beside it as .json)\n")
    if args.out.exists() and not args.overwrite:
        parser.exit(2, f"error: --out {args.out} exists; the scores in results/ were measured with the shipped "
                    "classifier: pass --overwrite to replace it, or choose another --out\n")
    try:
        check_writable(args.out)
        accuracy = train_classifier(args.out, args.epochs, args.batch_size, args.lr, args.seed, args.data, args.device)
    except (ValueError, MNISTDataError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"test accuracy {accuracy:.4f}; weights: {args.out}")
