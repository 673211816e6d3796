"""``holds``, which every derivation uses to state "this step holds" and fail loudly if it does not, and the rewrite
of the stable expm1/log1p forms that it compares through."""

import sympy as sp

from sympy.codegen.cfunctions import expm1, log1p


def expand_stable_functions(expr):
    """Rewrite expm1/log1p as exp/log, so SymPy can compare a stable form with the textbook form."""
    return expr.replace(expm1, lambda a: sp.exp(a) - 1).replace(log1p, lambda a: sp.log(1 + a))


def holds(lhs, rhs, why):
    """Raise if ``lhs == rhs`` cannot be shown by simplification; ``why`` names the step of the derivation."""
    difference = sp.simplify(expand_stable_functions(sp.sympify(lhs) - sp.sympify(rhs)))
    if difference != 0:
        raise AssertionError(f"derivation step failed: {why}: difference simplifies to {difference}")
    return True
