"""What a check reports, and how it calls a student's function so that an error in their code is shown as theirs.

A check raises ``Mistake`` with the mistake's name, the formula and index it concerns and the handout section to
read; ``call`` turns the template's ``NotImplementedError`` into ``NotImplementedYet`` and any other exception, or an
``exit()``, into ``StudentError`` carrying their traceback without our frames, and names an argument they changed in
place.
``Stopped`` and ``time_limit`` end code that would not return.
"""

import _thread
import inspect
import signal
import threading
import traceback
from contextlib import contextmanager
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


class Stopped(BaseException):
    """Stops the student's code from inside it (a call limit, the time limit) with the Mistake to report; not an
    Exception, so that their own ``except Exception`` cannot swallow it."""

    def __init__(self, mistake):
        super().__init__(mistake.name)
        self.mistake = mistake


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
    """``function(*args, **kwargs)`` with the student's exceptions turned into NotImplementedYet or StudentError, and
    a Mistake if it changed a tensor or array it was given (the caller's copy would silently hold other values)."""
    inputs = named_inputs(function, args, kwargs)
    before = [_copy(value) for _, value in inputs]
    try:
        result = function(*args, **kwargs)
    except NotImplementedError as error:
        if not error.args or str(error).startswith("Problem "):  # the template's TODO, or a bare placeholder
            raise NotImplementedYet() from None
        raise StudentError(student_traceback(error)) from None  # their own, with their message
    except Exception as error:  # any exception of theirs is reported as theirs, with their traceback
        raise StudentError(student_traceback(error)) from None
    except SystemExit as stop:  # exit() would end the whole check without a verdict, as if all passed
        raise StudentError(f"{student_traceback(stop)}\nyour function called exit() or sys.exit(), which would stop "
                           "the check; remove the call, or raise an exception instead") from None
    except (KeyboardInterrupt, Stopped):  # Ctrl-C, and the check's own limits
        raise
    except BaseException as error:  # their own class derived from BaseException, not Exception
        raise StudentError(student_traceback(error)) from None
    for (name, value), copy in zip(inputs, before):
        if not _equal(value, copy):
            raise Mistake(f"{name} changed in place", f"your function changed its argument {name} in place (such as "
                          f"`{name} *= ...` or a method ending in _, like `.mul_()`), so the caller's "
                          "values are gone; compute into a new tensor instead, such as `y = x * c`", "")
    return result


@contextmanager
def hint(needles, text):
    """Append ``hint: text`` to a StudentError whose exception line contains ``needles`` (a string, or a tuple of
    strings that must all be there): a mistake that our arguments reveal only as an error in the student's code."""
    try:
        yield
    except StudentError as error:
        line = error.report.splitlines()[-1]
        if not all(needle in line for needle in ((needles,) if isinstance(needles, str) else needles)):
            raise
        raise StudentError(f"{error.report}\nhint: {text}") from None


def named_inputs(function, args, kwargs):
    """The tensors and arrays among the arguments, one dict level deep, as (name, value)."""
    try:
        bound = inspect.signature(function).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        bound = {**{f"argument {i + 1}": value for i, value in enumerate(args)}, **kwargs}
    found = []
    for name, value in bound.items():
        items = [(f'{name}["{key}"]', item) for key, item in value.items()] if isinstance(value, dict) else \
            [(name, value)]
        found += [(label, item) for label, item in items if isinstance(item, (torch.Tensor, np.ndarray))]
    return found


