"""Weights shipped in checkpoints/ load with the current code; their 50-step samples are mostly confident digits."""

import json

import pytest
import torch

from dgm.ablation_report import find_row, load_report
from dgm.classifier import load_classifier, predict
from dgm.config import FIXED_VALUE_FIELDS, PRESETS, TrainConfig
from dgm.evaluate import CONFIDENT
from dgm.paths import CHECKPOINTS, CPU_PRESET_MODEL, MODELS, RESCALED_MODELS, RESULTS
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
    kept = {name: value for name, value in metadata["config"].items() if name not in FIXED_VALUE_FIELDS}
    assert metadata["weights"] == "ema" and {**config.to_dict(), **kept} == config.to_dict()
    assert {name: metadata["config"][name] for name in FIXED_VALUE_FIELDS} == FIXED_VALUE_FIELDS
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


def test_the_readme_gives_each_checkpoint_its_command_and_the_reports_scores():
    """checkpoints/README.md's table and recipe say what the configs and results/ hold, to the digits printed."""
    readme = (CHECKPOINTS / "README.md").read_text()
    report = load_report()
    lines = []
    for folder in MODELS + RESCALED_MODELS:
        _, config, _ = load_run(folder)
        row = find_row(report, config.T, "ancestral", "beta", model=folder.name)
        command = f"dgm train --preset gpu --T {config.T}" + " --rescale-betas" * (folder in RESCALED_MODELS)
        lines.append(f"| `{folder.name}/` | `{command}` | full chain, σ² = β: FID-MNIST {row['fid_mnist']:.1f}, "
                     f"share ≥ 0.9: {row['share_confident']:.3f} |")
    cpu = json.loads((RESULTS / "cpu_preset_eval.json").read_text())
    lines.append(f"| `{CPU_PRESET_MODEL.name}/` | `dgm train --preset cpu` | {cpu['settings']['steps']} steps, "
                 f"σ² = β̃: FID-MNIST {cpu['samples']['fid_mnist']:.1f} (floor {cpu['real_floor']['fid_mnist']:.1f} "
                 f"at N = {cpu['settings']['n']:,}), share ≥ 0.9: {cpu['samples']['share_confident']:.3f} |")
    accuracy = json.loads((CHECKPOINTS / "mnist_classifier.json").read_text())["test_accuracy"]
    lines.append(f"| `mnist_classifier.*` | `dgm train-classifier` | test accuracy {accuracy:.3f} |")
    _, config, _ = load_run(MODELS[1])
    lines.append(f"(N = {report['n']}, real-data floor FID-MNIST {report['floor']['fid_mnist']:.1f})")
    lr = f"{config.lr:.0e}".replace("e-0", "e-")  # 1e-3
    lines.append(f"{config.steps:,} steps of {config.batch_size}\nimages, AdamW at {lr} with {config.warmup_steps} "
                 "warm-up steps")
    missing = [line for line in lines if line not in readme]
    assert not missing, "checkpoints/README.md should say:\n" + "\n".join(missing)
