"""The book's two output helpers: every chapter figure is also saved under figures/, and sampler labels are written
with their math."""

from pathlib import Path

from dgm.paths import FIGURES, REPO_ROOT  # noqa: F401  REPO_ROOT: tests/test_book.py finds _build/ through it

MATH_LABELS = {"sigma^2 = beta_tilde": r"$\sigma^2 = \tilde\beta$", "sigma^2 = beta": r"$\sigma^2 = \beta$",
               "eta = 0": r"$\eta = 0$"}  # the labels' plain parts and their math, the longest first


def save_figure(figure, name, folder=FIGURES):
    """Save ``figure`` as ``folder/name.png`` (150 dpi, tight) and return the path; re-running a chapter rewrites it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    figure.savefig(path, dpi=150, bbox_inches="tight")
    return path


def typeset(label):
    """A sampler's label with sigma^2 and eta as math, alike for the book's tables (MyST) and legends (matplotlib)."""
    for plain, math in MATH_LABELS.items():
        label = label.replace(plain, math)
    return label
