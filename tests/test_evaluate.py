"""Evaluation: the Frechet distance, the label entropy, the shipped classifier, and sanity of the scores."""

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from dgm import evaluate
from dgm.classifier import DEFAULT_CLASSIFIER, Classifier, load_classifier, predict, training_loss
from dgm.data import load_mnist


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def test_set_predictions(classifier):
    """(features, probabilities, labels) of the 10,000 test images, computed once for this module."""
    images, labels = load_mnist("test")
    return (*predict(classifier, images), labels)


def test_frechet_distance_of_known_gaussians():
    one_d = (np.array([0.0]), np.array([[1.0]])), (np.array([1.0]), np.array([[4.0]]))
    assert evaluate.frechet_distance(*one_d) == pytest.approx(1 + 1 + 4 - 2 * 2)
    statistics = evaluate.gaussian_statistics(np.random.default_rng(0).standard_normal((500, 6)))
    assert evaluate.frechet_distance(statistics, statistics) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_matches_the_matrix_square_root():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((400, 5)), rng.standard_normal((400, 5)) @ rng.standard_normal((5, 5)) + 0.3
    (mean_a, cov_a), (mean_b, cov_b) = evaluate.gaussian_statistics(a), evaluate.gaussian_statistics(b)
    expected = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real)
    assert evaluate.frechet_distance((mean_a, cov_a), (mean_b, cov_b)) == pytest.approx(expected, rel=1e-6)


def test_label_entropy_bounds():
    uniform = torch.eye(10).repeat(3, 1)
    assert evaluate.label_entropy(uniform) == pytest.approx(math.log(10))
    assert evaluate.label_entropy(torch.eye(10)[[3, 3, 3]]) == 0


def test_shipped_classifier_reaches_99_percent(test_set_predictions):
    _, probabilities, labels = test_set_predictions
    accuracy = float((probabilities.argmax(dim=1) == labels).float().mean())
    assert accuracy >= 0.99
    recorded = json.loads(DEFAULT_CLASSIFIER.with_suffix(".json").read_text())["test_accuracy"]
    assert accuracy == pytest.approx(recorded, abs=1e-4)


def test_real_images_score_near_the_floor_and_noise_far_worse(classifier, test_set_predictions):
    reference = evaluate.gaussian_statistics(test_set_predictions[0])
    train_images = load_mnist("train")[0]
    real = train_images[torch.randperm(len(train_images), generator=torch.Generator().manual_seed(2))[:500]]
    report = evaluate.evaluate_images(real, classifier=classifier, seed=1, reference=reference)
    floor = report["real_floor"]["fid_mnist"]  # other 500 training images
    assert report["samples"]["fid_mnist"] < 1.5 * floor
    assert report["samples"]["mean_confidence"] > 0.95
    assert report["samples"]["label_entropy"] > 0.95 * math.log(10)
    noise = torch.randn(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    noisy = evaluate.evaluate_images(noise, classifier=classifier, seed=1, reference=reference)["samples"]
    assert noisy["fid_mnist"] > 20 * floor
    assert noisy["mean_confidence"] < 0.5 and noisy["share_confident"] < 0.1
    assert noisy["label_entropy"] < 0.7 * math.log(10)


def test_table_lists_every_metric_for_samples_and_floor():
    scores = {"fid_mnist": 1.0, "mean_confidence": 0.9, "share_confident": 0.8, "label_entropy": 2.0}
    table = evaluate.format_table({"samples": {**scores, "seconds_per_sample": 0.01}, "real_floor": scores})
    assert "FID-MNIST" in table and "0.0100" in table and "real floor" in table
    assert len(table.splitlines()) == 6


def test_the_real_data_floor_draws_its_images_by_the_seed(classifier, test_set_predictions):
    reference = evaluate.gaussian_statistics(test_set_predictions[0])
    floors = [evaluate.real_data_floor(50, classifier, reference, seed=seed) for seed in (1, 1, 2)]
    assert floors[0] == floors[1] and floors[0] != floors[2]


@pytest.mark.parametrize("sampler, sigma", [("ancestral", "beta"), ("ancestral", "posterior"), ("ddim", "beta")])
def test_evaluate_samples_with_the_sampler_and_sigma_it_reports(monkeypatch, sampler, sigma):
    drawn = []
    monkeypatch.setattr(evaluate, "sample_run", lambda *args, **kwargs: drawn.append(args[3:5]) or (
        torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1, 1e-3))
    report = evaluate.evaluate_run(evaluate.CHECKPOINTS / "ddpm_mnist_cpu_preset", steps=10, n=8, sampler=sampler,
                                   sigma=sigma)
    assert drawn == [(sampler, sigma)]
    assert (report["settings"]["sampler"], report["settings"]["sigma"]) == (sampler, sigma)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_the_classifier_loss_has_its_noise_term_in_every_batch(batch):
    """A last batch smaller than 1 / OUTLIER_SHARE still gets a noise image: an empty one would average to NaN."""
    torch.manual_seed(0)
    classifier = Classifier()
    images = torch.rand(batch, 1, 28, 28) * 2 - 1
    labels = torch.arange(batch) % 10
    assert torch.isfinite(training_loss(classifier, images, labels, torch.Generator().manual_seed(0)))
