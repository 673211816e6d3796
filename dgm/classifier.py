"""The project's MNIST classifier, whose penultimate features and confidences score samples (``dgm.evaluate``).

A small CNN trained once with random shifts and outlier exposure (noise images pushed towards the uniform
prediction), so that samples that look like no digit get low confidence. ``dgm train-classifier`` trains it; its
weights are shipped in ``checkpoints/``.
"""

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dgm._arguments import is_json_int
from dgm.checkpoint import CheckpointError, load_checkpoint, load_into, save_checkpoint
from dgm.data import MNISTDataError, load_mnist
from dgm.device import select_device
from dgm.files import check_replaceable, check_writable
from dgm.paths import CHECKPOINTS

CLASSIFIER_FORMAT = "dgm-mnist-classifier/1"
METADATA_KEYS = ("format", "model", "test_accuracy")  # what marks the metadata beside a classifier
DEFAULT_CLASSIFIER = CHECKPOINTS / "mnist_classifier.safetensors"
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
    """The batch translated by one random offset of up to ``max_shift`` pixels per axis, padded with the background
    value -1."""
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


def training_loss(classifier, images, labels, generator):
    """Cross-entropy on the shifted digits, plus OUTLIER_WEIGHT times the cross-entropy of noise images (at least one,
    OUTLIER_SHARE of the digits) against the uniform prediction."""
    device = next(classifier.parameters()).device
    outliers = noise_images(math.ceil(len(images) * OUTLIER_SHARE), generator)
    logits = classifier(torch.cat([shift(images, MAX_SHIFT, generator), outliers]).to(device))
    digits, noise = logits[:len(images)], logits[len(images):]
    return F.cross_entropy(digits, labels.to(device)) - OUTLIER_WEIGHT * noise.log_softmax(dim=1).mean()


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
        if not is_json_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not is_json_int(seed) or seed < 0:
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
            loss = training_loss(classifier, images[index], labels[index], generator)
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
    try:
        classifier = Classifier(**metadata["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} does not describe a classifier ({type(error).__name__}: {error})") from None
    load_into(classifier, tensors, "", path)
    return classifier.to(device).eval()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm train-classifier", description="Train the MNIST classifier whose "
                                     "features and confidences score samples (FID-MNIST, share confident).")
    parser.add_argument("--out", type=Path, default=DEFAULT_CLASSIFIER, help="a .safetensors file (default: the "
                        "shipped classifier, which every score of results/ used)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--epochs", type=int, default=4, help="passes over the training set (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default %(default)s)")
    parser.add_argument("--lr", type=float, default=2e-3, help="learning rate (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="default %(default)s")
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
        check_replaceable(args.out.with_suffix(".json"), "a classifier's metadata", METADATA_KEYS)
        accuracy = train_classifier(args.out, args.epochs, args.batch_size, args.lr, args.seed, args.data, args.device)
    except (ValueError, MNISTDataError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"test accuracy {accuracy:.4f}; weights: {args.out}")
