"""checkpoints/retrain_on_gpu.sh end to end at a tiny size on the CPU, in a copy of the checkout: five models trained
one after another and packed as they finish, the benchmark of T = 1000's step, the ablation and its pack."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from dgm.data import default_root

REPO = Path(__file__).resolve().parents[1]
NAMES = ("T1000", "T500", "T2000", "T500_rescaled", "T2000_rescaled")


def test_the_retraining_script_trains_packs_benchmarks_and_scores_five_models(tmp_path):
    root = tmp_path / "checkout"  # the script replaces checkpoints/ddpm_mnist_T* and results/ablation*
    for folder in ("dgm", "benchmarks"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "checkpoints").mkdir()
    for name in ("retrain_on_gpu.sh", "mnist_classifier.json", "mnist_classifier.safetensors"):
        shutil.copy(REPO / "checkpoints" / name, root / "checkpoints")
    (root / "results").mkdir()
    pack = tmp_path / "pack"
    environment = {**os.environ, "PYTHON": sys.executable, "DGM_DATA": str(default_root()), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "checkpoints/retrain_on_gpu.sh", str(pack), "0.02", "2", "--channels", "4,8,8",
                           "--batch-size", "8", "--train-subset", "256", "--device", "cpu", "--no-compile"],
                          cwd=root, env=environment, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(path.name for path in pack.iterdir()) == sorted(
        [f"ddpm_mnist_{name}.tar.gz" for name in NAMES] + ["results.tar.gz"])
    steps = set()
    for name in NAMES:
        with tarfile.open(pack / f"ddpm_mnist_{name}.tar.gz") as packed:
            metadata = json.load(packed.extractfile(f"checkpoints/ddpm_mnist_{name}/checkpoint.json"))
        assert metadata["weights"] == "ema" and metadata["weights_dtype"] == "float16"
        assert metadata["model"]["depth"] == 2 and metadata["model"]["attention"]
        steps.add(metadata["step"])
    assert len(steps) == 1  # T = 1000's budget set every model's steps
    with tarfile.open(pack / "results.tar.gz") as packed:
        members = packed.getnames()
        report = json.load(packed.extractfile("results/ablation.json"))
        benchmark = packed.extractfile("runs/gpu/benchmark.log").read().decode()
    assert report["complete"] and report["n"] == 2 and len(report["rows"]) == 5 * 8
    assert "% of matmul" in benchmark and "runs/gpu/T1000.log" in members
