"""File helpers: atomic writes, SHA-256 digests, reading reports, their timestamps, and checking output paths before
any work.

A file written here is either the old one or the complete new one, never half of it: a run or a download killed
at any moment leaves nothing that later passes for data or for a checkpoint.
"""

import csv
import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path


def timestamp():
    """Now, as reports and checkpoints record it: ISO 8601 with the UTC offset, alike on every locale."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o644)  # mkstemp makes the file private; these files are for everyone to read
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sha256_file(path):
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path, text):
    """``atomic_write_bytes`` of UTF-8 text: a report is either the old one or the complete new one."""
    atomic_write_bytes(path, text.encode())


def atomic_write_csv(path, rows):
    """``rows`` (dicts with the first row's keys) as a CSV table with a header, written atomically."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, table.getvalue())


def read_report(path, kind, keys=("rows",)):
    """A JSON report holding ``keys`` (``kind`` names it in errors), its ``rows`` a list if it has them; a truncated
    or foreign file is a ValueError that says how to go on."""
    try:
        report = json.loads(Path(path).read_text())
    except (ValueError, OSError) as error:
        raise ValueError(f"{path} is not a readable report ({error}): pass another --out") from None
    if not is_report(report, keys):
        raise ValueError(f"{path} is not {kind}: pass another --out")
    return report


def is_report(report, keys):
    """Whether ``report`` (parsed JSON) is a dict holding ``keys``, with a list of rows if ``rows`` is among them."""
    return isinstance(report, dict) and set(keys) <= report.keys() and isinstance(report.get("rows", []), list)


def changed_values(before, after):
    """"key old -> new" for each key of ``after`` whose value ``before`` does not hold: what a command would measure
    differently from the report it replaces, for its refusal to say."""
    return [f"{key} {before.get(key)} -> {value}" for key, value in after.items() if before.get(key) != value]


def check_replaceable(path, kind, keys, option="--out", table=False):
    """Refuse, before any work, an existing ``path`` that is not a JSON report of ``kind`` (a dict holding ``keys``),
    and with ``table`` an existing CSV beside it unless ``path`` is such a report: a command replaces only its own
    kind of report, never a checkpoint, a loss log or another command's report."""
    path = Path(path)
    if path.is_file():
        try:
            report = json.loads(path.read_text())
        except (ValueError, OSError):
            report = None
        if not is_report(report, keys):
            raise ValueError(f"{option} {path} exists and is not {kind}, which this command would replace: pass "
                             f"another {option}")
    beside = path.with_suffix(".csv")
    if table and beside.exists() and not path.is_file():
        raise ValueError(f"{option} {path}: {beside} exists and is not the table of {kind} (it has no report "
                         f"beside it), which this command would replace: pass another {option}")


def remove_temporaries(folder):
    """Delete the temporary files that ``atomic_write_bytes`` leaves in ``folder`` when its process is killed."""
    for temporary in Path(folder).glob(".*.tmp"):
        if temporary.is_file():
            temporary.unlink(missing_ok=True)


def check_writable(path, folder=False, option="--out"):
    """Refuse, before any work, an output path that cannot be written: a file where a folder is wanted or the other
    way round, a path under a file, or a folder that refuses new files. Creates nothing."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise ValueError(f"{option} {path} is {kind}; it must name {'a folder' if folder else 'a file'}")
    parent = path if folder and path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path} lies under {parent}, which is a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{option} {path} is not writable")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise ValueError(f"{option} {path}: cannot write in {parent} ({error.strerror or error})") from None