def _copy(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else value.copy()


def _equal(value, copy):
    if isinstance(value, torch.Tensor):
        return value.shape == copy.shape and bool(torch.equal(value.detach(), copy))
    return np.array_equal(value, copy, equal_nan=True)


@contextmanager
def time_limit(seconds):
    """Stop the student's code after ``seconds`` with a Mistake, from the main thread (as in a terminal and in
    Jupyter): by SIGALRM where the platform has it, else (Windows) by a timer that interrupts the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mistake = Mistake("no result in time", f"the check gave its calls of your function {seconds} s in all, and they "
                      "had not finished: a loop that never ends, or far more work than the formula needs? A "
                      "solution like the handout's returns in under a second", "")
    if hasattr(signal, "SIGALRM"):  # the alarm's signal is the limit itself
        signum, expired = signal.SIGALRM, lambda: True
        start, stop = lambda: signal.alarm(seconds), lambda: signal.alarm(0)
    else:  # Windows: a timer interrupts the main thread through SIGINT, with a handler of the check's own, since a
        # background process may have SIGINT ignored and interrupt_main then does nothing
        fired = threading.Event()
        timer = threading.Timer(seconds, lambda: (fired.set(), _thread.interrupt_main()))
        signum, expired, start, stop = signal.SIGINT, fired.is_set, timer.start, timer.cancel

    def on_signal(_signum, _frame):
        if expired():
            raise Stopped(mistake)
        raise KeyboardInterrupt  # a real Ctrl-C

    previous = signal.signal(signum, on_signal)
    start()
    try:
        yield
    finally:
        stop()
        signal.signal(signum, previous)


@dataclass
class Verdict:
    """One check's outcome: ``status`` is "ok", "FAIL", "not implemented" or "error" (their code raised, or, rarely,
    the checker itself failed on their result)."""

    check: str
    status: str
    mistake: str = ""
    explanation: str = ""
    section: str = ""


def as_float_array(value, what, section, shape=None):
    """``value`` (a tensor or an array) as a float64 NumPy array, or a Mistake naming ``what`` and the shape."""
    if value is None:
        raise Mistake("returned None", f"your function returned None where it should return {what}: is its "
                      "`return` statement missing?", section)
    if isinstance(value, tuple):
        raise Mistake(f"returned a tuple, not {what}", f"your function returned a tuple of {len(value)} items; "
                      f"return {what} alone" + (f", an array of shape {tuple(shape)}" if shape is not None else ""),
                      section)
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


SINGLE_PRECISION_RTOL = 1e-3  # float32 results of these closed forms agree with float64 well within it


def close(got, expected, rtol, atol):
    """Whether two arrays agree everywhere (NaN never agrees)."""
    return got.shape == expected.shape and bool(np.all(np.abs(got - expected) <= atol + rtol * np.abs(expected)))


def worst_difference(got, expected, rtol, atol):
    """The index where ``got`` is furthest from ``expected`` relative to the tolerance, as a tuple (NaN first)."""
    excess = np.abs(got - expected) / (atol + rtol * np.abs(expected))
    return tuple(int(i) for i in np.unravel_index(np.argmax(np.nan_to_num(excess, nan=np.inf)), got.shape))


def compare(got, expected, what, section, variants=(), rtol=1e-6, atol=1e-12, x=None, context="", more_variants=None):
    """Pass if ``got`` matches ``expected``; else raise the Mistake of the first variant it matches, or one that
    names the index of ``what`` furthest off (or the point of ``x``, the grid it was evaluated on) and the
    ``context`` of the inputs.

    ``variants`` holds (values a known mistake gives, its name, its explanation, its section); ``more_variants()``,
    called only when none of them matches, returns more (for mistakes costly to model).
    """
    if close(got, expected, rtol, atol):
        return

    def candidates():
        yield from variants
        yield from more_variants() if more_variants is not None else ()

    for values, name, explanation, variant_section in candidates():
        if close(got, values, rtol, atol):
            raise Mistake(name, explanation, variant_section)
    index = worst_difference(got, expected, rtol, atol)
    where = f" at x = {x[index]:g}" if x is not None else f"[{', '.join(map(str, index))}]" if index else ""
    inputs = f" ({context})" if context else ""
    if close(got, expected, SINGLE_PRECISION_RTOL, atol):
        digits = round(-np.log10(abs(got[index] - expected[index]) / max(abs(expected[index]), atol)))
        raise Mistake("too few correct digits", f"{what} agrees only to about {digits} significant "
                      f"digits, where the check asks a relative error under {rtol:g}: {what}{where} is "
                      f"{got[index]:.10g}, expected {expected[index]:.10g}{inputs}. float32 or float16 arithmetic, "
                      "or an approximation such as a finite difference, loses the rest: compute the exact formula in "
                      "float64, as the arguments come", section)
    raise Mistake(f"wrong {what}", f"{what}{where} is {got[index]:.6g}, expected {expected[index]:.6g}{inputs}",
                  section)
