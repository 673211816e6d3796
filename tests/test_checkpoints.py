"""Weights shipped in checkpoints/ load with the current code; their 50-step samples are mostly confident digits."""

import pytest
import torch

from dgm.config import PRESETS, REMOVED_FIELDS, TrainConfig
from dgm.classifier import load_classifier, predict
from dgm.evaluate import CONFIDENT
from dgm.paths import CPU_PRESET_MODEL, MODELS, RESCALED_MODELS
from dgm.runs import load_run
from dgm.schedules import rescaled_beta_range

SAMPLES = 16
SHIPPED = ([(folder, "gpu") for folder in MODELS + RESCALED_MODELS]
           + [(CPU_PRESET_MODEL, "cpu")])  # (folder, preset it was made with)
# The shipped models give most of their 50-step samples confidence >= 0.9 (results/ablation.json measures
# it at larger N); noise or broken weights give almost none, and a mean confidence near 1 / 10.
MIN_CONFIDENT = 5
MIN_MEAN_CONFIDENCE = 0.7


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.mark.parametrize("folder, preset", SHIPPED, ids=[folder.name for folder, _ in SHIPPED])
def test_shipped_ddpm_samples_confident_digits_in_50_steps(folder, preset, classifier, one_thread):
    model, config, metadata = load_run(folder)
    # Every saved setting loads unchanged (fields added to TrainConfig since take their defaults); the fields of
    # removed options hold the one value that loads.
    kept = {name: value for name, value in metadata["config"].items() if name not in REMOVED_FIELDS}
    assert metadata["weights"] == "ema" and {**config.to_dict(), **kept} == config.to_dict()
    assert {name: metadata["config"][name] for name in REMOVED_FIELDS} == REMOVED_FIELDS
    recipe = {**PRESETS[preset], "precision": "bf16"}  # "auto" as it resolved on the bfloat16 CPU and GPU
    assert config.to_dict() == {**config.to_dict(), **recipe, "channels": list(recipe["channels"])}
    assert metadata["step"] == config.steps
    rescaled = folder in RESCALED_MODELS
    assert folder.name == (f"ddpm_mnist_T{config.T}" + "_rescaled" * rescaled if preset == "gpu"
                           else f"ddpm_mnist_{preset}_preset")
    problem_set_betas = (TrainConfig.beta_min, TrainConfig.beta_max)
    assert (config.beta_min, config.beta_max) == (rescaled_beta_range(*problem_set_betas, config.T) if rescaled
                                                  else problem_set_betas)
    assert (folder / "loss.csv").read_text().splitlines()[0].startswith("step")
    images = model.sample(SAMPLES, steps=50, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    confidence = predict(classifier, images)[1].max(dim=1).values
    assert int((confidence >= CONFIDENT).sum()) >= MIN_CONFIDENT and float(confidence.mean()) >= MIN_MEAN_CONFIDENCE
