"""`dgm check`: the reference solution passes, every classic mistake is rejected by name, the student's errors stay
theirs, and the student notebook and template are the handout's exercises as they are now."""

import dataclasses
import inspect
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient

import dgm.files
from dgm.check import book_sources, command, exercises, mixture_checks, problems, sampler_checks, schedule_checks
from dgm.check.problems import PROBLEMS
from dgm.check.verdicts import Mistake, UsageError, compare

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = Path(__file__).resolve().parent / "check_solutions"
sys.path.insert(0, str(SOLUTIONS))
import mutants  # noqa: E402  (imports reference_solution from the same folder)
import reference_solution  # noqa: E402

TEMPLATE, NOTEBOOK = REPO / "exercises" / exercises.TEMPLATE, REPO / "exercises" / exercises.NOTEBOOK


@pytest.fixture
def untouched(tmp_path):
    """The notebook and the template as `make exercises` writes them, before a student fills them in: the checkout's
    own may hold the student's work."""
    notebook, template = exercises.write(tmp_path / "exercises")
    return types.SimpleNamespace(notebook=notebook, template=template)


def solution_namespace(**replaced):
    """The reference solution's functions, some replaced."""
    return {**vars(reference_solution), **replaced}


def test_reference_solution_passes_every_check(one_thread):
    results = command.run("all", solution_namespace())
    assert command.exit_status(results) == 0, command.format_report(results)
    assert all(len(results[key]) == len(problem.checks) for key, problem in PROBLEMS.items())


@pytest.mark.parametrize("key, function", mutants.CORRECT_VARIANTS)
def test_right_answers_written_otherwise_pass(key, function, one_thread):
    results = command.run(key, solution_namespace(**{PROBLEMS[key].function: function}))
    assert command.exit_status(results) == 0, command.format_report(results)


def test_a_fault_of_the_checker_itself_is_reported_and_the_other_problems_still_run(monkeypatch, one_thread):
    def broken_check(schedules):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setitem(PROBLEMS, "1a", dataclasses.replace(PROBLEMS["1a"],
                                                            checks=(("a check that fails itself", broken_check),)))
    results = command.run("all", solution_namespace())
    verdict = results["1a"][-1]
    assert verdict.status == "error" and "the checker itself failed" in verdict.explanation
    assert "LinAlgError: SVD did not converge" in verdict.explanation
    assert all(command.outcome(results[key]) == "ok" for key in PROBLEMS if key != "1a")


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the naive score's 0/0, which the check names
@pytest.mark.parametrize("key, mistake, function", mutants.MUTANTS, ids=[f"{k}: {m}" for k, m, _ in mutants.MUTANTS])
def test_each_mistake_is_rejected_by_name(key, mistake, function, one_thread):
    results = command.run(key, solution_namespace(**{PROBLEMS[key].function: function}))
    failed = [verdict for verdict in results[key] if verdict.status != "ok"]
    assert [(verdict.status, verdict.mistake) for verdict in failed] == [("FAIL", mistake)], \
        command.format_report(results)
    assert book_sources.section_title(failed[0].section) != failed[0].section, "the verdict must cite a handout section"
    assert command.exit_status(results) == 1


def test_a_sampler_ignoring_its_generator_is_sent_to_the_contract_that_asks_for_it(one_thread):
    """Problem 1c's exercise, not the epsilon parameterisation, says to draw from ``generator``."""
    results = command.run("1c", solution_namespace(sample=mutants.sample_seeding_its_own_generator))
    (failed,) = [verdict for verdict in results["1c"] if verdict.status != "ok"]
    assert failed.mistake == "generator ignored" and failed.section == sampler_checks.EXERCISE_SECTION
    assert "Exercises" in book_sources.section_title(failed.section)


def test_too_few_digits_says_how_many_agree():
    expected = np.array([1.0, 2.0])
    for error, digits in ((3e-4, 4), (2e-5, 5)):  # relative errors that round to 10^-4 and 10^-5
        with pytest.raises(Mistake) as raised:
            compare(expected * (1 + error), expected, "x", "section")
        assert f"about {digits} significant digits" in raised.value.explanation
    with pytest.raises(Mistake) as raised:  # counted at the entry that fails, not at a zero within atol
        compare(np.array([0.9e-12, 1.0003, 2.0]), np.array([0.0, 1.0, 2.0]), "x", "section")
    assert "about 4 significant digits" in raised.value.explanation


