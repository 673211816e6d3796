"""The ``dgm`` command: dispatch, the toy-ablation forwarding, and train -> sample -> evaluate end to end."""

import argparse
import json
import re
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
from PIL import Image

from dgm import cli, evaluate, toy_ablation
from dgm.config import PRESETS
from dgm.learning_curve import CURVE_NAME
from dgm.paths import RESULTS, RUNS
from dgm.runs import RUN_REPORTS, run_files

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--channels", "4,8,8", "--batch-size", "16", "--train-subset", "64", "--steps", "2",
              "--checkpoint-every", "2", "--sample-n", "4", "--sample-steps", "2", "--device", "cpu"]


def test_console_script_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["dgm"] == "dgm.cli:main"


def test_python_dash_m_dgm_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "dgm", "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0
    for command in cli.COMMANDS:
        assert command in result.stdout


def test_warnings_name_the_students_file_but_not_the_librarys():
    library = cli.command_line_warning("blurs", UserWarning, str(Path(cli.__file__).parent / "train.py"), 10)
    own = cli.command_line_warning("invalid value", RuntimeWarning, "/tmp/mine.py", 7, "x = np.sqrt(-1)")
    assert library == "warning: blurs\n" and "/tmp/mine.py:7" in own and "invalid value" in own


def test_no_or_unknown_command_is_an_error(capsys):
    assert cli.main([]) == 2
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian' (did you mean 'train'?)" in capsys.readouterr().err


def test_toy_ablation_forwards_its_arguments(monkeypatch):
    received = []
    monkeypatch.setitem(sys.modules, "dgm.toy_ablation", types.SimpleNamespace(main=received.append))
    assert cli.main(["toy-ablation", "--seed", "3", "--quick"]) == 0
    assert received == [["--seed", "3", "--quick"]]


def test_train_sample_evaluate_and_resume(tmp_path, capsys, monkeypatch, one_thread):
    run = tmp_path / "run"
    assert cli.main(["train", *TINY_TRAIN, "--out", str(run)]) == 0
    assert (run / "checkpoint.safetensors").is_file()

    grid = tmp_path / "grid.png"
    assert cli.main(["sample", "--ckpt", str(run), "--steps", "3", "--n", "4", "--out", str(grid)]) == 0
    with Image.open(grid) as image:
        assert image.size == (2 * 28 + 3 * 2, 2 * 28 + 3 * 2)  # 2 x 2 images, torchvision's 2-pixel padding

    capsys.readouterr()
    assert cli.main(["evaluate", "--ckpt", str(run), "--steps", "2", "--n", "8"]) == 0
    table = capsys.readouterr().out
    assert "FID-MNIST" in table and "real floor" in table
    report = json.loads((run / "eval_ancestral-beta_steps-2_n-8_seed-0.json").read_text())
    assert report["settings"]["n"] == 8 and report["samples"]["seconds_per_sample"] > 0
    assert (report["settings"]["training_step"], report["settings"]["T"]) == (2, 1000)
    assert report["settings"]["classifier"] == "mnist_classifier.safetensors"
    assert [path.name for path in run_files(run) if path.suffix == ".json" and path.stem != "checkpoint"] == \
        ["eval_ancestral-beta_steps-2_n-8_seed-0.json"]  # the run's own: `dgm train --overwrite` deletes it too
    assert any(Path(CURVE_NAME).match(pattern) for pattern in RUN_REPORTS)
    assert set(report["real_floor"]) == {"fid_mnist", "mean_confidence", "share_confident", "label_entropy"}

    # A model under checkpoints/ is the shipped one: its default report goes to runs/eval/, not beside it.
    monkeypatch.setattr(evaluate, "CHECKPOINTS", tmp_path)
    monkeypatch.setattr(evaluate, "RUNS", tmp_path / "runs")
    assert cli.main(["evaluate", "--ckpt", str(run), "--steps", "2", "--n", "8", "--seed", "1"]) == 0
    assert (tmp_path / "runs" / "eval" / "run" / "eval_ancestral-beta_steps-2_n-8_seed-1.json").is_file()
    assert not list(run.glob("*seed-1.json"))

    # An explicit --json that holds another measurement is replaced only with --replace; the same one is made again.
    kept = tmp_path / "kept.json"
    assert cli.main(["evaluate", "--ckpt", str(run), "--steps", "2", "--n", "8", "--json", str(kept)]) == 0
    before = kept.read_text()
    with pytest.raises(SystemExit) as refused:
        cli.main(["evaluate", "--ckpt", str(run), "--steps", "3", "--n", "8", "--json", str(kept)])
    assert refused.value.code == 2 and "other settings (steps 2 -> 3)" in capsys.readouterr().err
    assert kept.read_text() == before
    for same_model in (str(run) + "/", str(run / "checkpoint.safetensors")):
        assert cli.main(["evaluate", "--ckpt", same_model, "--steps", "2", "--n", "8", "--json", str(kept)]) == 0
    assert cli.main(["evaluate", "--ckpt", str(run), "--steps", "3", "--n", "8", "--json", str(kept),
                     "--replace"]) == 0
    assert json.loads(kept.read_text())["settings"]["steps"] == 3

    assert cli.main(["train", "--resume", "--out", str(run), "--steps", "3"]) == 0
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 3


