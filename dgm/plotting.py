"""Where the book's outputs live, and the one figure helper: every chapter figure is also saved under figures/."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FIGURES = REPO_ROOT / "figures"
RESULTS = REPO_ROOT / "results"


def save_figure(figure, name, folder=FIGURES):
    """Save ``figure`` as ``folder/name.png`` (150 dpi, tight) and return the path; re-running a chapter rewrites it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    figure.savefig(path, dpi=150, bbox_inches="tight")
    return path
