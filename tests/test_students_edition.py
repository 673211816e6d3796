"""`make book-for-students`: the handout without the exercises' solutions, everything else as in the full edition.

Needs that build; skipped without it, except in CI (CI=true), where .ci/run makes it and its absence is a failure.
"""

import os
import re
from pathlib import Path

import pytest

from dgm.check.problems import PROBLEMS

REPO = Path(__file__).resolve().parents[1]
FULL, STUDENTS = REPO / "_build" / "html", REPO / "_build" / "students" / "_build" / "html"
EXERCISES = ["1a", "1b", "1c", "1d", "2a", "2b", "3a", "3b", "3c"]  # the problem set's questions: ex-<name>

if not (STUDENTS / "index.html").exists() and os.environ.get("CI") == "true":
    raise RuntimeError("CI must build the students' edition (make book-for-students): see .ci/run")
pytestmark = pytest.mark.skipif(not (STUDENTS / "index.html").exists() or not (FULL / "index.html").exists(),
                                reason="needs make book-for-students")


def pages(folder):
    return {path.name: path.read_text() for path in folder.glob("*.html") if path.name not in ("search.html",
                                                                                               "genindex.html")}


def test_every_exercise_and_contract_is_there_and_no_solution():
    students, full = pages(STUDENTS), pages(FULL)
    assert students.keys() == full.keys()
    text = "\n".join(students.values())
    assert all(f'id="ex-{name}"' in text for name in EXERCISES)
    for problem in PROBLEMS.values():  # the function each exercise asks for, with its contract
        assert f'"k">def</span><span class="w"> </span><span class="nf">{problem.function}</span>' in text, problem.key
    assert 'class="solution' in "\n".join(full.values()) and not re.search(r'class="[^"]*\bsolution\b', text)


def test_the_chapters_sources_are_neither_copied_nor_linked():
    """The sources hold the solutions; the full edition offers them for download, the students' edition does not."""
    assert "_sources/" in pages(FULL)["reverse_process.html"]
    assert not (STUDENTS / "_sources").exists() and not any("_sources/" in page for page in pages(STUDENTS).values())


def test_figures_are_numbered_as_in_the_full_edition():
    """Figures sit outside the solutions, so an instructor can cite a figure's number from either edition."""
    def numbers(folder):
        found = (re.findall(r'caption-number">Fig\. (\d+)', page) for page in pages(folder).values())
        return sorted(int(number) for numbers_on_page in found for number in numbers_on_page)

    assert numbers(STUDENTS) == numbers(FULL) == list(range(1, len(numbers(FULL)) + 1))
