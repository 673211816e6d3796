"""`make chapter NAME=...` (README, "The handout"): one chapter re-run on its own, outside the book build, with the
chapter's imports of book/handout.py resolved through the PYTHONPATH that `make chapter` sets."""

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_make_chapter_reruns_a_chapter_that_imports_the_handout_helpers():
    done = subprocess.run(["make", "chapter", "NAME=respacing"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    notebook = json.loads((REPO / "_build" / "chapters" / "respacing.ipynb").read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert any("import handout" in "".join(cell["source"]) for cell in code)
    assert all(cell["execution_count"] for cell in code) and any(cell["outputs"] for cell in code)
