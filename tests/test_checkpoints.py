"""The weights shipped in checkpoints/ load with the current code and sample finite images."""

import torch

from dgm.plotting import REPO_ROOT
from dgm.train import load_run

SHIPPED_DDPM = REPO_ROOT / "checkpoints" / "ddpm_mnist_cpu"


def test_shipped_ddpm_loads_and_samples():
    model, config, metadata = load_run(SHIPPED_DDPM)
    assert metadata["step"] > 0 and metadata["config"] == config.to_dict()
    assert (SHIPPED_DDPM / "loss.csv").read_text().splitlines()[0].startswith("step")
    images = model.sample(2, steps=5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 28, 28) and bool(torch.isfinite(images).all())