def test_a_mistake_of_the_posterior_branch_names_its_sigma_once(one_thread):
    not_finite = next(function for key, mistake, function in mutants.MUTANTS if mistake == "samples not finite")
    results = command.run("1c", solution_namespace(sample=not_finite))
    (failed,) = [verdict for verdict in results["1c"] if verdict.status != "ok"]
    assert failed.explanation.startswith('with sigma="posterior", the step') \
        and failed.explanation.count("sigma=") == 1, failed.explanation


@pytest.mark.parametrize("key, function, words", [
    ("1c", mutants.sampler(posterior_mean_step=mutants.posterior_mean_with_alpha_bar_t), 'with sigma="posterior", '),
    ("2b", mutants.respace_swapped, "return (timesteps, betas), in that order"),
    ("1b", mutants.forward_for_images_only, "reshape it to (N, 1, ..., 1)"),
    ("1b", mutants.forward_in_float64, "alpha_bar[t].to(x0.dtype)"),
    ("1b", mutants.forward_in_float32, "return x_t in the dtype x0 comes in"),
    ("1b", mutants.forward_for_4d_or_2d_only, "reshape it to (N, 1, ..., 1)"),
    ("2b", mutants.respace_without_the_first_beta, "(T = 1000, steps = 50): betas holds one beta' per kept step"),
    ("2b", mutants.respace_with_timesteps(lambda T, steps: torch.linspace(0, T, steps).long()),
     "the last kept timestep is T - 1"),
])
def test_a_verdict_carries_the_hint_that_fixes_it(key, function, words, one_thread):
    verdict = command.run(key, solution_namespace(**{PROBLEMS[key].function: function}))[key][-1]
    assert words in verdict.explanation


def test_the_report_prints_each_mistake_with_its_section_and_sums_them_up(one_thread):
    results = command.run("all", solution_namespace(ddpm_schedules=mutants.alpha_bar_shifted))
    report = command.format_report(results)
    assert "mistake: alpha_bar shifted by one step" in report and "read: " in report and "preface-notation" in report
    assert "1a FAIL (alpha_bar shifted by one step)" in command.format_summary(results)


def test_the_end_to_end_check_fails_samples_that_ignore_the_network(one_thread):
    def sample(eps_model, n, shape, schedule, sigma="beta", generator=None):
        return torch.randn((n, *shape), generator=generator, dtype=torch.float64)

    with pytest.raises(Mistake, match="samples do not follow p_0"):
        sampler_checks.check_end_to_end(sample)


def test_every_cited_section_is_in_the_handout():
    titles = book_sources.section_titles()
    cited = {value for module in (schedule_checks, sampler_checks, mixture_checks)
             for name, value in vars(module).items() if name.endswith("_SECTION")}
    assert cited and cited <= set(titles), cited - set(titles)


def test_a_changed_argument_is_named_not_blamed_on_the_formula(one_thread):
    def forward(x0, t, noise, alpha_bar):
        level = alpha_bar[t].reshape(-1, 1, 1, 1)
        noise *= (1 - level).sqrt()  # right values, but the caller's noise is overwritten
        return level.sqrt() * x0 + noise

    verdict = command.run("1b", solution_namespace(forward=forward))["1b"][-1]
    assert (verdict.status, verdict.mistake) == ("FAIL", "noise changed in place")
    assert "noise *= ..." in verdict.explanation
    verdict = command.run("1c", solution_namespace(sample=mutants.sample_changing_the_schedule))["1c"][-1]
    assert (verdict.status, verdict.mistake) == ("FAIL", 'schedule["alpha"] changed in place')


def test_a_function_that_never_returns_is_stopped_with_a_verdict(monkeypatch, one_thread):
    def marginal_pdf(x, t, weights, means, stds, beta_min, beta_max):
        end = time.monotonic() + 60  # ends, so that a broken time limit fails this test rather than hangs it
        while time.monotonic() < end:
            pass
        return np.zeros_like(x)

    monkeypatch.setattr(problems, "TIME_LIMIT", 1)
    verdict = command.run("3a", solution_namespace(marginal_pdf=marginal_pdf))["3a"][-1]
    assert (verdict.status, verdict.mistake) == ("FAIL", "no result in time")
    monkeypatch.delattr(signal, "SIGALRM")  # as on Windows: a timer thread interrupts the main thread instead
    verdict = command.run("3a", solution_namespace(marginal_pdf=marginal_pdf))["3a"][-1]
    assert (verdict.status, verdict.mistake) == ("FAIL", "no result in time")
    assert [verdict.status for verdict in command.run("3a", solution_namespace())["3a"]] == ["ok"] * 3