def test_an_explicit_length_replaces_the_time_budget_of_the_preset(tmp_path, one_thread):
    run = tmp_path / "run"
    assert PRESETS["cpu"]["minutes"] and "steps" not in PRESETS["cpu"]
    assert cli.main(["train", "--preset", "cpu", *TINY_TRAIN, "--out", str(run)]) == 0
    config = json.loads((run / "checkpoint.json").read_text())["config"]
    assert (config["minutes"], config["steps"], config["depth"]) == (None, 2, PRESETS["cpu"]["depth"])


def test_train_rescale_betas_scales_the_betas_of_a_new_run_only(tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    assert cli.main(["train", *TINY_TRAIN, "--T", "500", "--rescale-betas", "--out", str(run)]) == 0
    config = json.loads((run / "checkpoint.json").read_text())["config"]
    assert (config["T"], config["beta_min"], config["beta_max"]) == (500, 2e-4, 0.04)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--resume", "--rescale-betas", "--out", str(run)])
    assert exit_info.value.code == 2 and "a resumed run keeps its saved betas" in capsys.readouterr().err


def test_a_time_budget_is_refused_on_resume(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--resume", "--minutes", "5", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2 and "extend a resumed run with --steps" in capsys.readouterr().err


def test_a_run_takes_one_length(tmp_path, capsys):
    for lengths in (["--steps", "100", "--minutes", "0.1"], ["--steps", "100", "--epochs", "2"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["train", *lengths, "--out", str(tmp_path / "run")])
        assert exit_info.value.code == 2 and "each set the run's length: give one" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_bad_input_exits_with_a_message_not_a_traceback(tmp_path, capsys):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = [(["sample", "--ckpt", str(broken)], ""), (["evaluate", "--ckpt", str(broken), "--n", "2"], ""),
             (["train", "--resume", "--out", str(tmp_path / "none")], "no checkpoint at"),
             (["train", "--batch-size", "0"], ""),
             # each of these is caught before anything is loaded, sampled or trained
             (["sample", "--ckpt", str(broken), "--n", "0"], "n must be a positive integer"),
             (["sample", "--ckpt", str(broken), "--out", str(tmp_path / "grid")], "must name a PNG file"),
             (["sample", "--ckpt", str(broken), "--out", str(tmp_path / "grid.jpg")], "must name a PNG file"),
             (["sample", "--ckpt", str(broken), "--device", "mps"], "no float64"),
             (["evaluate", "--ckpt", str(broken), "--n", "1"], "n must be an integer >= 2"),
             (["export", "--ckpt", str(broken), "--out", str(a_file)], "is a file"),
             (["train", "--seed", "-1"], "--seed must be a non-negative integer"),
             (["train", "--train-subset", "60001", "--out", str(tmp_path / "big")],
              "--train-subset 60001 exceeds the 60000 training images"),
             (["train-classifier", "--batch-size", "0", "--out", str(tmp_path / "c.safetensors")],
              "batch_size must be a positive integer"),
             (["train-classifier"], "exists; the scores in results/ were measured with the shipped classifier"),
             (["train-classifier", "--out", str(tmp_path / "classifier")], "must end in .safetensors")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err and message in err, (argv, err)
    assert not (tmp_path / "none").exists() and not (tmp_path / "big").exists()  # a refused run leaves no folder


def test_commands_refuse_options_they_would_ignore_or_misread(capsys):
    ddim_with_sigma = ["--ckpt", "run", "--sampler", "ddim", "--sigma", "beta"]
    for argv, message in ((["toy-ablation", "--quick", "--n", "10"], "not both"),
                          (["sample", *ddim_with_sigma], "DDIM adds none"),
                          (["evaluate", *ddim_with_sigma], "DDIM adds none"),
                          (["learning-curve", "--run", "run", "--sampler", "ddim", "--sigma", "posterior"],
                           "DDIM adds none"),
                          (["toy-ablation", "--seed", "-1"], "non-negative"),
                          (["toy-ablation", "--out", "toy.csv"], "must end in .json"),
                          (["ablation", "--quick", "--n", "4"], "not both")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_toy_ablation_quick_never_replaces_the_report_and_the_default_remakes_it(monkeypatch):
    written = []
    monkeypatch.setattr(toy_ablation, "run_toy_ablation",
                        lambda n, seeds, **kwargs: {"rows": [], "n": n, "seeds": seeds})
    monkeypatch.setattr(toy_ablation, "write_report",
                        lambda result, out: written.append((result["n"], result["seeds"], out)))
    assert cli.main(["toy-ablation", "--quick"]) == 0
    assert cli.main(["toy-ablation"]) == 0
    shipped = toy_ablation.json.loads(toy_ablation.DEFAULT_OUT.read_text())["config"]
    assert written == [(toy_ablation.QUICK_N, 10, RUNS / "toy_ablation_quick.json"),
                       (shipped["n"], shipped["seeds"], RESULTS / "toy_ablation.json")]


def test_train_options_with_fixed_values_list_them(capsys):
    for option, value, listed in (("--precision", "fp16", "'auto', 'fp32', 'bf16'"),
                                  ("--noise-schedule", "quadratic", "'linear', 'cosine'"),
                                  ("--prediction", "x0", "'eps', 'v'"),
                                  ("--loss-weighting", "snr", "'uniform', 'p2'")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["train", option, value])
        assert exit_info.value.code == 2
        assert f"invalid choice: '{value}' (choose from {listed})" in capsys.readouterr().err


PLACEHOLDERS = {"RUN": "runs/x", "FOLDER": "x", "FILE": "x.py"}  # what a reader types for them
DOCUMENTS = ["README.md", "checkpoints/README.md", "results/README.md", *sorted(
    str(path.relative_to(REPO)) for path in (REPO / "book").glob("*.md"))]


def documented_commands():
    """Every ``dgm COMMAND OPTIONS`` the READMEs and chapters show, as (document, argv), with PLACEHOLDERS filled
    in; commands with other placeholders (``NAME``, ``...``) and bare command names in prose are left out."""
    commands = []
    for document in DOCUMENTS:
        text = (REPO / document).read_text().replace("\\\n", " ")  # shell line continuations
        for line in text.splitlines():
            for match in re.finditer(r"(?:^|[`\s])(?:\.venv/bin/)?dgm ([a-z-]+)((?: +[^\s`#|]+)*)", line):
                argv = [PLACEHOLDERS.get(word, word) for word in (match.group(1), *match.group(2).split())]
                unknown = any("..." in word or "$" in word or word.isupper() and word[0] != "-" for word in argv)
                if argv[0] in cli.COMMANDS and len(argv) > 1 and not unknown:
                    commands.append((document, argv))
    return commands


def test_every_documented_command_parses(monkeypatch):
    """A documented flag that a command does not have, or a value its parser refuses, fails here, not for the reader."""
    class Parsed(Exception):
        pass

    parse_args = argparse.ArgumentParser.parse_args

    def parse_only(parser, args=None, namespace=None):
        raise Parsed(parse_args(parser, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    commands = documented_commands()
    assert set(cli.COMMANDS) - {"prepare-data", "toy-ablation"} <= {argv[0] for _, argv in commands}
    assert ["train", "--preset", "gpu", "--T", "500", "--out", "runs/T500"] in [argv for _, argv in commands]
    for document, argv in commands:
        with pytest.raises(Parsed):
            try:
                cli.main(argv)
            except SystemExit:
                pytest.fail(f"{document}: `dgm {' '.join(argv)}` does not parse")


def test_readme_library_snippet_runs(one_thread):
    """The README's "library at a glance" runs as written, and its names hold what its comments say."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The library at a glance"):]
    snippet = section[section.index("```python") + len("```python"):section.index("```\n")]
    names = {}
    exec(compile(snippet, "README.md", "exec"), names)
    torch = names["torch"]
    assert names["schedule"]["beta"].dtype == torch.float64 and len(names["schedule"]["beta"]) == 1000
    assert names["x_t"].shape == names["x0"].shape and torch.isfinite(names["loss"])
    assert names["images"].shape == (16, 1, 28, 28)
    assert names["x1"].shape == names["y0"].shape == (10_000,)
