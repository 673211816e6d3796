"""``dgm check PROBLEM FILE``: run a problem's checks on the student's functions and print a verdict per check.

Exit status 0 when every check passes, 1 when a mistake is found (or a problem is not implemented yet, or the
student's code raises), 2 for a usage error: a missing file or function, or a signature the contract cannot call.
"""

import argparse
import inspect
import linecache
import re
import sys
import textwrap
import types
from pathlib import Path

import nbformat
import numpy as np
import torch

from dgm.check.book_sources import exercises, section_title
from dgm.check.problems import PROBLEMS, find_function, run_problem
from dgm.check.verdicts import StudentError, UsageError, student_traceback

WIDTH = 110
STATUS_WIDTH = len("not implemented")


LOADING = {"file": None}  # the student's file while load_solutions runs it: its own check() calls do nothing then


def load_solutions(path):
    """The globals of the student's Python file or notebook, run as a module (its check("KEY") calls do nothing, and a
    notebook's magics, shell lines and work for the problems without a check are left out). Its folder goes first on
    the import path and stays there, so that imports inside their functions find files beside it."""
    path = Path(path)
    what = "a folder" if path.is_dir() else "neither a Python file nor a notebook"
    if path.is_dir() or (path.exists() and path.suffix not in (".py", ".ipynb")):
        raise UsageError(f"{path} is {what}: give the file that defines your functions "
                         "(such as exercises/solution_template.py or exercises/ps4.ipynb)")
    if not path.is_file():
        raise UsageError(f"no file {path}")
    sources = module_sources(path)  # an unreadable notebook is a usage error, not the student's code's
    if str(path.resolve().parent) not in sys.path:
        sys.path.insert(0, str(path.resolve().parent))
    module = types.ModuleType(f"dgm_check_solution_{path.stem}")
    module.__file__ = str(path)
    vars(module)["display"] = jupyter_display  # Jupyter's built-ins, which a notebook's cells may call
    vars(module)["get_ipython"] = NoJupyter
    LOADING["file"] = path
    try:
        for filename, source in sources:
            linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
            exec(compile(source, filename, "exec"), vars(module))
    except Exception as error:  # their file's error, shown with their traceback
        raise StudentError(student_traceback(error)) from None
    except SystemExit as stop:  # exit() would end the check before any verdict, as if all passed
        raise StudentError(f"it called exit({stop.code if stop.code is not None else ''}) at the top level: remove "
                           "the call, or put it under `if __name__ == \"__main__\":`") from None
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # their own class derived from BaseException, not Exception
        raise StudentError(student_traceback(error)) from None
    finally:
        LOADING["file"] = None
    return vars(module)


def module_sources(path):
    """(file name for tracebacks, source) of a Python file, or of each code cell of a notebook ("ps4.ipynb, cell 5"),
    without what the check must not run: what only Jupyter runs (``without_magics``), and a notebook's cells under a
    problem that has no check (``checked_cells``)."""
    if path.suffix == ".py":
        try:
            return [(str(path), path.read_text(encoding="utf-8"))]
        except UnicodeDecodeError as error:
            raise UsageError(f"{path} is not UTF-8 text ({error}): save it as UTF-8") from None
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as error:  # nbformat raises several kinds for a file that is not a notebook
        raise UsageError(f"{path} is not a readable notebook ({type(error).__name__}: {error})") from None
    cells, skipped = checked_cells(notebook)
    if skipped:
        print(f"dgm check: runs {path}'s cells but those under Problem {' and '.join(skipped)}, which no check needs",
              file=sys.stderr)
    return [(f"{path}, cell {number}", without_magics(source)) for number, source in cells]


PROBLEM_HEADING = re.compile(r"^#+\s*Problem\s+(\d[a-z])\b", re.MULTILINE)  # "## Problem 1d: training on MNIST"


