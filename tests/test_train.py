"""The trainer: the config's JSON, learning, checkpoints, exact resume, clear checkpoint errors, 2-process DDP."""

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

import dgm
import dgm.config
import dgm.sampling
import dgm.train
import dgm.train_step
from dgm.checkpoint import CheckpointError, checkpoint_metadata, save_checkpoint
from dgm.config import FIXED_VALUE_FIELDS, PRESETS, TrainConfig, ema_initial_share
from dgm.data import load_mnist
from dgm.device import autocast_context, resolve_precision, select_device
from dgm.export import export_run
from dgm.runs import CHECKPOINT_FORMAT, load_run, run_folder_checkpoint, snapshot_folder
from dgm.train import learning_rate, total_steps, train
from dgm.train_step import BUDGET_SHARE, build_optimizer, seconds_per_step, steps_for_budget, update_ema
from dgm.schedules import cosine_schedule
from dgm.unet import UNet

REPO = Path(__file__).resolve().parents[1]


def tiny_config(out, **overrides):
    """A run that takes seconds: a tiny U-Net on 64 images in float32, a 4-image sample grid of 3 steps."""
    values = dict(channels=(4, 8, 8), batch_size=16, train_subset=64, steps=4, warmup_steps=2, lr=1e-3,
                  ema_decay=0.5, checkpoint_every=2, sample_every=100, sample_n=4, sample_steps=3, device="cpu",
                  precision="fp32", out=str(out))
    values.update(overrides)
    return TrainConfig(**values)


def test_config_round_trips_through_json(tmp_path, one_thread):
    config = tiny_config(tmp_path / "run", epochs=0.5, precision="auto")
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    train(config, progress=False)
    ran = dataclasses.replace(config, precision=resolve_precision("auto", torch.device("cpu")))
    assert ran.precision in ("fp32", "bf16")
    assert TrainConfig.from_json(tmp_path / "run" / "checkpoint.json") == ran  # saved as it ran
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_fields_of_removed_options_load_only_at_their_one_supported_value():
    saved = {**TrainConfig().to_dict(), **FIXED_VALUE_FIELDS}  # as the shipped checkpoints' JSON has them
    assert TrainConfig.from_dict(saved) == TrainConfig()
    for name, other in (("time_conditioning", "adagn"), ("timestep_sampling", "weighted"), ("p2_gamma", 2.0)):
        with pytest.raises(ValueError, match=f"{name} = {other!r}, an option this library does not have"):
            TrainConfig.from_dict({**saved, name: other})


@pytest.mark.parametrize("values, message", [
    ({"batch_size": 0}, "--batch-size"), ({"T": 1}, "--T must be an integer >= 2"),
    ({"T": 10, "sample_steps": 11}, "--sample-steps must be at most --T = 10"),
    ({"keep_every": 0}, "--keep-every must be a positive integer or None"),
    ({"train_subset": -5}, "--train-subset must be a positive integer"),  # would have sliced off the last five images
    ({"seed": -1}, "--seed must be a non-negative integer"), ({"warmup_steps": -1}, "--warmup-steps"),
    ({"beta_min": 0.0}, "0 < beta_min <= beta_max < 1"), ({"beta_min": 0.3, "beta_max": 0.2}, "beta_min <= beta_max"),
    ({"beta_max": 1.0}, "beta_max < 1"), ({"channels": (5, 8, 8)}, "--channels must be three positive widths"),
    ({"channels": (4, 8)}, "--channels"), ({"lr": 0.0}, "--lr must be a finite positive number"),
    ({"grad_clip": float("inf")}, "--grad-clip must be a finite positive number"),
    ({"weight_decay": -1.0}, "--weight-decay"), ({"ema_decay": 1.0}, "--ema-decay"), ({"epochs": -1}, "epochs"),
    ({"minutes": 0}, "--minutes must be a finite positive number"),
    ({"epochs": 1, "minutes": 30}, "--epochs or --minutes, not both"), ({"attention": 1}, "--attention"),
    ({"loss_weighting": "snr"}, "--loss-weighting must be one of"),
    ({"precision": "fp16"}, "--precision must be one of"),
    ({"noise_schedule": "quadratic"}, "--noise-schedule must be one of"),
    ({"prediction": "x0"}, "--prediction must be one of"),
])
def test_config_rejects_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**values)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_config(name):
    config = TrainConfig(**PRESETS[name])
    assert {key: getattr(config, key) for key in PRESETS[name]} == PRESETS[name]


