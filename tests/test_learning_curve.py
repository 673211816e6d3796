"""The learning curve (dgm.learning_curve): one row per kept snapshot, in order, resumable, clear errors."""

import json

import pytest

from dgm import cli, evaluate, learning_curve
from dgm.classifier import load_classifier
from dgm.checkpoint import load_checkpoint
from dgm.config import TrainConfig
from dgm.export import export_run
from dgm.runs import CHECKPOINT_FORMAT, run_folder_checkpoint, snapshot_folder, training_seconds
from dgm.train import train


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory):
    """A tiny run of 4 steps that kept its EMA weights at steps 2 and 4."""
    out = tmp_path_factory.mktemp("runs") / "run"
    config = TrainConfig(T=20, channels=(4, 8, 8), batch_size=16, train_subset=64, steps=4, warmup_steps=1,
                         checkpoint_every=2, keep_every=2, sample_every=100, sample_n=4, sample_steps=2,
                         device="cpu", out=str(out))
    return train(config, progress=False)


def test_curve_scores_every_snapshot_and_resumes(kept_run, tmp_path, capsys, monkeypatch, one_thread):
    out = tmp_path / "curve.json"
    argv = ["learning-curve", "--run", str(kept_run), "--steps", "5", "--n", "8", "--out", str(out)]
    real_sample_run, drawn = learning_curve.sample_run, []  # each snapshot's images, in the order of the rows
    monkeypatch.setattr(learning_curve, "sample_run", lambda *args, **kwargs: drawn.append(
        real_sample_run(*args, **kwargs)[0]) or (drawn[-1], 1e-3))
    assert cli.main(argv) == 0
    assert str(out) in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["setting"] == {"steps": 5, "sampler": "ancestral", "sigma": "posterior", "n": 8, "seed": 0}
    assert [row["step"] for row in report["rows"]] == [2, 4]
    _, metadata = load_checkpoint(run_folder_checkpoint(kept_run), CHECKPOINT_FORMAT)
    assert report["hardware"] == metadata["hardware"] and "threads" in report["hardware"]
    assert [row["images_seen"] for row in report["rows"]] == [32, 64]
    minutes = [row["training_minutes"] for row in report["rows"]]
    assert minutes == pytest.approx([training_seconds(kept_run, 16, until_step=s) / 60 for s in (2, 4)])
    assert 0 < minutes[0] < minutes[1]
    classifier = load_classifier()
    reference = evaluate.reference_statistics(classifier)
    assert len(drawn) == len(report["rows"])
    for row, images in zip(report["rows"], drawn):
        expected = evaluate.score_images(images, classifier, reference)  # the row scores its snapshot's images
        assert {key: row[key] for key in expected} == pytest.approx(expected) and row["seconds_per_sample"] == 1e-3

    # A snapshot kept later is the only one sampled on the next run; a new setting samples everything again.
    sampled = []
    monkeypatch.setattr(learning_curve, "sample_run",
                        lambda *args, **kwargs: sampled.append(args[0]) or real_sample_run(*args, **kwargs))
    snapshot_folder(kept_run, 2).rename(snapshot_folder(kept_run, 6))
    try:
        assert cli.main(argv) == 0
    finally:
        snapshot_folder(kept_run, 6).rename(snapshot_folder(kept_run, 2))
    again = json.loads(out.read_text())
    assert sampled == [snapshot_folder(kept_run, 6)] and [row["step"] for row in again["rows"]] == [4, 6]
    assert again["rows"][0] == report["rows"][1]
    reseeded = [*argv[:-2], "--seed", "1", "--out", str(out)]
    with pytest.raises(SystemExit) as refused:  # another setting would replace every row: only on request
        cli.main(reseeded)
    assert refused.value.code == 2 and "another run or setting (seed 0 -> 1)" in capsys.readouterr().err
    assert json.loads(out.read_text()) == again and len(sampled) == 1
    reseeded.append("--replace")
    recording = learning_curve.sample_run  # Ctrl-C as the replacing curve's second snapshot is sampled
    monkeypatch.setattr(learning_curve, "sample_run", lambda *args, **kwargs: recording(*args, **kwargs) if len(
        sampled) < 2 else (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli.main(reseeded) == 130
    assert json.loads(out.read_text()) == again  # the curve it replaces stays whole until the new one ends
    monkeypatch.setattr(learning_curve, "sample_run", recording)
    sampled.pop()
    assert cli.main(reseeded) == 0
    assert len(sampled) == 3
    # A row whose snapshot was saved again (the run trained anew into the same folder) is scored again.
    stale = json.loads(out.read_text())
    stale["rows"][1]["saved_at"] = "an earlier run"
    out.write_text(json.dumps(stale))
    assert cli.main(reseeded) == 0
    assert sampled[3:] == [snapshot_folder(kept_run, 4)]
    # A stop right after the first of them is scored again keeps the rows after it.
    stale = json.loads(out.read_text())
    stale["rows"][0]["saved_at"] = "an earlier run"
    out.write_text(json.dumps(stale))
    real_write = learning_curve.atomic_write_text

    def write_then_stop(path, text):
        real_write(path, text)
        raise KeyboardInterrupt

    monkeypatch.setattr(learning_curve, "atomic_write_text", write_then_stop)
    assert cli.main(reseeded) == 130
    assert [row["step"] for row in json.loads(out.read_text())["rows"]] == [2, 4]


def test_a_run_without_snapshots_exits_with_a_message(tmp_path, capsys, one_thread):
    run = train(TrainConfig(T=20, channels=(4, 8, 8), batch_size=16, train_subset=64, steps=1, warmup_steps=1,
                            sample_every=100, sample_n=4, sample_steps=2, device="cpu", out=str(tmp_path / "run")),
                progress=False)
    export_run(run, tmp_path / "export")
    for argv, message in ((["learning-curve", "--run", str(run)], "kept no snapshots"),
                          (["learning-curve", "--run", str(tmp_path / "export")], "is an export, which keeps no"),
                          (["learning-curve", "--run", str(run), "--n", "1"], "n must be an integer >= 2"),
                          (["learning-curve", "--run", str(tmp_path / "none")], "no run folder")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, err


def test_training_seconds_sums_the_rows_up_to_and_including_a_step(tmp_path):
    (tmp_path / "loss.csv").write_text("step,epoch,loss,lr,images_per_s\n1,0,0.5,1e-3,16\n2,0,0.4,1e-3,8\n"
                                       "3,0,0.3,1e-3,4\n")
    assert training_seconds(tmp_path, 16, until_step=2) == pytest.approx(1 + 2)
    assert training_seconds(tmp_path, 16) == pytest.approx(1 + 2 + 4)
    assert training_seconds(tmp_path / "missing", 16) is None


def test_a_curve_of_another_run_is_replaced_only_on_request(kept_run):
    setting = learning_curve.curve_setting(5, "ancestral", "posterior", 8, 0)
    other = {"run": "another_run", "setting": setting, "rows": []}
    with pytest.raises(ValueError, match=f"another run or setting \\(run another_run -> {kept_run.name}\\)"):
        learning_curve.learning_curve(kept_run, 5, n=8, previous=other, replace=False)