def checked_cells(notebook):
    """The notebook's code cells as (number, source), less those under the heading of a problem without an automatic
    check (2a, 3c: training runs or figures, which would run again at every `dgm check`, and whose error would
    stop every check); and those problems, where their cells hold code."""
    kept, skipped, problem = [], [], None
    for number, cell in enumerate(notebook.cells, start=1):
        heading = PROBLEM_HEADING.search(cell.source) if cell.cell_type == "markdown" else None
        if heading:
            problem = heading.group(1)
        if cell.cell_type != "code":
            continue
        if problem is None or problem in PROBLEMS:
            kept.append((number, cell.source))
        elif problem not in skipped and any(line.strip() and not line.lstrip().startswith("#")
                                            for line in cell.source.splitlines()):
            skipped.append(problem)
    return kept, skipped


PYTHON_CELL_MAGICS = ("capture", "time", "timeit", "prun")  # cell magics whose body Jupyter runs as Python


def jupyter_display(*objects, **options):
    """Jupyter's ``display``, which shows nothing when the checker runs a notebook's cells."""


class NoJupyter:
    """What ``get_ipython()`` gives when the checker runs a notebook's cells: its calls, such as
    ``get_ipython().run_line_magic("matplotlib", "inline")``, do nothing, as %magic lines do."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def is_jupyter_only(line):
    """A %magic, a !shell command or a ``name?`` help request: lines that only Jupyter runs."""
    stripped = line.strip()
    return stripped.startswith(("%", "!")) or re.fullmatch(r"\?{1,2}[\w.]+|[\w.]+\?{1,2}", stripped) is not None


def without_magics(source):
    """``source`` with each line that only Jupyter runs (``is_jupyter_only``) turned into ``pass``, and the body of a
    cell magic that is not Python (%%bash, %%writefile, ...) into comments, so that line numbers stay."""
    lines = source.splitlines()
    first = next((number for number, line in enumerate(lines) if line.strip()), 0)
    magic = lines[first].lstrip()[2:].split(" ")[0] if lines and lines[first].lstrip().startswith("%%") else None
    if magic is not None and magic not in PYTHON_CELL_MAGICS:
        body = [f"# {line}" for line in lines[first + 1:]]
        return "\n".join(lines[:first] + ["pass  # " + lines[first].strip()] + body) + "\n"
    lines = [line if not is_jupyter_only(line) else
             line[:len(line) - len(line.lstrip())] + "pass  # " + line.strip() for line in lines]
    return "\n".join(lines) + "\n"


def problem_keys(problem):
    """The problems that ``problem`` (a key or "all") names, in the problem set's order."""
    return list(PROBLEMS) if problem == "all" else [problem]


def run(problem, namespace, show=None):
    """{key: list of verdicts, or the UsageError} for ``problem`` (a key or "all") on the functions of ``namespace``;
    ``show(key, result)`` is called as each problem finishes, so that a slow one does not hide the others.

    Runs torch on one thread, as the checks' tensors are small, and NumPy with its default error handling whatever
    the student's file set: np.seterr(all="raise") would stop the checks' own arithmetic.
    """
    results = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with np.errstate(divide="warn", over="warn", under="ignore", invalid="warn"):
            for key in problem_keys(problem):
                try:
                    function = find_function(PROBLEMS[key], namespace)
                except UsageError as error:
                    results[key] = error
                else:
                    results[key] = run_problem(PROBLEMS[key], function)
                if show is not None:
                    show(key, results[key])
    finally:
        torch.set_num_threads(threads)
    return results


def outcome(result):
    """One problem's overall status: "ok", "FAIL", "not implemented", "error" or "usage"."""
    if isinstance(result, UsageError):
        return "usage"
    return next((verdict.status for verdict in result if verdict.status != "ok"), "ok")


def exit_status(results):
    """2 if any problem had a usage error, else 1 if any did not pass, else 0."""
    outcomes = [outcome(result) for result in results.values()]
    return 2 if "usage" in outcomes else 0 if set(outcomes) == {"ok"} else 1


def indented(text, indent):
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)


