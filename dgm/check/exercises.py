"""Write the student's notebook (exercises/ps4.ipynb) and plain template (exercises/solution_template.py).

The problem text is read from the handout's ``{exercise}`` directives by label (never its solutions), and each
checkable problem gets its function from ``dgm.check.problems.PROBLEMS`` with a TODO body, and in the notebook a
cell that checks it. Run ``make exercises`` (``python -m dgm.check.exercises``) after editing the exercises;
tests/test_check.py fails while the written files differ from what this renders.
"""

import argparse
import hashlib
import json
import re
import textwrap
from pathlib import Path

import nbformat

from dgm.check.book_sources import exercise, exercises, section_titles
from dgm.check.problems import PROBLEMS
from dgm.files import atomic_write_text, check_writable
from dgm.paths import BOOK, EXERCISES

PROBLEM_SET_LABEL = re.compile(r"ex-\d[a-z]")  # ex-1a ... ex-3c; the handout's other exercises stay in the book
NOTEBOOK, TEMPLATE = "ps4.ipynb", "solution_template.py"
# What must never reach the student's files: solutions, and code pulled in from the library.
FORBIDDEN = ("{solution", "literalinclude", "{code-cell", "{include", "{glue")
ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")
MATH_FENCE = re.compile(r"^(`{3,}|:{3,})\{math\}[^\n]*\n(.*?)^\1\s*$", re.MULTILINE | re.DOTALL)
# The handout's line that points at the terminal check on the notebook; the notebook's check cell below the function,
# and the template's own path, replace it.
TERMINAL_CHECK = re.compile(r"^Check your \w+ with `[^`]*dgm check (\w+) [^`]*`\.$", re.MULTILINE)
PROBLEM_BY_EXERCISE = {problem.exercise: problem for problem in PROBLEMS.values()}
IMPORTS = "import numpy as np\nimport torch"
# The template's last line: `make exercises` replaces the file only while the text above it has this digest.
TEMPLATE_DIGEST_LINE = "\n\n# Written by `make exercises`, which replaces this file only while it is unchanged: {}\n"
TEMPLATE_DIGEST = re.compile(re.escape(TEMPLATE_DIGEST_LINE).replace(r"\{\}", "([0-9a-f]{16})") + r"\Z")
# The checkout's .venv, as `make lab` and `make kernel` register it.
KERNEL = {"name": "dgm", "display_name": "Python (dgm)", "language": "python"}
INTRODUCTION = """\
# Problem set 4: diffusion models

The problems of the handout. Each that asks for a function is followed by it, with a `TODO` body; the others get a
cell to work in. Write your code there and run the cell below it: `check("1a")` runs that problem's checks on your function and names any mistake it
finds, with the formula, the index and the handout section to read. The same checks run in a terminal, on this
notebook or on `exercises/solution_template.py` (the same functions as plain Python):
`.venv/bin/dgm check all exercises/ps4.ipynb`. Run it with the kernel "Python (dgm)", the checkout's `.venv`:
`make lab` opens this notebook in JupyterLab with that kernel, and `make kernel` registers it with a Jupyter of your
own.
"""


def render_role(role, content, titles):
    """A MyST role as plain Markdown: math stays math, a reference becomes the title of what it points at."""
    if role == "math":
        return f"${content}$"
    if role in ("ref", "numref", "doc"):
        text, _, target = content.rpartition(" <")
        if target.endswith(">"):
            return text
        return f"*{titles[content]}* (handout)" if content in titles else f"`{content}`"
    return content


def jupyter_markdown(label, book=BOOK):
    """The exercise's body as Markdown that Jupyter renders, refusing any solution or library code in it."""
    body = exercise(label, book).body
    for marker in FORBIDDEN:
        if marker in body:
            raise ValueError(f"exercise {label} contains {marker!r}: the student's files take the problem text only")
    titles = section_titles(book)
    body = MATH_FENCE.sub(lambda match: f"$$\n{match.group(2).strip()}\n$$", body)
    return ROLE.sub(lambda match: render_role(match.group(1), match.group(2), titles), body)


def declaration(problem):
    """The problem's ``def`` line with its contract as docstring."""
    return f'def {problem.signature}:\n    """{textwrap.indent(problem.contract, "    ").lstrip()}"""\n'


def unsolved(problem):
    """The line of the problem's TODO body that the student's code replaces."""
    return f'raise NotImplementedError("Problem {problem.key}: {problem.function}")'


def stub(problem):
    """The problem's function with its contract as docstring and a TODO body."""
    return f"{declaration(problem)}    # TODO: your code\n    {unsolved(problem)}\n"


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cells_digest(cells):
    """The digest of the notebook's cells as a student edits them: their kinds and sources, not outputs or metadata."""
    return digest(json.dumps([[cell.cell_type, cell.source] for cell in cells]))


def untouched(path):
    """Whether the notebook or template at ``path`` is still as `make exercises` wrote it (outputs a notebook saved
    aside): a file that is not may hold the student's work."""
    text = Path(path).read_text()
    if Path(path).suffix == ".ipynb":
        try:
            notebook = nbformat.reads(text, as_version=4)
        except (ValueError, TypeError, AttributeError, nbformat.ValidationError):  # not a notebook nbformat reads
            return False
        return notebook.metadata.get("dgm", {}).get("cells") == cells_digest(notebook.cells)
    match = TEMPLATE_DIGEST.search(text)
    return bool(match) and digest(text[:match.start()]) == match.group(1)