def test_an_out_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("not a run")
    with pytest.raises(ValueError, match="--out .* is a file; it must name a folder"):
        train(tiny_config(tmp_path / "taken"), progress=False)


def test_warm_up_and_epochs():
    config = TrainConfig(lr=1e-3, warmup_steps=10, batch_size=100, epochs=1.5)
    assert learning_rate(config, 0, 900) == pytest.approx(1e-4)
    assert learning_rate(config, 9, 900) == learning_rate(config, 500, 900) == 1e-3
    cosine = dataclasses.replace(config, lr_schedule="cosine")
    assert learning_rate(cosine, 9, 900) == 1e-3
    assert learning_rate(cosine, 454, 900) == pytest.approx(5e-4, rel=1e-2)
    assert learning_rate(cosine, 899, 900) == 0.0
    with pytest.raises(ValueError, match="--lr-schedule"):
        TrainConfig(lr_schedule="linear")
    assert total_steps(config, 60_000) == 900
    assert total_steps(TrainConfig(steps=7), 60_000) == 7


def test_a_time_budget_buys_the_steps_its_share_of_the_minutes_fits():
    assert BUDGET_SHARE == 0.95
    assert steps_for_budget(30, 0.1) == 17_100  # 1,800 s x 0.95 / 0.1 s
    assert steps_for_budget(0.001, 10.0) == 1  # always at least one step


def test_timing_the_steps_leaves_the_network_and_the_random_state_alone(one_thread):
    network, batch = UNet(channels=(4, 8, 8)), torch.rand(16, 1, 28, 28) * 2 - 1
    before = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    random_state = torch.random.get_rng_state()
    pace = seconds_per_step(network, tiny_config("unused", minutes=0.001), batch,
                            autocast_context("fp32", torch.device("cpu")))
    assert pace > 0
    assert all(torch.equal(tensor, before[name]) for name, tensor in network.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), random_state)


def test_a_time_budget_sets_the_steps_a_resumed_run_keeps(tmp_path, one_thread, monkeypatch):
    monkeypatch.setattr(dgm.train, "seconds_per_step", lambda *args: 0.05)
    config = tiny_config(tmp_path / "run", minutes=0.01, checkpoint_every=5)
    out = train(config, progress=False)
    saved = TrainConfig.from_json(out / "checkpoint.json")
    assert saved == dataclasses.replace(config, steps=11)  # 0.6 s x 0.95 / 0.05 s, and it keeps the budget
    assert len((out / "loss.csv").read_text().splitlines()) == 1 + 11

    def timed_again(*args):
        raise AssertionError("a resumed run times its steps again")

    monkeypatch.setattr(dgm.train, "seconds_per_step", timed_again)
    train(dataclasses.replace(saved, steps=12), resume=True, progress=False)
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 12


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for name, message in (("tpu", "device must be"), ("mps", "no float64"), ("xpu", "device must be")):
        with pytest.raises(ValueError, match=message):
            select_device(name)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            select_device("cuda")