def format_problem(key, result):
    """The lines of one problem's verdicts."""
    problem = PROBLEMS[key]
    lines = [f"Problem {key}: {problem.signature}"]
    if isinstance(result, UsageError):
        return lines + [f"  {'usage error':{STATUS_WIDTH}s}  {result}"]
    indent = " " * (STATUS_WIDTH + 4)
    for verdict in result:
        if verdict.status == "not implemented":
            lines.append(f"  {verdict.status:{STATUS_WIDTH}s}  {problem.function} still raises NotImplementedError: "
                         "replace the TODO with your code")
            continue
        lines.append(f"  {verdict.status:{STATUS_WIDTH}s}  {verdict.check}")
        if verdict.status == "FAIL":
            lines.append(indented(f"mistake: {verdict.mistake}", indent))
            lines.append(indented(verdict.explanation, indent))
            if verdict.section:
                lines.append(indented(f"read: {section_title(verdict.section)} (handout, {verdict.section})", indent))
        elif verdict.status == "error":
            lines.append(textwrap.indent(verdict.explanation, indent))
    return lines


def format_summary(results):
    """One line: each problem's outcome, with the first mistake of those that failed."""
    summary = []
    for key, result in results.items():
        failed = next((verdict for verdict in result if verdict.status == "FAIL"), None) \
            if isinstance(result, list) else None
        summary.append(f"{key} {outcome(result)}" + (f" ({failed.mistake})" if failed else ""))
    return textwrap.fill("summary: " + ", ".join(summary), WIDTH, subsequent_indent="  ")


def format_report(results):
    """Every problem's verdicts, then a one-line summary when there is more than one problem."""
    lines = []
    for key, result in results.items():
        lines += format_problem(key, result) + [""]
    if len(results) > 1:
        lines.append(format_summary(results))
    return "\n".join(lines).rstrip()


def run_and_print(problem, namespace):
    """``run``, printing each problem's verdicts as soon as it finishes (as ``format_report`` lays them out); returns
    the results."""
    def show(key, result):
        print(("\n" if key != keys[0] else "") + "\n".join(format_problem(key, result)), flush=True)

    keys = problem_keys(problem)
    results = run(problem, namespace, show=show)
    if len(results) > 1:
        print("\n" + format_summary(results))
    return results


def check(problem, namespace=None):
    """Check ``problem`` (a key such as "1a", or "all") on the functions of ``namespace`` (by default the caller's
    globals, as in a notebook cell) and print the verdicts. Does nothing while ``dgm check`` loads the file that
    calls it: the command checks once, after."""
    if LOADING["file"] is not None:
        return
    if problem != "all" and problem not in PROBLEMS:
        raise ValueError(f"problem must be one of {', '.join(PROBLEMS)} or all, got {problem!r}")
    namespace = inspect.currentframe().f_back.f_globals if namespace is None else namespace
    run_and_print(problem, namespace)


def main(argv=None):
    summary, statuses = (" ".join(part.replace("``", "").split()) for part in __doc__.split("\n\n")[:2])
    parser = argparse.ArgumentParser(prog="dgm check", description=summary, epilog=statuses)
    parser.add_argument("problem", help=f"the problem to check ({', '.join(PROBLEMS)}), or all")
    parser.add_argument("file", type=Path, help="the .py file or notebook with your functions "
                        "(exercises/solution_template.py or exercises/ps4.ipynb)")
    args = parser.parse_args(argv)
    if args.problem not in (*PROBLEMS, "all"):
        checked = f"dgm check tests {', '.join(PROBLEMS)} and all"
        if f"ex-{args.problem}" in exercises():
            parser.error(f"problem {args.problem} has no automatic check: it asks for a run, a figure or a written "
                         f"answer, which its solution in the handout shows; {checked}")
        parser.error(f"no problem {args.problem!r}: {checked}")
    try:
        namespace = load_solutions(args.file)
    except UsageError as error:
        print(f"dgm check: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except StudentError as error:
        print(f"dgm check: {args.file} raised an error when imported:\n{error.report}", file=sys.stderr)
        if Path(args.file).suffix == ".ipynb":
            print("dgm check runs the notebook's cells, but those of the problems without a check, before it checks: "
                  "fix that cell, or comment it out while it is unfinished", file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(exit_status(run_and_print(args.problem, namespace)))
