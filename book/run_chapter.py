"""``make chapter NAME=...``: one chapter run on its own into _build/chapters/NAME.ipynb, a notebook to change and
re-run in Jupyter (book/NAME.md stays the source). Every cell runs even when one fails or runs over its time, so that a
changed parameter that breaks a check of the text's claims still leaves the rest of the chapter's figures and numbers;
the notebook replaces the previous one only once it has run, and never one that you have changed."""

import itertools
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from tqdm import tqdm

from dgm.check.exercises import KERNEL, cells_digest, untouched
from dgm.files import atomic_write_text
from dgm.paths import FIGURES

BOOK = Path(__file__).resolve().parent
OUT = BOOK.parent / "_build" / "chapters"
# Seconds a cell may run, as in `make book`.
TIMEOUT = yaml.safe_load((BOOK.parent / "_config.yml").read_text())["execute"]["timeout"]


def chapter_source(name):
    """book/NAME.md for NAME given as "respacing", "respacing.md" or "book/respacing.md"."""
    source = BOOK / f"{Path(name).stem}.md"
    if not name or not source.is_file():
        chapters = ", ".join(sorted(path.stem for path in BOOK.glob("*.md")))
        sys.exit(f"usage: make chapter NAME=<chapter>, one of: {chapters}")
    return source


def runnable_anywhere(notebook):
    """The notebook with a first cell that moves the kernel to book/, where the book runs its chapters: Jupyter
    opening the copy in _build/chapters/ still imports book/handout.py and finds the chapter's files."""
    setup = nbformat.v4.new_code_cell(
        "# Run from book/, as the handout is built: `import handout` and the chapter's relative paths work.\n"
        f"import os, sys\nos.chdir({str(BOOK)!r})\nsys.path.insert(0, {str(BOOK)!r})",
        metadata={"tags": ["remove-cell"]})
    notebook.cells.insert(0, setup)
    return notebook


def errors(notebook):
    """(execution count, "Name: first line of the message") of every cell whose run raised or ran over TIMEOUT (which
    interrupts the kernel: a KeyboardInterrupt)."""
    def message(output):
        if output.ename == "KeyboardInterrupt":
            return f"ran over {TIMEOUT} s and was interrupted"
        return f"{output.ename}: {(output.evalue.splitlines() or [''])[0]}"
    return [(cell.execution_count, message(output)) for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", []) if output.output_type == "error"]


def execute(notebook, name):
    """Run every cell of ``notebook`` in place from book/, going on past errors and cells over TIMEOUT; a kernel that
    dies leaves the cells run before it."""
    cells = sum(cell.cell_type == "code" for cell in notebook.cells)
    with tqdm(total=cells, desc=name, unit="cell") as progress:
        client = NotebookClient(notebook, timeout=TIMEOUT, allow_errors=True, interrupt_on_timeout=True,
                                resources={"metadata": {"path": str(BOOK)}},
                                on_cell_executed=lambda **_: progress.update())
        try:
            client.execute()
        except DeadKernelError as error:
            print(f"the kernel died ({error}); the notebook keeps the cells run before", file=sys.stderr)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    source = chapter_source(argv[0] if argv else "")
    target = OUT / f"{source.stem}.ipynb"
    if target.exists() and not untouched(target):
        sys.exit(f"{target} holds changes of yours: move it elsewhere (or delete it) and run again")
    notebook = runnable_anywhere(jupytext.read(source))
    execute(notebook, source.stem)
    notebook.metadata["kernelspec"] = KERNEL  # the kernel `make lab` and `make kernel` register, as ps4.ipynb's
    notebook.metadata["dgm"] = {"cells": cells_digest(notebook.cells)}  # how it is told from an edited copy
    OUT.mkdir(parents=True, exist_ok=True)
    if target.exists() and not untouched(target):  # changed in Jupyter while the chapter ran: left as it is
        edited = target
        target = next(path for path in (OUT / f"{source.stem}.rerun-{k}.ipynb" for k in itertools.count(1))
                      if not path.exists() or untouched(path))
        print(f"{edited} changed while the chapter ran and stays as you left it; this run goes to {target}",
              file=sys.stderr)
    atomic_write_text(target, nbformat.writes(notebook))
    failed = errors(notebook)
    for count, error in failed:
        print(f"cell [{count}]: {error}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} cell(s) failed; {target} holds every cell's output, theirs with the error. A failed "
              "check whose message begins \"the text:\" means that the chapter's prose no longer describes what "
              "your change computed.", file=sys.stderr)
        return 1
    print(f"Executed: {target} (figures under {FIGURES})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