@pytest.mark.parametrize("native", [False, True])
def test_auto_precision_is_bf16_only_where_the_device_computes_in_it_natively(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert [resolve_precision(fixed, cpu) for fixed in ("fp32", "bf16")] == ["fp32", "bf16"]
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    with autocast_context("auto", cpu):
        assert UNet(channels=(4, 8, 8)).stem(torch.randn(2, 1, 28, 28)).dtype == (
            torch.bfloat16 if native else torch.float32)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_sets_the_dtype_of_the_passes_not_of_the_weights(precision, dtype):
    network = UNet(channels=(4, 8, 8))
    with autocast_context(precision, torch.device("cpu")):
        output = network.stem(torch.randn(2, 1, 28, 28))
    assert output.dtype == dtype
    assert all(parameter.dtype == torch.float32 for parameter in network.parameters())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(one_thread, precision):
    torch.manual_seed(0)
    model = dgm.DDPM(UNet(channels=(8, 16, 16)))
    batch = load_mnist("train")[0][:32]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def fixed_loss():
        with torch.no_grad():
            return float(model.loss(batch, generator=torch.Generator().manual_seed(1)))

    before = fixed_loss()
    for step in range(30):
        optimizer.zero_grad()
        with autocast_context(precision, batch.device):
            loss = model.loss(batch, generator=torch.Generator().manual_seed(step))
        loss.backward()
        optimizer.step()
    assert fixed_loss() < 0.7 * before


@pytest.mark.parametrize("attention, depth", [(False, 1), (True, 1), (False, 2)])
def test_run_writes_checkpoint_log_and_grid_and_loads_back(tmp_path, one_thread, attention, depth):
    network = {"attention": attention, "depth": depth}
    out = train(tiny_config(tmp_path / "run", **network), progress=False)
    saved = load_file(run_folder_checkpoint(out))
    metadata = json.loads((out / "checkpoint.json").read_text())
    assert metadata["format"] == CHECKPOINT_FORMAT and metadata["step"] == 4
    # The hardware its minutes mean: this CPU's vector instructions and the run's threads.
    assert metadata["hardware"].endswith(f"{torch.get_num_threads()} threads")
    assert torch.backends.cpu.get_cpu_capability() in metadata["hardware"]
    assert ("+ AMX" in metadata["hardware"]) == torch.cpu._is_amx_tile_supported()
    rows = (out / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,loss,lr,images_per_s" and len(rows) == 5
    assert (out / "samples" / "step_0000004.png").is_file()
    for weights in ("ema", "model"):
        model, config, _ = load_run(out, weights=weights)
        assert config == tiny_config(tmp_path / "run", **network)
        assert {name: metadata["model"][name] for name in network} == network
        for name, tensor in model.eps_model.state_dict().items():
            assert torch.equal(tensor, saved[f"{weights}.{name}"])
    assert not torch.equal(saved["ema.out.weight"], saved["model.out.weight"])
    assert any(name.startswith("ema.middle_attention.") for name in saved) == attention
    assert any(name.startswith("ema.middle_more.") for name in saved) == (depth > 1)


def first_logged_loss(out):
    """The loss of a run's first step as its loss log writes it."""
    return (out / "loss.csv").read_text().splitlines()[1].split(",")[2]


def test_training_and_its_sample_grids_use_the_configured_schedule_and_target(tmp_path, one_thread, monkeypatch):
    """Same seed, so the same images, timesteps and noise: only the schedule or the target can change the first
    loss, and each must; every DDPM the run builds (training, EMA grids) carries the config's schedule and target."""
    built = []
    monkeypatch.setattr(dgm.config, "DDPM", lambda *args, **kwargs: built.append(kwargs) or dgm.DDPM(*args, **kwargs))
    first_losses = {}
    for schedule, prediction in (("linear", "eps"), ("cosine", "eps"), ("linear", "v")):
        built.clear()
        out = train(tiny_config(tmp_path / f"{schedule}_{prediction}", noise_schedule=schedule, prediction=prediction),
                    progress=False)
        first_losses[schedule, prediction] = first_logged_loss(out)
        assert built and all((kwargs["noise_schedule"], kwargs["prediction"]) == (schedule, prediction)
                             for kwargs in built)
    assert len(set(first_losses.values())) == 3, first_losses


def test_a_cosine_v_prediction_run_loads_with_its_schedule_and_target(tmp_path, one_thread):
    out = train(tiny_config(tmp_path / "run", noise_schedule="cosine", prediction="v"), progress=False)
    model, config, _ = load_run(out)
    assert (config.noise_schedule, config.prediction) == (model.noise_schedule, model.prediction) == ("cosine", "v")
    torch.testing.assert_close(model.alpha_bar, cosine_schedule(config.T)["alpha_bar"], rtol=0, atol=0)


def test_export_keeps_the_ema_weights_and_refuses_to_train_on(tmp_path, capsys, one_thread):
    out = train(tiny_config(tmp_path / "run"), progress=False)
    shipped = export_run(out, tmp_path / "shipped")
    saved = load_file(run_folder_checkpoint(shipped))
    assert set(saved) == {name for name in load_file(run_folder_checkpoint(out)) if name.startswith("ema.")}
    model, config, metadata = load_run(shipped)
    assert config == tiny_config(tmp_path / "run") and metadata["weights"] == "ema"
    for name, tensor in model.eps_model.state_dict().items():
        assert torch.equal(tensor, saved[f"ema.{name}"])
    assert (shipped / "loss.csv").read_text() == (out / "loss.csv").read_text()
    with pytest.raises(CheckpointError, match="EMA weights only"):
        train(tiny_config(shipped, steps=6), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="holds no 'model' weights .* load it with weights='ema'"):
        load_run(shipped, weights="model")
    assert load_run(shipped / "checkpoint.json")[2] == metadata  # the sidecar names its checkpoint
    before = {path.name: path.read_bytes() for path in shipped.iterdir()}
    capsys.readouterr()
    assert train(tiny_config(shipped), resume=True, progress=True) == shipped  # finished: nothing to resume
    assert "cannot train further: extend the run folder it was exported from" in capsys.readouterr().out
    assert {path.name: path.read_bytes() for path in shipped.iterdir()} == before


def test_training_warns_when_the_ema_would_still_hold_the_initial_weights(tmp_path, one_thread):
    assert ema_initial_share(0.9995, 4492) == pytest.approx(0.1058, abs=1e-4)  # the gpu preset's first EMA
    with pytest.warns(UserWarning, match="still holds 99.6% of the random initial weights"):
        train(tiny_config(tmp_path / "slow", ema_decay=0.999), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(tiny_config(tmp_path / "fast", ema_decay=0.25), progress=False)  # 0.25 ** 4 = 0.4%: no warning


def test_a_float16_export_halves_the_weights_and_samples_in_float32(tmp_path, one_thread):
    out = train(tiny_config(tmp_path / "run"), progress=False)
    full = export_run(out, tmp_path / "full")
    half = export_run(full, tmp_path / "half", dtype="float16")  # an export of an export
    weights = {path: load_file(run_folder_checkpoint(path)) for path in (full, half)}
    assert {tensor.dtype for tensor in weights[half].values()} == {torch.float16}
    assert run_folder_checkpoint(half).stat().st_size < 0.6 * run_folder_checkpoint(full).stat().st_size
    model, _, metadata = load_run(half)
    assert metadata["weights_dtype"] == "float16" and metadata["exported_from"] == str(out)
    for name, tensor in model.eps_model.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, weights[full][f"ema.{name}"].half().float())
    with pytest.raises(ValueError, match="dtype must be one of"):
        export_run(out, tmp_path / "bad", dtype="bfloat16")


def test_keep_every_keeps_the_ema_weights_of_those_steps_and_of_the_last(tmp_path, one_thread):
    out = train(tiny_config(tmp_path / "run", steps=5, keep_every=2), progress=False)
    kept = sorted(path.name for path in (out / "snapshots").iterdir())
    assert kept == [snapshot_folder(out, step).name for step in (2, 4, 5)]
    partial = train(tiny_config(tmp_path / "partial", steps=4), progress=False)  # the same run, stopped at step 4
    model, config, metadata = load_run(snapshot_folder(out, 4))
    assert metadata["step"] == 4 and metadata["weights"] == "ema" and config.keep_every == 2
    final = load_file(run_folder_checkpoint(partial))
    for name, tensor in model.eps_model.state_dict().items():
        assert torch.equal(tensor, final[f"ema.{name}"]), name
    with pytest.raises(ValueError, match="--keep-every"):
        tiny_config(tmp_path, keep_every=0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_ends_with_the_same_weights(tmp_path, one_thread, precision):
    straight = train(tiny_config(tmp_path / "straight", steps=6, precision=precision), progress=False)
    interrupted = tiny_config(tmp_path / "resumed", steps=3, checkpoint_every=3, precision=precision)
    train(interrupted, progress=False)
    resumed = train(tiny_config(tmp_path / "resumed", steps=6, checkpoint_every=3, precision=precision),
                    resume=True, progress=False)
    expected, got = load_file(run_folder_checkpoint(straight)), load_file(run_folder_checkpoint(resumed))
    assert expected.keys() == got.keys() and any(name.startswith("optimizer.") for name in got)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert (straight / "loss.csv").read_text().count("\n") == (resumed / "loss.csv").read_text().count("\n") == 7


def test_a_training_step_never_waits_for_the_device(one_thread, monkeypatch):
    """Reading a tensor's value on the host (item, bool, float, tolist) waits for a GPU: the step must not do it, so
    that the host queues step after step; the trainer reads its losses once a window (dgm.train.LOG_EVERY)."""
    config = tiny_config("unused", loss_weighting="p2")
    network = UNet(channels=(4, 8, 8))
    ema = UNet(channels=(4, 8, 8)).requires_grad_(False)
    model = dgm.config.ddpm_around(network, config)
    optimizer = build_optimizer(network, config)
    batch, noise = torch.rand(4, 1, 28, 28) * 2 - 1, torch.Generator().manual_seed(0)

    def waits(*args, **kwargs):
        raise AssertionError("the training step read a tensor's value on the host")

    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, waits)
    loss = dgm.train_step.training_step(model, network, ema, optimizer, batch, noise, 1e-3, config,
                                        autocast_context("fp32", batch.device))
    monkeypatch.undo()
    assert loss.isfinite()


def test_the_loss_log_has_a_row_per_step_written_once_a_window(tmp_path, one_thread, monkeypatch):
    monkeypatch.setattr(dgm.train, "LOG_EVERY", 3)
    out = train(tiny_config(tmp_path / "run", steps=8, checkpoint_every=8), progress=False)
    rows = [row.split(",") for row in (out / "loss.csv").read_text().splitlines()[1:]]
    assert [int(row[0]) for row in rows] == list(range(1, 9))
    # each window's rows share its rate: steps 1-3, 4-6, and 7-8 (the last step ends a window)
    assert [len({row[4] for row in rows[first:last]}) for first, last in ((0, 3), (3, 6), (6, 8))] == [1, 1, 1]
    assert all(float(row[2]) > 0 for row in rows)


def test_a_compiled_run_trains_and_saves_the_plain_network(tmp_path, one_thread, monkeypatch):
    """``--compile`` (torch.compile; CUDA graphs on a GPU) changes how the step runs, not what it saves; a time
    budget is timed on the compiled step."""
    compiled = []

    def compile_network(network, device):
        compiled.append(network)
        return torch.compile(network)

    for module in (dgm.train, dgm.train_step):
        monkeypatch.setattr(module, "compile_network", compile_network)
    out = train(tiny_config(tmp_path / "run", minutes=0.002, compile=True, checkpoint_every=1), progress=False)
    model, config, _ = load_run(out)
    assert config.compile and config.steps >= 1 and len(compiled) == 2  # the timed copy, then the run's network
    assert not any("_orig_mod" in name for name in load_file(run_folder_checkpoint(out)))
    assert model.sample(2, steps=2).shape == (2, 1, 28, 28)  # sample() itself refuses non-finite values


def test_the_optimizer_is_fused_where_the_device_allows_and_plain_elsewhere(monkeypatch):
    network, config = UNet(channels=(4, 8, 8)), tiny_config("unused")
    supported = dgm.train_step.fused_adamw_supported(torch.device("cpu"))
    assert build_optimizer(network, config).defaults["fused"] == (supported or None)
    monkeypatch.setattr(dgm.train_step, "fused_adamw_supported", lambda device: False)
    assert not build_optimizer(network, config).defaults["fused"]


def test_the_foreach_ema_update_is_a_lerp_of_every_parameter():
    torch.manual_seed(0)
    network, ema = UNet(channels=(4, 8, 8)), UNet(channels=(4, 8, 8)).requires_grad_(False)
    expected = [averaged.detach().lerp(current, 1 - 0.9) for averaged, current in
                zip(ema.parameters(), network.parameters())]
    update_ema(ema, network, 0.9)
    assert all(torch.equal(got, want) for got, want in zip(ema.parameters(), expected))


@pytest.mark.parametrize("saved_fused", [None, True])
def test_a_run_resumes_with_the_optimizer_it_was_saved_with(tmp_path, one_thread, monkeypatch, saved_fused):
    """A run saved by an unfused AdamW resumes unfused (the same arithmetic); a fused one resumes fused where the
    kernel exists, and unfused on a device without it."""
    out = train(tiny_config(tmp_path / "run", steps=2), progress=False)
    metadata = json.loads((out / "checkpoint.json").read_text())
    groups = [{**group, "fused": saved_fused} for group in metadata["optimizer_param_groups"]]
    save_checkpoint(run_folder_checkpoint(out), load_file(run_folder_checkpoint(out)),
                    {**metadata, "optimizer_param_groups": groups})
    train(tiny_config(out, steps=4), resume=True, progress=False)
    resumed = json.loads((out / "checkpoint.json").read_text())["optimizer_param_groups"]
    supported = dgm.train_step.fused_adamw_supported(torch.device("cpu"))
    assert all(group["fused"] == (saved_fused and supported) for group in resumed)
    monkeypatch.setattr(dgm.train_step, "fused_adamw_supported", lambda device: False)
    train(tiny_config(out, steps=6), resume=True, progress=False)
    assert not json.loads((out / "checkpoint.json").read_text())["optimizer_param_groups"][0]["fused"]


def test_broken_checkpoints_give_clear_errors(tmp_path, one_thread):
    out = train(tiny_config(tmp_path / "run", steps=2), progress=False)
    path = run_folder_checkpoint(out)
    data = path.read_bytes()
    header = json.dumps({"x": {"dtype": "F8_E8M0", "shape": [1], "data_offsets": [0, 1]}}).encode()
    foreign_dtype = len(header).to_bytes(8, "little") + header + b"\x00"  # safetensors reads it, torch has no such dtype
    for label, broken in (("truncated", data[: len(data) // 2]), ("corrupt", b"\xff" * 16 + data[16:]),
                          ("empty", b""), ("foreign", foreign_dtype)):
        bad = tmp_path / f"{label}.safetensors"
        bad.write_bytes(broken)
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            load_run(bad)
        if label in ("corrupt", "empty"):  # a broken header, read alone as dgm export and dgm train read it
            with pytest.raises(CheckpointError, match="corrupt or truncated"):
                checkpoint_metadata(bad)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_run(tmp_path / "nowhere")
    metadata = json.loads((out / "checkpoint.json").read_text())
    tensors = load_file(path)
    save_checkpoint(tmp_path / "other.safetensors", tensors, {**metadata, "format": "something-else/1"})
    with pytest.raises(CheckpointError, match="format"):
        load_run(tmp_path / "other.safetensors")
    wider = {**metadata, "config": {**metadata["config"], "channels": [8, 8, 8]}}
    save_checkpoint(tmp_path / "mismatched.safetensors", tensors, wider)
    with pytest.raises(CheckpointError, match="does not fit the model.*shape mismatch"):
        load_run(tmp_path / "mismatched.safetensors")


def test_two_process_gloo_ddp_run(tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "dgm", "train", "--channels", "4,8,8", "--batch-size", "16", "--train-subset", "64",
               "--steps", "3", "--checkpoint-every", "3", "--sample-n", "4", "--sample-steps", "2",
               "--device", "cpu", "--out", str(out)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = json.loads((out / "checkpoint.json").read_text())
    assert metadata["world_size"] == 2 and metadata["step"] == 3
    model, _, _ = load_run(out)
    assert all(torch.isfinite(tensor).all() for tensor in model.eps_model.state_dict().values())


def test_a_step_clips_the_gradient_norm_then_moves_the_ema_toward_the_stepped_weights(one_thread):
    torch.manual_seed(0)
    config = tiny_config("unused", grad_clip=1e-3, ema_decay=0.25)
    network = UNet(channels=(4, 8, 8))
    ema = UNet(channels=(4, 8, 8)).requires_grad_(False)
    before = [parameter.clone() for parameter in ema.parameters()]
    model = dgm.config.ddpm_around(network, config)
    optimizer = build_optimizer(network, config)
    batch, noise = torch.rand(8, 1, 28, 28) * 2 - 1, torch.Generator().manual_seed(0)
    dgm.train_step.training_step(model, network, ema, optimizer, batch, noise, 1e-3, config,
                                 autocast_context("fp32", batch.device))
    norm = torch.stack([parameter.grad.norm() for parameter in network.parameters()]).norm()
    assert float(norm) == pytest.approx(1e-3, rel=1e-4)  # the raw gradient of a fresh network is far larger
    for old, new, stepped in zip(before, ema.parameters(), network.parameters()):
        torch.testing.assert_close(new, 0.25 * old + 0.75 * stepped)


def recording_steps(monkeypatch, after=None):
    """Replace the trainer's training step by one that records (noise seed, batch) and then calls ``after(call,
    network, loss)``, if given, after the real step; returns the list it records into."""
    calls, step = [], dgm.train.training_step

    def recorded(training_model, network, ema, optimizer, batch, noise, *args):
        calls.append((noise.initial_seed(), batch.clone()))
        loss = step(training_model, network, ema, optimizer, batch, noise, *args)
        return after(len(calls), network, loss) if after else loss

    monkeypatch.setattr(dgm.train, "training_step", recorded)
    return calls


def test_each_step_draws_its_own_noise_and_each_epoch_its_own_order(tmp_path, one_thread, monkeypatch):
    calls = recording_steps(monkeypatch)
    train(tiny_config(tmp_path / "run", steps=6, train_subset=32, batch_size=16, checkpoint_every=6), progress=False)
    assert len({seed for seed, _ in calls}) == 6
    epochs = [torch.cat([batch for _, batch in calls[first:first + 2]]) for first in (0, 2, 4)]
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    for epoch in epochs[1:]:  # every epoch is an order of the same 32 images
        torch.testing.assert_close(epoch.sum(dim=(1, 2, 3)).sort().values, epochs[0].sum(dim=(1, 2, 3)).sort().values)


def test_an_interrupted_run_logs_no_step_past_its_checkpoint_and_a_resume_rewrites_the_rest(tmp_path, one_thread,
                                                                                             monkeypatch):
    monkeypatch.setattr(dgm.train, "LOG_EVERY", 1)

    def interrupt(call, network, loss):
        if call == 6:
            raise KeyboardInterrupt
        return loss

    recording_steps(monkeypatch, interrupt)
    config = tiny_config(tmp_path / "run", steps=8, checkpoint_every=4)
    with pytest.raises(dgm.train.TrainingStopped, match="interrupted after step 5: .* checkpoint of step 4"):
        train(config, progress=False)
    log = tmp_path / "run" / "loss.csv"
    assert [int(row.split(",")[0]) for row in log.read_text().splitlines()[1:]] == [1, 2, 3, 4]
    log.write_text(log.read_text() + "5,0,0.5,1e-3,1.0\n6,0,0.5,1e-3,1.0\n")  # rows a killed process left
    monkeypatch.undo()
    train(config, resume=True, progress=False)
    assert [int(row.split(",")[0]) for row in log.read_text().splitlines()[1:]] == list(range(1, 9))


def test_weights_that_stop_being_finite_stop_the_run_and_keep_the_last_checkpoint(tmp_path, one_thread, monkeypatch):
    def poison(call, network, loss):
        if call == 4:  # after the step: its loss is finite, its weights are not
            next(network.parameters()).data.fill_(float("nan"))
        return loss

    recording_steps(monkeypatch, poison)
    with pytest.raises(dgm.train.TrainingStopped, match="weights are no longer finite.*checkpoint of step 2"):
        train(tiny_config(tmp_path / "run", steps=6, checkpoint_every=2), progress=False)
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["step"] == 2


def test_sample_grids_are_drawn_from_the_ema_weights(tmp_path, one_thread, monkeypatch):
    drawn = []
    monkeypatch.setattr(dgm.train, "save_sample_grid", lambda model, config, device, path: drawn.append(
        {name: value.clone() for name, value in model.eps_model.state_dict().items()}))
    out = train(tiny_config(tmp_path / "run", steps=4, sample_every=4), progress=False)
    ema = load_run(out)[0].eps_model.state_dict()
    assert len(drawn) == 1 and drawn[0].keys() == ema.keys()
    assert all(torch.equal(drawn[0][name], ema[name]) for name in ema)


def test_overwrite_removes_the_old_runs_snapshots(tmp_path, one_thread):
    train(tiny_config(tmp_path / "run", keep_every=2), progress=False)
    assert (tmp_path / "run" / "snapshots").is_dir()
    train(tiny_config(tmp_path / "run"), overwrite=True, progress=False)
    assert not (tmp_path / "run" / "snapshots").exists()


def test_sample_grids_map_minus_one_to_black_and_one_to_white(tmp_path):
    images = torch.tensor([-1.0, 0.0, 1.0, 3.0]).reshape(4, 1, 1, 1).expand(4, 1, 2, 2)
    path = dgm.sampling.save_grid(images, tmp_path / "grid.png", nrow=4)
    pixels = numpy.array(PIL.Image.open(path).convert("L"))
    assert [int(pixels[2, 2 + 4 * k]) for k in range(4)] == [0, 128, 255, 255]  # padding 2, a 2-pixel cell every 4


def test_training_shows_its_progress_only_when_asked(tmp_path, one_thread, capsys):
    train(tiny_config(tmp_path / "quiet", steps=2), progress=False)
    assert "training (fp32)" not in capsys.readouterr().err
    train(tiny_config(tmp_path / "shown", steps=2), progress=True)
    assert "training (fp32)" in capsys.readouterr().err
