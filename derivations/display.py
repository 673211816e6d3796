"""Show a derivation's expressions as display math in the book's chapters (which run in IPython), written in the
handout's notation: the derivations' symbol names become the symbols of the prose (``NOTATION`` below)."""

import re

import sympy as sp
from sympy.printing.latex import LatexPrinter

from derivations._check import expand_stable_functions

NOTATION = {  # a symbol's name in derivations/: its LaTeX in the handout
    "beta_min": r"\beta_{\min}",
    "beta_max": r"\beta_{\max}",
    "alphabar": r"\bar\alpha_t",
    "alphabar_prev": r"\bar\alpha_{t-1}",
    "alpha_t": r"\alpha_t",
    "beta": r"\beta_t",
    "x_prev": "x_{t-1}",
    "alphabar_kept": r"\bar\alpha_{\tau_i}",
    "alphabar_kept_prev": r"\bar\alpha_{\tau_{i-1}}",
    "log_alphabar": r"\log\bar\alpha",
    "offset": "c",
    "epsilon": r"\varepsilon",
    "vhat": r"\hat v",
}
NUMBERED = {  # names with a number: their LaTeX with the number as a subscript
    r"abar_tau(\d+)": r"\bar\alpha_{{\tau_{0}}}",
    r"pi_?(\d+)": r"\pi_{0}",
    r"mu_?(\d+)": r"\mu_{0}",
    r"s_(\d+)": r"s_{0}",
}


def notation(symbol):
    """The handout's LaTeX for a derivation's symbol (SymPy's own where the handout has no other)."""
    if symbol.name in NOTATION:
        return NOTATION[symbol.name]
    for pattern, latex in NUMBERED.items():
        match = re.fullmatch(pattern, symbol.name)
        if match:
            return latex.format(match.group(1))
    return sp.latex(symbol)


def textbook(expression):
    """``expression`` with the derivations' numerically stable expm1 and log1p written as exp - 1 and log(1 + .)."""
    return expand_stable_functions(expression)


def in_powers_of(expression, symbol):
    """``expression``, or each exponent in it, collected in powers of ``symbol`` with factored coefficients, so that
    the VP-SDE's kernel and log alpha_bar(t) read alike: -beta_min t - t^2 (beta_max - beta_min)/2."""
    def collected(part):
        return sp.collect(sp.expand(part), symbol, sp.factor)

    if expression.is_polynomial(symbol):
        return collected(expression)
    return expression.replace(sp.exp, lambda exponent: sp.exp(collected(exponent)))


class HandoutPrinter(LatexPrinter):
    """SymPy's LaTeX with the subtracted terms of a sum last, as a textbook writes them: 1 - x, not -x + 1."""

    def _print_Add(self, expr, order=None):
        terms = self._as_ordered_terms(expr, order=order)
        subtracted = [term for term in terms if term.could_extract_minus_sign()]
        if not subtracted or len(subtracted) == len(terms):
            return super()._print_Add(expr, order=order)
        kept = [term for term in terms if term not in subtracted]
        return super()._print_Add(sp.Add(*kept, *subtracted, evaluate=False), order="none")


def latex(expression):
    """``expression`` as LaTeX in the handout's notation."""
    expression = sp.sympify(expression)
    names = {symbol: notation(symbol) for symbol in expression.free_symbols}
    return HandoutPrinter({"symbol_names": names}).doprint(expression)


def show(lhs, expression):
    """Display ``lhs = expression`` as LaTeX math in the notebook."""
    from IPython.display import Math, display

    display(Math(lhs + " = " + latex(expression)))
