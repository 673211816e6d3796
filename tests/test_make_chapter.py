"""`make chapter NAME=...` (README, "The handout"): one chapter re-run on its own, outside the book build, into a
notebook that Jupyter re-runs from its own folder; a failing cell leaves the others' outputs (book/run_chapter.py)."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "book"))
import run_chapter  # noqa: E402


def test_make_chapter_writes_a_notebook_that_reruns_from_its_own_folder():
    done = subprocess.run(["make", "chapter", "NAME=book/respacing.md"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    path = REPO / "_build" / "chapters" / "respacing.ipynb"
    notebook = json.loads(path.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert any("import handout" in "".join(cell["source"]) for cell in code)
    assert all(cell["execution_count"] for cell in code) and any(cell["outputs"] for cell in code)
    assert notebook["metadata"]["kernelspec"]["name"] == "dgm"  # .venv's kernel, which `make lab` registers
    again = nbformat.read(path, as_version=4)  # as Jupyter opens it: the kernel starts in _build/chapters/
    NotebookClient(again, timeout=600, kernel_name="python3",  # .venv's own kernel: `make test` registers none
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    assert not run_chapter.errors(again)


def test_a_failing_cell_is_reported_and_the_later_cells_still_run(tmp_path, monkeypatch, capsys):
    book, out = tmp_path / "book", tmp_path / "chapters"
    book.mkdir()
    (book / "claims.md").write_text("```{code-cell} ipython3\nx = 1\n```\n\n"
                                    "```{code-cell} ipython3\nassert x == 2, \"the text: x is 2\"\n```\n\n"
                                    "```{code-cell} ipython3\nprint(x + 41)\n```\n")
    monkeypatch.setattr(run_chapter, "BOOK", book)
    monkeypatch.setattr(run_chapter, "OUT", out)
    assert run_chapter.main(["claims"]) == 1
    assert "AssertionError: the text: x is 2" in capsys.readouterr().err
    notebook = nbformat.read(out / "claims.ipynb", as_version=4)
    assert notebook.cells[-1].outputs[0]["text"] == "42\n"


def test_an_unknown_chapter_lists_the_chapters(capsys):
    with pytest.raises(SystemExit) as stop:
        run_chapter.main(["no_such_chapter"])
    assert "respacing" in str(stop.value) and "continuous_time" in str(stop.value)
