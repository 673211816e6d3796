"""The MNIST ablation (dgm.ablation): every model x setting, same N and seed, JSON + CSV + grids, clear errors."""

import csv
import json
import math

import pytest

import dgm
from dgm import ablation, cli, evaluate
from dgm.ablation import MODELS, QUICK_N, RESCALED_MODELS, SETTINGS, row_name
from dgm.ablation_report import (find_row, markdown_table, select_models, share_change, share_standard_error,
                                 text_table)
from dgm.classifier import load_classifier
from dgm.config import TrainConfig
from dgm.train import train

TINY_T = 100  # the smallest T that the 100-step rows can respace


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two tiny trained runs with different T, in seconds."""
    folder = tmp_path_factory.mktemp("runs")
    runs = []
    for T in (TINY_T, 2 * TINY_T):
        config = TrainConfig(T=T, channels=(4, 8, 8), batch_size=16, train_subset=64, steps=2, warmup_steps=1,
                             checkpoint_every=2, sample_every=100, sample_n=4, sample_steps=2, device="cpu",
                             out=str(folder / f"T{T}"))
        runs.append(train(config, progress=False))
    return runs


def test_quick_ablation_writes_every_row_and_resumes(tiny_runs, tmp_path, capsys, monkeypatch, one_thread):
    out = tmp_path / "ablation"
    real_sample_run, drawn = ablation.sample_run, []  # each row's sigma and images, in the order of the rows
    monkeypatch.setattr(ablation, "sample_run", lambda *args, **kwargs: drawn.append(
        (args[4], real_sample_run(*args, **kwargs)[0])) or (drawn[-1][1], 1e-3))
    assert cli.main(["ablation", "--quick", "--models", *map(str, tiny_runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "real MNIST (16 training images)" in printed and str(out.with_suffix(".json")) in printed

    report = json.loads(out.with_suffix(".json").read_text())
    assert [model["T"] for model in report["models"]] == [TINY_T, 2 * TINY_T]
    for model in report["models"]:
        expected = dgm.ddpm_schedules(model["beta_min"], model["beta_max"], model["T"])["alpha_bar"][-1]
        assert model["alpha_bar_T"] == pytest.approx(float(expected)) and model["training_seconds"] > 0
    rows = report["rows"]
    assert len(rows) == 2 * len(SETTINGS)
    assert {(row["n"], row["seed"]) for row in rows} == {(QUICK_N, 0)}
    assert [row["steps"] for row in rows[:len(SETTINGS)]] == [setting[2] or TINY_T for setting in SETTINGS]
    classifier = load_classifier()
    reference = evaluate.reference_statistics(classifier)
    assert len(drawn) == len(rows)
    for row, (sigma, images) in zip(rows, drawn):
        assert sigma == (row["sigma"] or "beta")  # DDIM ignores sigma
        expected = evaluate.score_images(images, classifier, reference)  # the row scores the images drawn for it
        assert {key: row[key] for key in expected} == pytest.approx(expected)
        assert row["fid_floor"] == report["floor"]["fid_mnist"] and row["seconds_per_sample"] == 1e-3
        assert row["device"] == report["machine"]["device"]
        assert (tmp_path / "ablation_grids" / row["grid"]).is_file()
    assert report["batch_size"] == 256 and "threads" in report["machine"]["device"]  # a CPU's name
    with open(out.with_suffix(".csv"), newline="") as file:
        assert len(list(csv.DictReader(file))) == len(rows)

    # A second run keeps every finished row and samples again only the row whose grid is gone.
    sampled = []
    monkeypatch.setattr(ablation, "sample_run", lambda *args, **kwargs: sampled.append(args) or real_sample_run(
        *args, **kwargs))
    (tmp_path / "ablation_grids" / rows[3]["grid"]).unlink()
    assert cli.main(["ablation", "--quick", "--models", *map(str, tiny_runs), "--out", str(out)]) == 0
    again = json.loads(out.with_suffix(".json").read_text())
    assert len(sampled) == 1 and sampled[0][2] == rows[3]["steps"] and again["complete"]
    assert again["rows"][:3] == rows[:3] and again["rows"][4:] == rows[4:]

    # A third run finds every row measured: it samples nothing and leaves both files as they were, byte for byte.
    sampled.clear()
    written = {path: path.read_bytes() for path in (out.with_suffix(".json"), out.with_suffix(".csv"))}
    monkeypatch.setattr(ablation, "load_classifier", lambda *args: pytest.fail("loaded the classifier"))
    assert cli.main(["ablation", "--quick", "--models", *map(str, tiny_runs), "--out", str(out)]) == 0
    assert not sampled and "already holds every row (unchanged)" in capsys.readouterr().out
    assert {path: path.read_bytes() for path in written} == written
    # So does the same models' list in another order (the shipped report lists T = 1000 first).
    assert cli.main(["ablation", "--quick", "--models", *map(str, tiny_runs[::-1]), "--out", str(out)]) == 0
    assert not sampled and "already holds every row (unchanged)" in capsys.readouterr().out
    assert {path: path.read_bytes() for path in written} == written
    # A list that leaves a model out would drop its rows: refused without --replace.
    with pytest.raises(SystemExit) as refused:
        cli.main(["ablation", "--quick", "--models", str(tiny_runs[0]), "--out", str(out)])
    assert refused.value.code == 2 and f"holds rows of {tiny_runs[1].name}" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in written} == written
    monkeypatch.setattr(ablation, "load_classifier", load_classifier)

    # Another batch size draws other samples from the same seed, so no row would be kept: refused without --replace.
    sampled.clear()
    rebatch = ["ablation", "--quick", "--batch-size", "5", "--models", *map(str, tiny_runs), "--out", str(out)]
    with pytest.raises(SystemExit) as refused:
        cli.main(rebatch)
    assert refused.value.code == 2 and not sampled
    assert "batch_size 256 -> 5" in capsys.readouterr().err
    assert json.loads(out.with_suffix(".json").read_text()) == again
    assert cli.main(rebatch + ["--replace"]) == 0
    rebatched = json.loads(out.with_suffix(".json").read_text())
    assert len(sampled) == len(rows) and rebatched["batch_size"] == 5

    # Unset options resume the report's own seed and batch size: nothing is sampled again.
    sampled.clear()
    reseeded = {**rebatched, "seed": 3, "rows": [{**row, "seed": 3} for row in rebatched["rows"]]}
    out.with_suffix(".json").write_text(json.dumps(reseeded))
    assert cli.main(["ablation", "--quick", "--models", *map(str, tiny_runs), "--out", str(out)]) == 0
    assert not sampled

    # A model saved anew since its rows were sampled has them sampled again; the other model's rows stay.
    retrained = {**reseeded, "models": [{**reseeded["models"][0], "saved_at": "an earlier save"},
                                        *reseeded["models"][1:]]}
    out.with_suffix(".json").write_text(json.dumps(retrained))
    command = ["ablation", "--quick", "--models", *map(str, tiny_runs), "--out", str(out)]
    recording = ablation.sample_run
    monkeypatch.setattr(ablation, "sample_run", lambda *args, **kwargs: recording(*args, **kwargs) if len(
        sampled) < 2 else (_ for _ in ()).throw(KeyboardInterrupt))  # Ctrl-C as the model's third row is sampled
    assert cli.main(command) == 130
    assert "keeps every row measured so far; the same command samples the rest" in capsys.readouterr().err
    stopped = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert len(stopped) == 2 + len(SETTINGS)  # its two new rows, and every row of the other model
    monkeypatch.setattr(ablation, "sample_run", recording)
    assert cli.main(command) == 0
    assert [str(args[0]) for args in sampled] == [str(tiny_runs[0])] * len(SETTINGS)


def test_an_interrupted_ablation_keeps_its_rows_and_resumes_with_the_rest(tiny_runs, tmp_path, monkeypatch,
                                                                          one_thread):
    out, calls, interrupted = tmp_path / "ablation", [], []

    def sample_run(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3 and not interrupted:  # Ctrl-C while the first run samples its third row
            interrupted.append(True)
            raise KeyboardInterrupt
        return ablation.torch.rand(QUICK_N, 1, 28, 28) * 2 - 1, 1e-3

    monkeypatch.setattr(ablation, "sample_run", sample_run)
    command = ["ablation", "--quick", "--models", *map(str, tiny_runs), "--out", str(out)]
    assert cli.main(command) == 130
    assert len(json.loads(out.with_suffix(".json").read_text())["rows"]) == 2
    calls.clear()
    assert cli.main(command) == 0
    assert len(calls) == 2 * len(SETTINGS) - 2


def test_a_replaced_report_is_kept_until_the_new_one_is_complete(tiny_runs, tmp_path, monkeypatch, capsys,
                                                                 one_thread):
    out, calls = tmp_path / "ablation", []

    def sample_run(*args, **kwargs):
        calls.append(args)
        if len(calls) == len(SETTINGS) + 2:  # Ctrl-C on the replacing run's second row
            raise KeyboardInterrupt
        return ablation.torch.rand(QUICK_N, 1, 28, 28) * 2 - 1, 1e-3

    monkeypatch.setattr(ablation, "sample_run", sample_run)
    assert cli.main(["ablation", "--quick", "--models", str(tiny_runs[0]), "--out", str(out)]) == 0
    first = {path: path.read_bytes() for path in (out.with_suffix(".json"), out.with_suffix(".csv"))}
    kept_json, kept_csv, kept_grids = ablation.replaced_copies(out, tmp_path / "ablation_grids")
    replace = ["ablation", "--quick", "--seed", "1", "--replace", "--models", str(tiny_runs[0]), "--out", str(out)]
    with pytest.raises(SystemExit) as refused:
        cli.main([*replace[:-1], str(out) + ".json"])
    assert refused.value.code == 2 and "without suffix" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # refused before anything is replaced: no copies
        cli.main([*replace[:-4], str(tiny_runs[0]), str(tmp_path / "no_such_run"), "--out", str(out)])
    assert refused.value.code == 2 and not kept_json.exists() and not kept_grids.exists()
    assert cli.main(replace) == 130
    assert kept_json.read_bytes() == first[out.with_suffix(".json")] and kept_csv.read_bytes() == first[
        out.with_suffix(".csv")]
    assert len(list(kept_grids.iterdir())) == len(SETTINGS)
    err = capsys.readouterr().err
    assert f"the one it replaces is {kept_json}" in err and f"mv {kept_grids} {tmp_path / 'ablation_grids'}" in err
    assert len(json.loads(out.with_suffix(".json").read_text())["rows"]) == 1  # the new report's finished row
    assert cli.main(replace) == 0  # finishes the new report, and only then drops the copies
    assert json.loads(out.with_suffix(".json").read_text())["seed"] == 1
    assert not kept_json.exists() and not kept_csv.exists() and not kept_grids.exists()


def test_row_names_are_stable():
    assert row_name("ddpm_mnist_T1000", "ancestral", "beta", None) == "T1000_ancestral-beta_all"
    assert row_name("ddpm_mnist_T500_rescaled", "ddim", None, 50) == "T500_rescaled_ddim_50"
    assert row_name("T500", "ancestral", "posterior", 100) == "T500_ancestral-posterior_100"


def test_bad_input_exits_with_a_message(tmp_path, capsys):
    twins = [tmp_path / "a" / "mnist", tmp_path / "b" / "mnist"]  # rows and grids are named by the folder
    for argv, message in ((["--models", str(tmp_path / "missing")], "no checkpoint"), (["--n", "1"], "n must be"),
                          (["--models", *map(str, twins)], "--models names mnist more than once")):
        argv = ["ablation", *argv, "--out", str(tmp_path / "ablation")]  # a new report: the shipped one stays
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, err


def test_find_row_finds_the_row_of_a_setting():
    rows = [{"model": "ddpm_mnist_T1000", "T": 1000, "sampler": "ancestral", "sigma": "beta", "steps": steps,
             "fid_mnist": fid} for steps, fid in ((1000, 29.0), (100, 50.0))]
    report = {"rows": rows}
    assert find_row(report, 1000) is rows[0] and find_row(report, 1000, steps=100)["fid_mnist"] == 50.0
    with pytest.raises(KeyError, match="T=500"):
        find_row(report, 500)


def test_tables_name_the_device_only_when_rows_differ_in_it():
    scores = {"fid_mnist": 20.0, "mean_confidence": 0.95, "share_confident": 0.9, "label_entropy": 2.3,
              "seconds_per_sample": 0.01}
    cpu = "Intel(R) Xeon(R) Processor, AVX512 + BF16 + AMX, 2 threads"  # as dgm.device.hardware_name writes it
    rows = [{"model": "ddpm_mnist_T1000", "sampler": "ddim", "sigma": None, "steps": steps, "device": device, "n": 100,
             **scores} for steps, device in ((50, "NVIDIA H200"), (100, "NVIDIA H200"), (50, cpu))]
    report = {"n": 100, "floor": scores, "rows": rows}
    one_device = markdown_table(report, rows[:2]).splitlines()
    assert "device" not in one_device[0] and len(one_device) == 2 + 1 + 2  # header, rule, floor, two rows
    no_break = "\u00a0"  # the book's share cell wraps, if at all, before its error: 0.900 / ± 0.030
    assert f"| 0.900 ±{no_break}0.030 |" in one_device[-1] and "| 10.00 |" in one_device[-1]  # share ± SE; ms
    both = markdown_table(report, rows).splitlines()
    assert both[0].endswith("| device |") and both[-1].endswith("| CPU |") and both[-2].endswith("| GPU |")
    unrecorded = [rows[0], {key: value for key, value in rows[2].items() if key != "device"}]
    assert markdown_table(report, unrecorded).splitlines()[-1].endswith("| unrecorded |")  # not guessed a GPU
    assert text_table(report).splitlines()[-1].rstrip().endswith("2 threads")  # the terminal names the device
    assert both[-1].startswith("| T1000 |") and text_table(report).splitlines()[-1].startswith("ddpm_mnist_T1000")
    assert text_table(report).splitlines()[0].rstrip().endswith("device")
    posterior = [{**rows[0], "sampler": "ancestral", "sigma": "posterior"}]
    assert r"ancestral, $\sigma^2 = \tilde\beta$" in markdown_table(report, posterior)  # MyST math in the book
    assert "ancestral, sigma^2 = beta_tilde" in text_table({**report, "rows": posterior})  # plain in a terminal


def test_find_row_tells_models_with_the_same_T_apart():
    rows = [{"model": model, "T": 500, "sampler": "ddim", "sigma": None, "steps": 50}
            for model in ("ddpm_mnist_T500", "ddpm_mnist_T500_rescaled")]
    report = {"rows": rows}
    assert find_row(report, 500, "ddim", None, 50, model="ddpm_mnist_T500_rescaled") is rows[1]
    with pytest.raises(KeyError, match="several models have T=500.*ddpm_mnist_T500_rescaled"):
        find_row(report, 500, "ddim", None, 50)
    with pytest.raises(KeyError, match="model ddpm_mnist_T2000"):
        find_row(report, 500, "ddim", None, 50, model="ddpm_mnist_T2000")


def test_select_models_keeps_the_order_of_the_folders():
    report = {"models": [{"name": folder.name} for folder in reversed(RESCALED_MODELS + MODELS[:2])]}
    assert [model["name"] for model in select_models(report)] == [folder.name for folder in MODELS[:2]]
    assert [model["name"] for model in select_models(report, RESCALED_MODELS)] == [f.name for f in RESCALED_MODELS]


def test_share_standard_error_is_the_binomial_one():
    assert math.isclose(share_standard_error(0.5, 100), 0.05)
    assert share_standard_error(1.0, 64) == 0.0


def test_share_change_adds_the_binomial_variances():
    change, error, significant = share_change(0.5, 100, 0.7, 100)
    assert math.isclose(change, 0.2)
    assert math.isclose(error, math.sqrt(0.25 / 100 + 0.21 / 100))  # 0.0678
    assert significant
    assert share_change(0.609, 64, 0.703, 64)[2] is False  # the T = 500 rescaled rows: 0.094 against 2 x 0.083
    change, error, _ = share_change(0.9, 10, 0.9, 1000)
    assert change == 0 and math.isclose(error, math.sqrt(0.009 + 0.00009))  # the smaller sample dominates


def test_own_models_report_under_runs_not_over_the_shipped_one(monkeypatch, capsys):
    """The shipped report in results/ is the default only for the shipped models; a student's own runs go to runs/."""
    grids = []

    def stop(models, n, seed, device, grid_folder, *args, **kwargs):
        grids.append(grid_folder)
        raise ValueError("stopped before sampling")

    monkeypatch.setattr(ablation, "run_ablation", stop)
    monkeypatch.setattr(ablation, "described_models", lambda *args: [])  # the runs need not exist
    for models in ([], ["runs/T500", "runs/T1000"]):
        with pytest.raises(SystemExit):
            cli.main(["ablation", *(["--models", *models] if models else [])])
    assert grids == [ablation.DEFAULT_OUT.parent / "ablation_grids", ablation.OWN_MODELS_OUT.parent / "ablation_grids"]
    assert "stopped before sampling" in capsys.readouterr().err
