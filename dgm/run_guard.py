"""Runs that nobody loses by accident: one ``dgm train`` per run folder (``run_lock``), and ``--overwrite`` that keeps
the old run until the new one has saved its first checkpoint (``replacing_run``), finishing the job after a kill
(``recover_set_aside``). The folder layout, with the hidden stage folders, is dgm.runs'.
"""

import fcntl
import os
import shutil
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from dgm.checkpoint import CheckpointError
from dgm.files import check_writable
from dgm.runs import PUTTING_BACK, SET_ASIDE, SETTING_ASIDE, replacement_pending, run_files, run_kind

LOCK = ".dgm-train.lock"  # RUN/.dgm-train.lock: held (flock) by the dgm train writing the run, with its process id


@contextmanager
def run_lock(out):
    """Hold ``out`` for one ``dgm train`` at a time: a second one writing the same run would mix two runs'
    checkpoints and loss logs. The lock is the operating system's (``flock``), so it ends with its process however
    that ends, and a kill leaves nothing to take over. The run folder, if the lock created it and it holds nothing
    when the lock is released (the run stopped before it wrote), is removed."""
    out = Path(out)
    created = not out.exists()
    handle = take_lock(out)
    try:
        os.ftruncate(handle, 0)
        os.write(handle, str(os.getpid()).encode())
        yield
    finally:
        (out / LOCK).unlink(missing_ok=True)  # before the lock ends, so that no one takes a lock file being removed
        os.close(handle)
        if created:
            with suppress(OSError):  # not empty, or already gone: another dgm train has it now
                out.rmdir()


def take_lock(out):
    """Open and lock ``out``'s lock file, creating it and the folder as needed; refuse ``out`` while another
    ``dgm train`` holds it. Returns the open file descriptor, which holds the lock until it is closed."""
    lock = out / LOCK
    while True:
        out.mkdir(parents=True, exist_ok=True)
        try:
            handle = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        except FileNotFoundError:  # another dgm train removed the empty folder as it ended: make it again
            continue
        except OSError as error:  # a lock file of another user's, say
            raise ValueError(f"--out {out}: cannot open its lock file {lock} ({error.strerror}): choose another "
                             "--out") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            owner = ""
            with suppress(OSError):  # its process id, written just after it took the lock
                owner = lock.read_text().strip()
            process = f" (process {owner})" if owner.isdigit() else ""
            raise ValueError(f"--out {out} is being written by another dgm train{process}: wait for it to end, or "
                             "choose another --out") from None
        except OSError as error:  # a file system without locks
            os.close(handle)
            raise ValueError(f"--out {out}: cannot lock {lock} ({error.strerror}); its file system does not keep "
                             "locks: choose an --out on a local disk") from None
        with suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(handle), os.stat(lock)):
                return handle
        os.close(handle)  # its holder removed this lock file as it ended, and another may hold a new one: look again


def check_new_run(out, overwrite=False):
    """Whether a new run in ``out`` must first replace an old one (``replacing_run``), changing nothing itself: an
    empty or new folder needs nothing, a training run is replaced only with ``overwrite``, and an export or a folder
    that holds no run is refused."""
    out = Path(out)
    check_writable(out, folder=True)
    if not out.is_dir() or not any(path.name != LOCK for path in out.iterdir()):
        return False
    held = run_kind(out)
    if held == "export":
        raise ValueError(f"--out {out} holds an export (made by `dgm export` for sampling), which a training run "
                         "never replaces: choose a new --out")
    if held is None:
        raise ValueError(f"--out {out} is not empty and holds no training run: choose a new --out")
    if not overwrite:
        resumable = "continue its run with --resume, " if held == "run" else ""
        raise ValueError(f"--out {out} holds a run: {resumable}pass --overwrite to delete it and start over, or "
                         "choose a new --out")
    return True


def clear_run(out):
    """Delete the run in ``out``: its checkpoint, loss log, samples, snapshots, the reports scored on it and
    temporary files; other files stay."""
    for path in run_files(out):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def wait_for_recovery(out, seconds=600):
    """For every process of a run but the first: wait while the first one finishes a cut ``--overwrite``
    (``recover_set_aside``), so that none reads the run folder half moved."""
    deadline = time.monotonic() + seconds
    while replacement_pending(out):
        if time.monotonic() > deadline:
            raise CheckpointError(f"{out} still holds a run set aside by `dgm train --overwrite` after {seconds} s")
        time.sleep(0.1)


def move_back(out, *stages):
    """Move the old run's files into ``out`` from the first of the ``stages`` folders there that exists, and remove
    that folder; False if none exists."""
    folder = next((Path(out) / stage for stage in stages if (Path(out) / stage).is_dir()), None)
    if folder is None:
        return False
    for path in folder.iterdir():
        path.rename(Path(out) / path.name)
    folder.rmdir()
    return True


def put_back(out):
    """Replace what the new run wrote in ``out`` with the old run set aside in it."""
    out = Path(out)
    clear_run(out)
    (out / SET_ASIDE).rename(out / PUTTING_BACK)
    move_back(out, PUTTING_BACK)


def recover_set_aside(out):
    """Finish an ``--overwrite`` that a kill cut short: the new run stays if it saved a checkpoint, else the old run
    comes back. Returns what was done, or None. Call it holding ``run_lock(out)``."""
    out = Path(out)
    if not move_back(out, SETTING_ASIDE, PUTTING_BACK):  # a kill cut a move short: it is finished above
        if not (out / SET_ASIDE).is_dir():
            return None
        if run_kind(out) == "run":
            shutil.rmtree(out / SET_ASIDE)
            return f"deleted the run that the run in {out} replaced, which a kill had left in {out / SET_ASIDE}"
        put_back(out)
    return f"put back the run in {out} that an `--overwrite` killed before its first checkpoint had set aside"


@contextmanager
def replacing_run(out, replace=True):
    """Set the run in ``out`` aside while a new run starts there, yielding the function that drops it at the new run's
    first checkpoint; a stop before that puts it back, so that ``--overwrite`` never leaves neither run."""
    if not replace:
        yield lambda: None
        return
    out = Path(out)
    (out / SETTING_ASIDE).mkdir()
    try:
        for path in run_files(out):
            path.rename(out / SETTING_ASIDE / path.name)
        (out / SETTING_ASIDE).rename(out / SET_ASIDE)
    except BaseException:  # before or after the folder's rename: no file of the new run exists yet
        move_back(out, SETTING_ASIDE, SET_ASIDE)
        raise

    def drop():
        shutil.rmtree(out / SET_ASIDE, ignore_errors=True)

    try:
        yield drop
    except BaseException:
        if run_kind(out) == "run":  # the new run saved a checkpoint, whatever stopped it: it stays
            drop()
        elif (out / SET_ASIDE).is_dir():
            put_back(out)
        raise
