"""`make chapter NAME=...` (README, "The handout"; book/run_chapter.py): one chapter re-run on its own, outside the book
build, into a notebook that Jupyter re-runs from its own folder; a failing or slow cell leaves the others' outputs, and
a notebook the reader changed is never replaced."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "book"))
import run_chapter  # noqa: E402


def small_chapter(folder, *cells):
    folder.mkdir()
    (folder / "claims.md").write_text("\n\n".join(f"```{{code-cell}} ipython3\n{cell}\n```" for cell in cells) + "\n")


def test_a_chapter_runs_into_a_notebook_that_reruns_from_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(run_chapter, "OUT", tmp_path)
    assert run_chapter.main(["book/respacing.md"]) == 0
    path = tmp_path / "respacing.ipynb"
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert any("import handout" in cell.source for cell in code)
    assert all(cell.execution_count for cell in code) and any(cell.outputs for cell in code)
    assert notebook.metadata["kernelspec"]["name"] == "dgm"  # .venv's kernel, which `make lab` registers
    # As Jupyter opens it, the kernel starting in the notebook's own folder (.venv's own kernel: tests register none).
    NotebookClient(notebook, timeout=run_chapter.TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert not run_chapter.errors(notebook)


def test_a_failing_or_slow_cell_is_reported_and_the_later_cells_still_run(tmp_path, monkeypatch, capsys):
    small_chapter(tmp_path / "book", "x = 1", 'assert x == 2, "the text: x is 2"', "import time\ntime.sleep(60)",
                  "print(x + 41)")
    monkeypatch.setattr(run_chapter, "BOOK", tmp_path / "book")
    monkeypatch.setattr(run_chapter, "OUT", tmp_path / "chapters")
    monkeypatch.setattr(run_chapter, "TIMEOUT", 5)
    assert run_chapter.main(["claims"]) == 1
    err = capsys.readouterr().err
    assert "cell [3]: AssertionError: the text: x is 2" in err and "cell [4]: ran over 5 s and was interrupted" in err
    notebook = nbformat.read(tmp_path / "chapters" / "claims.ipynb", as_version=4)
    assert notebook.cells[-1].outputs[0]["text"] == "42\n"


def test_a_notebook_the_reader_changed_is_not_replaced(tmp_path, monkeypatch):
    small_chapter(tmp_path / "book", "x = 1")
    monkeypatch.setattr(run_chapter, "BOOK", tmp_path / "book")
    monkeypatch.setattr(run_chapter, "OUT", tmp_path / "chapters")
    assert run_chapter.main(["claims"]) == 0
    path = tmp_path / "chapters" / "claims.ipynb"
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[-1].outputs = []  # run again in Jupyter: outputs change, the cells do not
    nbformat.write(notebook, path)
    assert run_chapter.main(["claims"]) == 0
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[-1].source = "x = 2  # the reader's change"
    nbformat.write(notebook, path)
    with pytest.raises(SystemExit, match="holds changes of yours"):
        run_chapter.main(["claims"])
    assert nbformat.read(path, as_version=4).cells[-1].source == "x = 2  # the reader's change"


def test_a_notebook_changed_while_the_chapter_runs_is_kept(tmp_path, monkeypatch, capsys):
    small_chapter(tmp_path / "book", "x = 1")
    monkeypatch.setattr(run_chapter, "BOOK", tmp_path / "book")
    monkeypatch.setattr(run_chapter, "OUT", tmp_path / "chapters")
    assert run_chapter.main(["claims"]) == 0
    path, real_execute = tmp_path / "chapters" / "claims.ipynb", run_chapter.execute

    def edited_meanwhile(notebook, name):  # the reader edits the last run's notebook in Jupyter meanwhile
        real_execute(notebook, name)
        mine = nbformat.read(path, as_version=4)
        mine.cells[-1].source = "x = 3  # the reader's change"
        nbformat.write(mine, path)

    monkeypatch.setattr(run_chapter, "execute", edited_meanwhile)
    assert run_chapter.main(["claims"]) == 0
    assert nbformat.read(path, as_version=4).cells[-1].source == "x = 3  # the reader's change"
    rerun = tmp_path / "chapters" / "claims.rerun-1.ipynb"
    assert f"this run goes to {rerun}" in capsys.readouterr().err
    assert nbformat.read(rerun, as_version=4).cells[-1].source == "x = 1"


def test_make_clean_keeps_the_chapter_notebooks(tmp_path):
    (tmp_path / "_build" / "chapters").mkdir(parents=True)
    (tmp_path / "_build" / "html").mkdir()
    (tmp_path / "_build" / ".jupyter_cache").mkdir()
    (tmp_path / "_build" / "chapters" / "respacing.ipynb").write_text("{}")  # the reader's changes
    subprocess.run(["make", "-f", str(REPO / "Makefile"), "clean"], cwd=tmp_path, check=True, capture_output=True)
    assert [path.name for path in (tmp_path / "_build").iterdir()] == ["chapters"]
    assert (tmp_path / "_build" / "chapters" / "respacing.ipynb").read_text() == "{}"
    subprocess.run(["make", "-f", str(REPO / "Makefile"), "clean"], cwd=tmp_path / "_build" / "chapters", check=True,
                   capture_output=True)  # where there is no _build, nothing to do


def test_make_chapter_with_an_unknown_name_lists_the_chapters():
    done = subprocess.run(["make", "chapter", "NAME=no_such_chapter"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode != 0 and "respacing" in done.stderr and "continuous_time" in done.stderr