def test_each_problem_is_printed_as_it_finishes(capsys, one_thread):
    printed = []
    results = command.run("all", solution_namespace(), show=lambda key, result: printed.append(key))
    assert printed == list(PROBLEMS)
    command.check("all", solution_namespace())
    assert capsys.readouterr().out.rstrip() == command.format_report(results)


def test_imports_inside_the_students_functions_find_files_beside_theirs(tmp_path, monkeypatch, capsys):
    (tmp_path / "helpers.py").write_text("def scale(x):\n    return 2 * x\n")
    (tmp_path / "solution.py").write_text("def forward(x0, t, noise, alpha_bar):\n"
                                          "    from helpers import scale\n    return scale(x0)\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    namespace = command.load_solutions(tmp_path / "solution.py")
    assert namespace["forward"](1, None, None, None) == 2


def test_an_error_in_the_students_code_shows_their_traceback_not_ours(capsys, one_thread):
    def forward(x0, t, noise, alpha_bar):
        level = alpha_bar[t]  # shape (N,), which does not broadcast against x0 of shape (N, 1, 2, 3)
        return level.sqrt() * x0 + (1 - level).sqrt() * noise

    command.check("1b", solution_namespace(forward=forward))
    report = capsys.readouterr().out
    assert "error" in report and "RuntimeError" in report and "level.sqrt() * x0" in report
    assert "hint: alpha_bar[t] has shape (N,)" in report and "dgm/check" not in report


def test_an_exit_or_own_error_in_a_function_is_an_error_with_its_message(one_thread):
    def stops(x0, t, noise, alpha_bar):
        exit()

    verdict = command.run("1b", solution_namespace(forward=stops))["1b"][-1]
    assert verdict.status == "error" and "called exit()" in verdict.explanation

    def beta_only(schedule, k, sigma):  # the student's own NotImplementedError, not the template's
        if sigma != "beta":
            raise NotImplementedError(f"unknown sigma {sigma!r}")
        return schedule["beta"][k].sqrt()

    verdict = command.run("1c", solution_namespace(sample=mutants.sampler(noise_std=beta_only)))["1c"][-1]
    assert verdict.status == "error" and "unknown sigma 'posterior'" in verdict.explanation
    assert 'hint: sigma is "beta" or "posterior"' in verdict.explanation

    def images_only(schedule, k, sigma):  # their own limit, which has nothing to do with sigma
        raise NotImplementedError("only image shapes (C, H, W)")

    verdict = command.run("1c", solution_namespace(sample=mutants.sampler(noise_std=images_only)))["1c"][-1]
    assert verdict.status == "error" and "only image shapes" in verdict.explanation and "hint" not in verdict.explanation

    class Unfinished(BaseException):  # their own exception, derived from BaseException rather than Exception
        pass

    def unfinished(beta_min, beta_max, T):
        raise Unfinished("not done")

    verdict = command.run("1a", solution_namespace(ddpm_schedules=unfinished))["1a"][-1]
    assert verdict.status == "error" and "Unfinished: not done" in verdict.explanation


def test_a_default_dtype_the_student_sets_leaves_the_checks_inputs_as_they_are(one_thread):
    """torch.set_default_dtype(torch.float64) at the top of their file must not make the float32 batch float64, where
    an x_t left in alpha_bar's float64 would pass."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        results = command.run("1b", solution_namespace(forward=mutants.forward_in_float64))
    finally:
        torch.set_default_dtype(previous)
    assert [verdict.mistake for verdict in results["1b"] if verdict.status != "ok"] == ["x_t not in x0's dtype"]


@pytest.mark.parametrize("key, parameters, words", [
    ("1b", "x0, t, alpha_bar, noise", "takes its parameters in another order"),
    ("1b", "x0, t, noise, alpha_bar", None),
    ("1c", "eps_model, n, shape, schedule, generator=None, sigma='beta'", "takes its parameters in another order"),
    ("1c", "eps_model, n, shape, schedule, sigma='posterior', generator=None", "the default of sigma is 'posterior'"),
    ("1c", "eps_model, n, shape, schedule, sigma='beta', *, generator", "generator has no default"),
    ("1c", "eps_model, n, shape, schedule, sigma=None, generator=torch.default_generator", None),  # behave alike
    ("1c", "eps_model, n, shape, schedule, sigma='beta', *, generator=None, steps=None", None),
])
def test_a_signature_the_contract_cannot_use_is_a_usage_error(key, parameters, words):
    namespace = {"torch": torch}
    exec(f"def {PROBLEMS[key].function}({parameters}):\n    pass", namespace)
    problem = PROBLEMS[key]
    if words is None:
        problem.check_signature(namespace[problem.function])
    else:
        with pytest.raises(UsageError, match=re.escape(words)):
            problem.check_signature(namespace[problem.function])


def test_a_sampler_reading_the_librarys_tables_is_told_which_keys_it_gets(capsys, one_thread):
    command.check("1c", solution_namespace(sample=mutants.sample_reading_library_tables))
    report = capsys.readouterr().out
    assert "KeyError: 'posterior_variance'" in report and "dgm/check" not in report
    assert "hint: schedule is Problem 1a's dict, with the keys beta, alpha, alpha_bar only" in report


def test_usage_errors_exit_with_status_two(tmp_path, capsys):
    missing = tmp_path / "partial.py"
    missing.write_text("def forward(x0, t, alpha_bar):\n    return x0\n")
    not_a_function = tmp_path / "constant.py"
    not_a_function.write_text("forward = 3\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("def forward(x0, t, noise, alpha_bar):\n    return x0\n")
    truncated = tmp_path / "truncated.ipynb"
    truncated.write_text(NOTEBOOK.read_text()[:2000])
    latin = tmp_path / "latin.py"
    latin.write_bytes("# café\ndef forward(x0, t, noise, alpha_bar):\n    return x0\n".encode("latin-1"))
    for argv in (["1a", str(missing)], ["1b", str(missing)], ["1a", str(tmp_path / "absent.py")],
                 ["1b", str(not_a_function)], ["1b", str(notes)], ["1a", str(tmp_path)], ["1a", str(truncated)],
                 ["1b", str(latin)]):
        with pytest.raises(SystemExit) as exit_:
            command.main(argv)
        assert exit_.value.code == 2, argv
    out, err = capsys.readouterr()
    assert "no function ddpm_schedules" in out and "cannot be called as forward(x0, t, noise, alpha_bar)" in out
    assert "forward is an object of type int, not a function" in out
    assert "no file" in err and "neither a Python file nor a notebook" in err and f"{tmp_path} is a folder" in err
    assert "truncated.ipynb is not a readable notebook" in err and "Traceback" not in err
    assert "latin.py is not UTF-8 text" in err
    for problem, message in (("2a", "problem 2a has no automatic check"), ("4a", "no problem '4a'")):
        with pytest.raises(SystemExit) as exit_:
            command.main([problem, str(missing)])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_file_that_fails_to_import_is_shown_as_the_students(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\n\ndef ddpm_schedules(beta_min, beta_max, T)\n    pass\n")
    with pytest.raises(SystemExit) as exit_:
        command.main(["1a", str(broken)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "SyntaxError" in err and "broken.py" in err and "importlib" not in err and "dgm/check" not in err
    for call in ("exit()", "import sys; sys.exit(0)"):  # an exit must not read as "all pass" (status 0)
        broken.write_text(f"def ddpm_schedules(beta_min, beta_max, T):\n    pass\n\n{call}\n")
        with pytest.raises(SystemExit) as exit_:
            command.main(["all", str(broken)])
        assert exit_.value.code == 1 and "called exit" in capsys.readouterr().err
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('get_ipython().run_line_magic("matplotlib", "inline")'),  # as Jupyter exports it
        nbformat.v4.new_code_cell(inspect.getsource(reference_solution.ddpm_schedules)),
        nbformat.v4.new_code_cell("unfinished = w + 1  # a scratch cell of another problem")])
    broken = tmp_path / "broken.ipynb"
    nbformat.write(notebook, broken)
    with pytest.raises(SystemExit) as exit_:
        command.main(["1a", str(broken)])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "cell 3" in err and "NameError: name 'w'" in err and "get_ipython" not in err
    assert "runs the notebook's cells" in err


def test_a_check_call_left_in_a_python_file_does_not_print_a_second_report(tmp_path, capsys, one_thread):
    solution = tmp_path / "mine.py"
    solution.write_text(f"import torch\nfrom dgm.check import check\n\n"
                        f"{inspect.getsource(reference_solution.ddpm_schedules)}\n\ncheck(\"1a\")\n"
                        "result = check(\n    \"1a\",\n)\nassert result is None\n"
                        "tables = [\n    check(\"1a\"),\n]\n"
                        "for key in [\"1a\", \"1b\"]:\n    check(key)\n")  # in a loop or a list: none runs either
    with pytest.raises(SystemExit) as exit_:
        command.main(["1a", str(solution)])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.count("Problem 1a:") == 1 and "Problem 1b" not in out
    command.check("1a", vars(reference_solution))  # after loading, check() checks again
    assert capsys.readouterr().out.count("Problem 1a:") == 1


def test_numpy_errors_the_student_raises_do_not_stop_the_checks(tmp_path, capsys, one_thread):
    """np.seterr(all="raise"), set to hunt NaNs in their own code, must not turn the checks' underflows into errors."""
    solution = tmp_path / "mine.py"
    solution.write_text("import numpy as np\nnp.seterr(all='raise')\n\n"
                        + "".join(inspect.getsource(function) + "\n\n" for function in (
                            reference_solution.component_moments, reference_solution.log_terms,
                            reference_solution.marginal_pdf)))
    with np.errstate(), pytest.raises(SystemExit) as exit_:  # the file's setting ends with the test
        command.main(["3a", str(solution)])
    assert exit_.value.code == 0, capsys.readouterr()


def test_the_notebook_itself_can_be_checked_from_a_terminal(tmp_path, untouched, capsys, one_thread):
    notebook = nbformat.read(untouched.notebook, as_version=4)
    solution = next(cell for cell in notebook.cells if cell.get("id") == "ex-1a-solution")
    solution.source = "%%capture\n" + inspect.getsource(reference_solution.ddpm_schedules)  # Jupyter runs it
    broken = next(cell for cell in notebook.cells if cell.get("id") == "ex-1b-solution")
    stub, broken.source = broken.source, "%matplotlib inline\nimport not_a_module"  # magics are skipped; the error names its cell
    path = tmp_path / "mine.ipynb"
    nbformat.write(notebook, path)
    with pytest.raises(SystemExit) as exit_:
        command.main(["1a", str(path)])
    out, err = capsys.readouterr()
    cell = notebook.cells.index(broken) + 1
    assert exit_.value.code == 1 and f"mine.ipynb, cell {cell}" in err and "import not_a_module" in err
    broken.source = "!ls\ntorch.cumprod?\n" + stub + "\ndisplay(torch.zeros(2))"  # Jupyter-only lines are skipped
    notebook.cells.insert(cell, nbformat.v4.new_code_cell("\n%%bash\n.venv/bin/dgm sample --ckpt run --out grid.png"))
    nbformat.write(notebook, path)
    with pytest.raises(SystemExit) as exit_:
        command.main(["all", str(path)])
    out, err = capsys.readouterr()
    assert exit_.value.code == 1 and "summary: 1a ok, 1b not implemented" in out and not err
    assert out.count("Problem 1a") == 1  # the notebook's own check("1a") cell did not run as well
    # The work of the problems without a check (training, figures) does not run, nor stop the checks with its error.
    for problem in ("2a", "3c"):
        work = next(cell for cell in notebook.cells if cell.get("id") == f"ex-{problem}-work")
        work.source = f"raise RuntimeError('Problem {problem}: a training run or a figure')"
    nbformat.write(notebook, path)
    with pytest.raises(SystemExit) as exit_:
        command.main(["1a", str(path)])
    out, err = capsys.readouterr()
    assert exit_.value.code == 0 and "Problem 2a and 3c, which no check needs" in err and "RuntimeError" not in err


def test_the_untouched_template_is_not_implemented_without_a_traceback(untouched):
    """The one run through the console entry point, as a student runs it."""
    result = subprocess.run([sys.executable, "-m", "dgm", "check", "all", str(untouched.template)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count("not implemented") == 2 * len(PROBLEMS)  # one per problem, and the summary's
    assert "Traceback" not in result.stdout + result.stderr


def test_exercise_files_are_up_to_date():
    """The notebook's cells (not the outputs or metadata that Jupyter saves as a student runs it) and the template
    are what `make exercises` writes from the handout. A checkout whose files the student has changed skips, saying
    so; CI's fresh clone never does."""
    changed = [path.name for path in (NOTEBOOK, TEMPLATE) if not exercises.untouched(path)]
    if changed and os.environ.get("CI") != "true":
        pytest.skip(f"exercises/{' and '.join(changed)} changed since `make exercises` wrote them (your work?)")
    assert not changed, f"exercises/{' and '.join(changed)} are not as `make exercises` writes them"

    def cells(text):
        notebook = nbformat.reads(text, as_version=4)
        return notebook.metadata.kernelspec, [(cell.cell_type, cell.source) for cell in notebook.cells]

    assert cells(NOTEBOOK.read_text()) == cells(exercises.render_notebook()), "run `make exercises`"
    assert TEMPLATE.read_text() == exercises.render_template(), "run `make exercises`"


def test_each_exercise_file_says_how_to_check_itself():
    """The handout's line names the notebook's terminal check; the notebook says check("1a"), the template its own
    path, and neither names the other."""
    handout = (exercises.BOOK / "forward_process.md").read_text()
    assert "Check your implementation with `.venv/bin/dgm check 1a exercises/ps4.ipynb`." in handout
    notebook, template = exercises.render_notebook(), exercises.render_template()
    assert 'run `check(\\"1a\\")` in the cell after it' in notebook and "dgm check 1a" not in notebook
    assert "# Check it with `.venv/bin/dgm check 1a exercises/solution_template.py`." in template
    assert "dgm check 1a exercises/ps4.ipynb" not in template


def test_contracts_fit_the_handouts_code_column():
    """The handout shows each contract as the docstring of a code block; its lines, indented by four, stay within
    the column that tests/test_book.py measures, so the reader never scrolls sideways."""
    for problem in PROBLEMS.values():
        widest = max(len(line) for line in exercises.declaration(problem).splitlines())
        assert widest <= 76, (problem.key, widest)


def test_a_students_work_is_never_overwritten_by_make_exercises(untouched):
    folder, rendered = untouched.template.parent, untouched.template.read_text()
    stub = exercises.unsolved(PROBLEMS["1c"])
    edits = [rendered.replace(stub, "return None"), rendered.replace(stub, f"x = 1\n    # {stub}"),
             rendered.replace("import torch\n", "import torch\nimport scipy\n"), rendered + "# my notes\n"]
    for edited in edits:
        untouched.template.write_text(edited)
        with pytest.raises(ValueError, match=r"solution_template.py has changed since `make exercises` wrote it"):
            exercises.write(folder)
        assert untouched.template.read_text() == edited
    untouched.template.write_text(rendered)

    notebook = nbformat.read(untouched.notebook, as_version=4)
    for cell in notebook.cells:  # running it saves outputs and metadata: still untouched
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [nbformat.v4.new_output("stream", text="ok")], 1
    nbformat.write(notebook, untouched.notebook)
    assert exercises.untouched(untouched.notebook)
    notebook.cells.insert(5, nbformat.v4.new_code_cell("def ddpm_schedules(beta_min, beta_max, T): ..."))
    nbformat.write(notebook, untouched.notebook)  # a solution in a new cell
    with pytest.raises(ValueError, match=r"ps4.ipynb has changed since `make exercises` wrote it"):
        exercises.write(folder)
    untouched.notebook.write_text("{not a notebook")
    assert not exercises.untouched(untouched.notebook)
    exercises.write(folder, overwrite=True)
    assert untouched.notebook.read_text() == exercises.render_notebook()
    exercises.write(folder)  # untouched files are simply rewritten


def test_make_exercises_that_fails_to_write_leaves_the_files_as_they_were(untouched, monkeypatch):
    folder, before = untouched.template.parent, untouched.notebook.read_bytes()
    monkeypatch.setattr(dgm.files.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError, match="No space left"):  # a full disk as the notebook is written
        exercises.write(folder, overwrite=True)
    assert untouched.notebook.read_bytes() == before and exercises.untouched(untouched.notebook)
    assert sorted(path.name for path in folder.iterdir()) == sorted([untouched.notebook.name,
                                                                     untouched.template.name])


def test_notebook_runs_top_to_bottom_and_its_check_cells_check_its_functions(untouched, capsys):
    notebook = nbformat.read(untouched.notebook, as_version=4)
    namespace = {}
    for cell in notebook.cells:
        if cell.cell_type == "code":
            exec(cell.source, namespace)  # the check cells find the functions in the notebook's globals
    report = capsys.readouterr().out
    assert report.count("still raises NotImplementedError") == len(PROBLEMS)
    # Each problem points at its own check cell, not at the template the notebook's reader did not fill in.
    problem_texts = [cell.source for cell in notebook.cells[1:] if cell.cell_type == "markdown"]
    assert not any("solution_template" in text for text in problem_texts)
    for key in PROBLEMS:
        assert sum(f'run `check("{key}")`' in text for text in problem_texts) == 1, key


def test_make_kernel_registers_the_kernel_the_notebook_asks_for(tmp_path, untouched, monkeypatch):
    kernelspec = nbformat.read(untouched.notebook, as_version=4).metadata.kernelspec
    lines = [line for line in (REPO / "Makefile").read_text().splitlines() if "ipykernel install" in line]
    assert len(lines) == 2  # `make kernel` for the user's Jupyter, `make lab` for the one in .venv
    for line, where in zip(lines, ("--user", "--sys-prefix")):
        arguments = shlex.split(line.strip().replace("$(BIN)/python", sys.executable))
        arguments[arguments.index(where)] = f"--prefix={tmp_path}"  # neither the user's Jupyter nor .venv's
        subprocess.run(arguments, check=True, capture_output=True)
        kernel = tmp_path / "share" / "jupyter" / "kernels" / kernelspec.name / "kernel.json"
        installed = json.loads(kernel.read_text())
        assert installed["display_name"] == kernelspec.display_name and installed["argv"][0] == sys.executable
        kernel.unlink()
    subprocess.run(arguments, check=True, capture_output=True)  # registered again for the run below

    # Jupyter, finding that kernel, runs the notebook top to bottom, and its check cells report.
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    notebook = nbformat.read(untouched.notebook, as_version=4)
    NotebookClient(notebook, timeout=120, resources={"metadata": {"path": str(untouched.notebook.parent)}}).execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert printed.count("still raises NotImplementedError") == len(PROBLEMS)


def test_student_files_hold_no_solution(untouched):
    sources = "\n".join(cell.source for cell in nbformat.read(untouched.notebook, as_version=4).cells)
    template = untouched.template.read_text()
    solutions = [body for path in book_sources.chapter_files()
                 for _, _, body in book_sources.directives(path, "solution")]
    assert solutions
    for body in solutions:
        lines = [line for line in body.splitlines() if len(line) > 30]
        assert not any(line in sources or line in template for line in lines), body
    assert "import dgm" not in template and "from dgm" not in template


def test_a_new_part_of_the_problem_set_reaches_the_notebook(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    for chapter in exercises.BOOK.glob("*.md"):
        (book / chapter.name).write_text(chapter.read_text())
    (book / "more.md").write_text("# More\n\n```{exercise} Problem 4a\n:label: ex-4a\n\nDraw one sample.\n```\n")
    notebook = exercises.render_notebook(book)
    assert "## Problem 4a" in notebook and "Draw one sample." in notebook


def test_a_missing_or_unsafe_exercise_is_a_clear_error(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    (book / "chapter.md").write_text("# A chapter\n\n```{exercise} Problem 1a\n:label: ex-1a\n\nText.\n```\n")
    with pytest.raises(ValueError, match=re.escape("no {exercise} directive with :label: ex-1b (it has ex-1a)")):
        exercises.render_template(book)
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    (unsafe / "chapter.md").write_text("```{exercise} Problem 1a\n:label: ex-1a\n\n```{literalinclude} a.py\n```\n")
    with pytest.raises(ValueError, match="contains 'literalinclude'"):
        exercises.jupyter_markdown("ex-1a", unsafe)
