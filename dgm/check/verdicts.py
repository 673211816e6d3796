"""What a check reports, and how it calls a student's function so that an error in their code is shown as theirs.

A check raises ``Mistake`` with the mistake's name, the formula and index it concerns and the handout section to
read; ``call`` turns the student's ``NotImplementedError`` into ``NotImplementedYet`` and any other exception into
``StudentError`` carrying their traceback without our frames.
"""

import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PACKAGE_DIR = Path(__file__).resolve().parent


class Mistake(Exception):
    """A wrong result: ``name`` says which mistake (or what is wrong), ``explanation`` the formula and the index,
    ``section`` the label of the handout section that derives the right formula."""

    def __init__(self, name, explanation, section):
        super().__init__(name)
        self.name, self.explanation, self.section = name, explanation, section


class NotImplementedYet(Exception):
    """The student's function still raises NotImplementedError (the template's TODO body)."""


class StudentError(Exception):
    """The student's code raised; ``report`` is their traceback, our frames left out."""

    def __init__(self, report):
        super().__init__(report)
        self.report = report


class UsageError(Exception):
    """A missing file or function, or a function that cannot be called as the contract says (exit status 2)."""


def _is_ours(frame):
    """Our frames, and the import machinery's that runs the student's file."""
    return frame.filename.startswith("<frozen importlib") or Path(frame.filename).resolve().is_relative_to(PACKAGE_DIR)


def student_traceback(error):
    """The traceback of ``error`` from the first frame outside dgm/check on: the student's code and what it called."""
    frames = traceback.extract_tb(error.__traceback__)
    while frames and _is_ours(frames[0]):
        frames = traceback.StackSummary.from_list(frames[1:])
    lines = ["Traceback (most recent call last), from your code:\n", *traceback.format_list(frames)]
    return "".join(lines + traceback.format_exception_only(type(error), error)).rstrip()


def call(function, *args, **kwargs):
    """``function(*args, **kwargs)`` with the student's exceptions turned into NotImplementedYet or StudentError."""
    try:
        return function(*args, **kwargs)
    except NotImplementedError:
        raise NotImplementedYet() from None
    except Exception as error:  # any exception of theirs is reported as theirs, with their traceback
        raise StudentError(student_traceback(error)) from None


@dataclass
class Verdict:
    """One check's outcome: ``status`` is "ok", "FAIL", "not implemented" or "error" (their code raised)."""

    check: str
    status: str
    mistake: str = ""
    explanation: str = ""
    section: str = ""


def as_float_array(value, what, section, shape=None):
    """``value`` (a tensor or an array) as a float64 NumPy array, or a Mistake naming ``what`` and the shape."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Mistake(f"{what} is not numeric", f"{what} is a {type(value).__name__}", section) from None
    if shape is not None and array.shape != tuple(shape):
        raise Mistake(f"{what} has the wrong shape", f"{what} has shape {array.shape}, expected {tuple(shape)}",
                      section)
    return array


def close(got, expected, rtol, atol):
    """Whether two arrays agree everywhere (NaN never agrees)."""
    return got.shape == expected.shape and bool(np.all(np.abs(got - expected) <= atol + rtol * np.abs(expected)))


def first_difference(got, expected, rtol, atol):
    """The first index where ``got`` and ``expected`` disagree, as a tuple (NaN counts as a disagreement)."""
    bad = ~(np.abs(got - expected) <= atol + rtol * np.abs(expected))
    return tuple(int(i) for i in np.argwhere(bad)[0])


def compare(got, expected, what, section, variants=(), rtol=1e-6, atol=1e-12, x=None, context=""):
    """Pass if ``got`` matches ``expected``; else raise the Mistake of the first variant it matches, or one that
    names the first wrong index of ``what`` (or the point of ``x``, the grid it was evaluated on) and the
    ``context`` of the inputs.

    ``variants`` holds (values a known mistake gives, its name, its explanation, its section).
    """
    if close(got, expected, rtol, atol):
        return
    for values, name, explanation, variant_section in variants:
        if close(got, values, rtol, atol):
            raise Mistake(name, explanation, variant_section)
    index = first_difference(got, expected, rtol, atol)
    where = f" at x = {x[index]:g}" if x is not None else f"[{', '.join(map(str, index))}]" if index else ""
    inputs = f" ({context})" if context else ""
    raise Mistake(f"wrong {what}", f"{what}{where} is {got[index]:.6g}, expected {expected[index]:.6g}{inputs}",
                  section)
