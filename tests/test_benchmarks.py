"""The training-throughput benchmark runs the trainer's step and prints each variant's share of the matmul rate."""

import importlib.util
import re
from pathlib import Path

import pytest

from dgm.config import TrainConfig
from dgm.train import train

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


@pytest.fixture
def train_throughput():
    spec = importlib.util.spec_from_file_location("train_throughput", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_throughput_runs_at_a_tiny_size_on_the_cpu(train_throughput, capsys, one_thread):
    train_throughput.main(["--device", "cpu", "--channels", "4", "8", "8", "--depth", "1", "--batch", "4", "8",
                           "--rounds", "1", "--threads", "1"])
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.startswith("float32 matmul 1024^3") and "channels [4, 8, 8]" in header
    assert len(rows) == 2 * 3  # two batches, three variants
    for row in rows:
        images, gflops = re.search(r"(\d+) images/s +([\d.]+) GFLOP/s +\d+% of matmul", row).groups()
        assert int(images) > 0 and float(gflops) > 0


def test_train_throughput_refuses_a_device_it_cannot_use(train_throughput, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_throughput.main(["--device", "tpu"])
    assert exit_.value.code == 2 and "device must be" in capsys.readouterr().err


def test_train_throughput_times_the_compiled_step_of_one_precision(train_throughput, capsys, one_thread):
    train_throughput.main(["--device", "cpu", "--channels", "4", "8", "8", "--depth", "2", "--attention", "--batch",
                           "4", "--rounds", "1", "--threads", "1", "--compile", "--precision", "bf16"])
    header, *rows = capsys.readouterr().out.splitlines()
    assert "depth 2, attention True" in header
    assert [row.split(" batch")[0].strip() for row in rows] == ["channels_last + bf16 autocast",
                                                                 "channels_last + bf16 + torch.compile"]


def test_train_throughput_times_the_recipe_of_a_run(train_throughput, capsys, one_thread, tmp_path):
    run = train(TrainConfig(channels=(4, 8, 8), batch_size=4, train_subset=8, steps=1, warmup_steps=1, sample_n=4,
                            sample_steps=2, device="cpu", precision="fp32", out=str(tmp_path / "run")), progress=False)
    train_throughput.main(["--device", "cpu", "--run", str(run), "--rounds", "1", "--threads", "1"])
    header, *rows = capsys.readouterr().out.splitlines()
    assert "channels [4, 8, 8]" in header
    assert [row.split(" batch")[0].strip() for row in rows] == ["plain (contiguous)", "channels_last"]
    assert all(" batch    4 " in row for row in rows)
    with pytest.raises(SystemExit) as exit_:
        train_throughput.main(["--device", "cpu", "--run", str(tmp_path)])
    assert exit_.value.code == 2 and "no config of `dgm train`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_throughput.main(["--device", "cpu", "--run", str(run), "--depth", "2"])


def test_sampling_benchmark_times_a_run_over_its_own_chain(capsys, one_thread, tmp_path):
    """A model of T = 120 is timed over its 120 steps and respaced to 100 and 50, ratios against its full chain."""
    spec = importlib.util.spec_from_file_location("sampling_benchmark", BENCHMARK.parent / "sampling.py")
    sampling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sampling)
    run = train(TrainConfig(T=120, channels=(4, 8, 8), batch_size=4, train_subset=8, steps=1, warmup_steps=1,
                            sample_n=4, sample_steps=2, device="cpu", precision="fp32", out=str(tmp_path / "run")),
                progress=False)
    sampling.main(["--ckpt", str(run), "--n", "2", "--threads", "1"])
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.startswith("2 images per batch, sampler ancestral")
    assert [int(row.split()[0]) for row in rows] == [120, 100, 50]
    assert all(row.endswith("faster than 120 steps") for row in rows)
