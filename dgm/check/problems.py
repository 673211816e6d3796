"""The problem set's contract: which function each problem asks for, its signature, what it returns, its checks.

The student template (``dgm.check.exercises``) is written from ``PROBLEMS``, so its signatures and the checker's
cannot disagree.
"""

import ast
import difflib
import inspect
import traceback
from dataclasses import dataclass

from dgm.check.loss_checks import LOSS_CHECKS
from dgm.check.mixture_checks import MARGINAL_CHECKS, SCORE_CHECKS
from dgm.check.sampler_checks import RESPACE_CHECKS, SAMPLE_CHECKS
from dgm.check.schedule_checks import FORWARD_CHECKS, SCHEDULE_CHECKS
from dgm.check.verdicts import Mistake, NotImplementedYet, Stopped, StudentError, UsageError, Verdict, time_limit

TIME_LIMIT = 120  # seconds a check gives the student's code; the reference solutions need under one


@dataclass(frozen=True)
class Problem:
    """One checkable problem: ``key`` as on the command line, the handout's exercise label, the function's name
    and parameters (as written in its ``def``), the contract as its docstring, and the checks in order."""

    key: str
    exercise: str
    function: str
    parameters: str
    contract: str
    checks: tuple

    @property
    def signature(self):
        return f"{self.function}({self.parameters})"

    def check_signature(self, function):
        """Raise UsageError unless ``function`` can be called as the contract calls it."""
        names = [name.strip() for name in self.parameters.split(",")]
        positional = [name for name in names if "=" not in name]
        keywords = {name.split("=")[0]: None for name in names if "=" in name}
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return
        try:
            signature.bind(*positional, **keywords)
        except TypeError as error:
            raise UsageError(f"{self.function}{signature} cannot be called as {self.signature} ({error}); keep the "
                             "template's signature") from None
        contract = [name.split("=")[0] for name in names]
        theirs = [name for name, parameter in signature.parameters.items() if name in contract
                  and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)]
        if theirs != [name for name in contract if name in theirs]:
            raise UsageError(f"{self.function}{signature} takes its parameters in another order than "
                             f"{self.signature}: a call that passes them by position, in the contract's order, "
                             "would give each the wrong value")
        for name, default in ((name.split("=")[0], ast.literal_eval(name.split("=")[1])) for name in names
                              if "=" in name):
            theirs = signature.parameters[name].default if name in signature.parameters else default
            if theirs is inspect.Parameter.empty:
                raise UsageError(f"{self.function}{signature}: {name} has no default; the contract's is {default!r} "
                                 f"({self.signature}), which a caller that leaves {name} out expects")
            if type(theirs) is type(default) and theirs != default:  # None for "beta" may be handled in the body
                raise UsageError(f"{self.function}{signature}: the default of {name} is {theirs!r}, the contract's "
                                 f"is {default!r} ({self.signature}); a caller that leaves {name} out expects that")