def problem_set_labels(book=BOOK):
    """The labels of the handout's exercises that are parts of the problem set, in the problem set's order; each
    problem that ``dgm check`` checks must have one."""
    labels = sorted(label for label in exercises(book) if PROBLEM_SET_LABEL.fullmatch(label))
    for label in PROBLEM_BY_EXERCISE:
        if label not in labels:
            exercise(label, book)  # a ValueError that names the labels the handout has
    return labels


def render_notebook(book=BOOK):
    """The student notebook as JSON text, with cell ids derived from the labels so that it renders the same twice."""
    def markdown(source, cell_id):
        return nbformat.v4.new_markdown_cell(source, id=cell_id)

    def code(source, cell_id):
        return nbformat.v4.new_code_cell(source, id=cell_id)

    cells = [markdown(INTRODUCTION.strip(), "introduction"), code(f"{IMPORTS}\n\nfrom dgm.check import check", "setup")]
    for label in problem_set_labels(book):
        text = TERMINAL_CHECK.sub(lambda match: "Write your function in the cell below and run "
                                  f'`check("{match.group(1)}")` in the cell after it.', jupyter_markdown(label, book))
        cells.append(markdown(f"## {exercise(label, book).title}\n\n{text}", label))
        problem = PROBLEM_BY_EXERCISE.get(label)
        if problem:
            cells += [code(stub(problem).rstrip(), f"{label}-solution"), code(f'check("{problem.key}")', f"{label}-check")]
        else:
            cells.append(code("# TODO: your work (no automatic check; `dgm check` on this notebook leaves out the "
                              "cells of this problem)", f"{label}-work"))
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": KERNEL,
        "language_info": {"name": "python"},
        "dgm": {"cells": cells_digest(cells)}})  # `make exercises` replaces the notebook only while this matches
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def comment(text):
    """Text as wrapped ``#`` comment lines, paragraphs kept, and a fenced block (a command) line by line as it is."""
    def commented(paragraph):
        if paragraph.lstrip().startswith("```"):
            return "\n".join(f"# {line}".rstrip() for line in paragraph.strip().splitlines())
        return textwrap.fill(" ".join(paragraph.split()), 116, initial_indent="# ", subsequent_indent="# ")
    return "\n#\n".join(commented(paragraph) for paragraph in text.split("\n\n") if paragraph.strip())


def render_template(book=BOOK):
    """The plain-Python template: every checkable problem's text as a comment above its function."""
    parts = ['"""Problem set 4: your solutions, one function per problem that `dgm check` checks.\n\n'
             "Check them with `.venv/bin/dgm check all exercises/solution_template.py`, or one problem with\n"
             "`.venv/bin/dgm check 1a ...`. "
             "Written by `make exercises` from the handout's exercises;\nexercises/ps4.ipynb holds the same functions "
             'in a notebook.\n"""\n\n' + IMPORTS + "\n"]
    for label in problem_set_labels(book):
        problem = PROBLEM_BY_EXERCISE.get(label)
        if problem:
            title = exercise(label, book).title
            text = TERMINAL_CHECK.sub(lambda match: f"Check it with `.venv/bin/dgm check {match.group(1)} "
                                      f"exercises/{TEMPLATE}`.", jupyter_markdown(label, book))
            parts.append(f"\n\n{comment(title)}\n#\n{comment(text)}\n{stub(problem)}")
    body = "".join(parts)
    return f"{body}{TEMPLATE_DIGEST_LINE.format(digest(body))}"


def write(out=EXERCISES, book=BOOK, overwrite=False):
    """Write both files into ``out`` and return their paths; a file that has changed since it was written, which may
    hold the student's work, is replaced only with ``overwrite``."""
    out = Path(out)
    paths = [out / NOTEBOOK, out / TEMPLATE]
    check_writable(out, folder=True)
    for path in paths:
        check_writable(path)
    texts = render_notebook(book), render_template(book)
    for path in paths:
        if path.is_file() and not overwrite and not untouched(path):
            raise ValueError(f"{path} has changed since `make exercises` wrote it and may hold your work: copy it "
                             "elsewhere first, or replace it with `.venv/bin/python -m dgm.check.exercises --overwrite`")
    out.mkdir(parents=True, exist_ok=True)
    for path, text in zip(paths, texts):
        atomic_write_text(path, text)  # a full disk leaves the old file, not a truncated one that looks edited
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dgm.check.exercises", description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", type=Path, default=BOOK, help=f"the handout's sources (default {BOOK})")
    parser.add_argument("--out", type=Path, default=EXERCISES, help=f"where to write them (default {EXERCISES})")
    parser.add_argument("--overwrite", action="store_true", help="replace them even where they hold your solutions")
    args = parser.parse_args(argv)
    try:
        paths = write(args.out, args.book, args.overwrite)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: {error}\n")
    print("wrote " + " and ".join(map(str, paths)))


if __name__ == "__main__":
    main()
