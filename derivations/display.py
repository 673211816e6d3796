"""Show a derivation's expressions as display math in the book's chapters (which run in IPython)."""

import sympy as sp


def show(lhs, expression):
    """Display ``lhs = expression`` as LaTeX math in the notebook."""
    from IPython.display import Math, display

    display(Math(lhs + " = " + sp.latex(expression)))
