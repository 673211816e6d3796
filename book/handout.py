"""The handout's plumbing, kept out of the reader's way: where results live, their loading, tables and the checks that
the chapters' written claims hold for the numbers they glue. Chapters import it as ``handout`` (the book, and
``make chapter``, run them from book/)."""

import csv
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from matplotlib.text import Text
from myst_nb import glue
from PIL import Image

import dgm
from dgm.ablation_report import find_row, load_report, markdown_table, select_models
from dgm.check.exercises import declaration
from dgm.check.problems import PROBLEMS
from dgm.runs import LOSS_LOG
# The chapters use these paths through the module.
from dgm.paths import CHECKPOINTS, CPU_PRESET_MODEL, FIGURES, MODELS, RESCALED_MODELS, RESULTS  # noqa: F401

DPI = 150
COLUMN_PX = 720  # the width of the book's text column in CSS pixels (tests/test_book.py measures it)
MIN_TEXT_PX = 10.5  # the smallest text a figure may show at that width: two thirds of the body text
plt.rcParams["font.size"] = 12  # legends at "small" stay legible in a figure of nine inches


def save_figure(figure, name, folder=FIGURES):
    """Save ``figure`` as ``folder/name.png`` and return the path, refusing text that the page would shrink below
    MIN_TEXT_PX: a figure wider than the column is scaled down to it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    with Image.open(path) as image:
        scale = min(1.0, COLUMN_PX / image.width)
    texts = [text for text in figure.findobj(Text) if text.get_visible() and text.get_text().strip()]
    smallest = min((text.get_fontsize() for text in texts), default=None)
    if smallest is not None and smallest / 72 * DPI * scale < MIN_TEXT_PX:
        raise ValueError(f"figure {name}: its {smallest:g} pt text shows at {smallest / 72 * DPI * scale:.1f} px in "
                         f"a {COLUMN_PX} px column: make the figure narrower or the text larger")
    return path


def glue_all(**values):
    """Glue each value under its name (underscores become dashes), for {glue:text} in the prose."""
    for name, value in values.items():
        glue(name.replace("_", "-"), value, display=False)


def table(header, rows):
    """Display a Markdown table (MyST renders it, math included)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    display(Markdown("\n".join(lines)))


def report_table(report, rows):
    """Display rows of an ablation report as a table, the real-data floor first (dgm.ablation_report.markdown_table)."""
    display(Markdown(markdown_table(report, rows)))


def ablation():
    """The MNIST ablation report (`dgm ablation`, results/ablation.json)."""
    return load_report(RESULTS / "ablation.json")


def models(report, rescaled=False):
    """The report's descriptions of the shipped models, with the problem set's betas or rescaled ones."""
    return select_models(report, RESCALED_MODELS if rescaled else MODELS)


def model(report, T):
    """The report's description of the shipped model with this T and the problem set's betas."""
    return next(model for model in models(report) if model["T"] == T)


def show_grids(report, rows, titles, width=2.6):
    """The sample grids `dgm ablation` saved for ``rows``, side by side, one title each."""
    figure, axes = plt.subplots(1, len(rows), figsize=(width * len(rows), width + 0.5), constrained_layout=True)
    for axis, row, title in zip(np.atleast_1d(axes), rows, titles):
        axis.imshow(plt.imread(RESULTS / "ablation_grids" / row["grid"]), cmap="gray")
        axis.set_title(title)
        axis.axis("off")
    return figure


def full_chain(report, model, sigma="beta"):
    """A model's full-chain ancestral row."""
    return find_row(report, model["T"], sigma=sigma, model=model["name"])


def loss_log(run):
    """(steps, losses) as arrays from the loss log that a run or an export keeps (``dgm.runs.LOSS_LOG``)."""
    with open(Path(run) / LOSS_LOG, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return np.array([int(row["step"]) for row in rows]), np.array([float(row["loss"]) for row in rows])


def toy_ablation():
    """The exact-predictor grid over its seeds, as ``dgm toy-ablation`` wrote it (results/toy_ablation.json)."""
    return json.loads((RESULTS / "toy_ablation.json").read_text())


def toy_full_chains():
    """The full chains (steps = T) of the exact-predictor grid over its seeds (results/toy_ablation.json):
    the result, {(T, sampler): row} and the Monte-Carlo floor of the 1-Wasserstein distance."""
    result = toy_ablation()
    rows = {(row["T"], row["sampler"]): row for row in result["rows"] if row["steps"] == row["T"]}
    return result, rows, result["floor"]["wasserstein"]


def scientific(value, digits=2):
    """``value`` for running prose, as "4.1 × 10⁻⁵" (``digits`` significant digits)."""
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return f"{mantissa} × 10{str(int(exponent)).translate(str.maketrans('-0123456789', '⁻⁰¹²³⁴⁵⁶⁷⁸⁹'))}"


def standard_error(row, result):
    """The standard error of a toy-ablation row's mean distance: its spread over the seeds."""
    return row["wasserstein_std"] / math.sqrt(result["config"]["seeds"])


def floor_standard_error(result):
    """The standard error of the toy ablation's Monte-Carlo floor: its spread over its repeats."""
    return result["floor"]["wasserstein"]["std"] / math.sqrt(result["config"]["floor_repeats"])


def above_floor(row, result):
    """Whether a row's mean distance exceeds the floor's mean by more than two standard errors of the difference
    (the row's spread over its seeds, the floor's over its repeats); otherwise it is indistinguishable from exact
    sampling at this n."""
    error = math.hypot(standard_error(row, result), floor_standard_error(result))
    return row["wasserstein"] - result["floor"]["wasserstein"]["mean"] > 2 * error


def alpha_bar_T(beta_min, beta_max, T):
    """ᾱ_T of the linear schedule: the factor on the data's variance at the chain's end."""
    return dgm.ddpm_schedules(beta_min, beta_max, T)["alpha_bar"][-1].item()


def contract(key):
    """Show the function that ``dgm check KEY`` checks, its contract as docstring (``dgm.check.problems``)."""
    display(Markdown(f"```python\n{declaration(PROBLEMS[key])}```"))