PROBLEMS = {problem.key: problem for problem in (
    Problem("1a", "ex-1a", "ddpm_schedules", "beta_min, beta_max, T",
            "The linear schedule as a dict of 1-D torch tensors of length T, keys\n"
            '"beta", "alpha", "alpha_bar", indexed k = 0..T-1 (the book\'s step\n'
            "t = k + 1): beta[k] = beta_min + k (beta_max - beta_min) / (T - 1),\n"
            "alpha = 1 - beta, alpha_bar[k] = prod of alpha[i] for i <= k.", SCHEDULE_CHECKS),
    Problem("1b", "ex-1b", "forward", "x0, t, noise, alpha_bar",
            "A draw of q(x_(k+1) | x_0): x0 and noise of shape (N, ...), t a long\n"
            "tensor of shape (N,) of array indices k in 0..T-1 (the book's step\n"
            "k + 1), alpha_bar the table of ddpm_schedules. Returns a tensor of\n"
            "the shape and dtype of x0.",
            FORWARD_CHECKS),
    Problem("1c", "ex-1c", "sample", 'eps_model, n, shape, schedule, sigma="beta", generator=None',
            "Ancestral sampling (Algorithm 2) from x ~ N(0, I) of shape\n"
            "(n, *shape). k is the array index (the book's step t = k + 1): steps\n"
            "run k = T-1, ..., 0, and eps_model(x, t) takes k as t, a long tensor\n"
            "of shape (n,). Every step but the last (k = 0) adds std[k] z, with\n"
            "std[k]^2 = beta[k] (sigma=\"beta\") or, with sigma=\"posterior\",\n"
            "    beta_tilde[k] = (1 - alpha_bar[k-1]) / (1 - alpha_bar[k]) beta[k],\n"
            "where alpha_bar[k-1] at k = 0 is 1 (the book's alpha_bar_0), not\n"
            "Python's alpha_bar[-1]. schedule is the dict of ddpm_schedules;\n"
            "draw all noise with torch.randn(..., generator=generator). Returns\n"
            "x_0, a tensor of shape (n, *shape).",
            SAMPLE_CHECKS),
    Problem("1d", "ex-1d", "loss", "eps_model, x0, alpha_bar, generator=None",
            "Algorithm 1's loss on a batch x0 of shape (N, ...): t, a long tensor\n"
            "of shape (N,) uniform over the array indices 0..T-1 (T is\n"
            "len(alpha_bar)), and noise ~ N(0, I) of x0's shape and dtype, both\n"
            "drawn with generator=generator; x_t as forward() draws it. Returns\n"
            "the mean over the batch and every entry of\n"
            "(noise - eps_model(x_t, t))^2, a 0-d tensor.",
            LOSS_CHECKS),
    Problem("2b", "ex-2b", "respace", "alpha_bar, steps",
            "The kept timesteps, increasing array indices that include 0 and\n"
            "T - 1 (the book's steps 1 and T), and the respaced betas of a chain\n"
            "with the same alpha_bar at those steps, both of length steps\n"
            "(2 <= steps <= T): returns (timesteps, betas), a long and a float\n"
            "tensor. alpha_bar is Problem 1a's float64 table. Any such timesteps\n"
            "pass; the handout spaces them evenly.",
            RESPACE_CHECKS),
    Problem("3a", "ex-3a", "marginal_pdf", "x, t, weights, means, stds, beta_min, beta_max",
            "p_t(x), the density of x(t) under the VP-SDE with\n"
            "beta(t) = beta_min + t (beta_max - beta_min), t in [0, 1], started\n"
            "from p_0 = sum_i weights[i] N(means[i], stds[i]^2) (stds are standard\n"
            "deviations). x is a NumPy array, t a float, weights, means and stds\n"
            "1-D arrays; returns an array of x's shape.", MARGINAL_CHECKS),
    Problem("3b", "ex-3b", "score", "x, t, weights, means, stds, beta_min, beta_max",
            "The score d/dx log p_t(x) of the marginal of Problem 3a, finite for\n"
            "|x| up to 100 and beyond. Arguments as in Problem 3a; returns an\n"
            "array of x's shape.", SCORE_CHECKS),
)}


def find_function(problem, namespace):
    """The student's function for ``problem`` from ``namespace`` (a module's or notebook's globals)."""
    function = namespace.get(problem.function)
    if function is None:
        near = difflib.get_close_matches(problem.function, [name for name, value in namespace.items()
                                                            if inspect.isfunction(value)], n=1)
        raise UsageError(f"no function {problem.function} (Problem {problem.key}); define {problem.signature}"
                         + (f" (is {near[0]} meant to be it?)" if near else ""))
    if not callable(function):
        raise UsageError(f"{problem.function} is an object of type {type(function).__name__}, not a function; "
                         f"define {problem.signature}")
    problem.check_signature(function)
    return function


def run_problem(problem, function):
    """The verdicts of ``problem``'s checks on ``function``, in order, stopping at the first that does not pass."""
    verdicts = []
    for description, check in problem.checks:
        try:
            with time_limit(TIME_LIMIT):
                check(function)
        except Stopped as stop:
            return verdicts + [Verdict(description, "FAIL", stop.mistake.name, stop.mistake.explanation,
                                       stop.mistake.section)]
        except NotImplementedYet:
            return verdicts + [Verdict(description, "not implemented")]
        except StudentError as error:
            return verdicts + [Verdict(description, "error", explanation=error.report)]
        except Mistake as mistake:
            return verdicts + [Verdict(description, "FAIL", mistake.name, mistake.explanation, mistake.section)]
        except Exception:  # the checker's own fault, on an input it did not foresee: the other problems still run
            return verdicts + [Verdict(description, "error", explanation="the checker itself failed on your function's "
                                       "result; please report this, with your function:\n" + traceback.format_exc())]
        verdicts.append(Verdict(description, "ok"))
    return verdicts
