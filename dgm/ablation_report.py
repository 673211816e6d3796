"""Reading and showing the report of ``dgm ablation`` (``dgm.ablation``): the book's lookups of models and rows,
the binomial standard error of a share of confident samples, and the report as a text or Markdown table.
"""

import math
from pathlib import Path

from dgm.classifier import CLASSES
from dgm.evaluate import CONFIDENT
from dgm.files import read_report
from dgm.labels import SIGMA_LABELS, typeset
from dgm.paths import MODELS, RESULTS

MODEL_PREFIX = "ddpm_mnist_"  # dropped from model names in grid file names and the book's tables
REPORT_KEYS = ("n", "seed", "models", "floor", "rows")  # what marks a report of dgm ablation
DEFAULT_OUT = RESULTS / "ablation"  # the shipped report: ablation.json, ablation.csv and ablation_grids/


def load_report(path=DEFAULT_OUT.with_suffix(".json")):
    """The report ``dgm ablation`` wrote (the book's tables read it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `dgm ablation` to write it")
    return read_report(path, "an ablation report", REPORT_KEYS)


def select_models(report, folders=MODELS):
    """The described models of ``report`` that are among ``folders`` (by name), in the order of ``folders``."""
    described = {model["name"]: model for model in report["models"]}
    return [described[Path(folder).name] for folder in folders if Path(folder).name in described]


def find_row(report, T, sampler="ancestral", sigma="beta", steps=None, model=None):
    """The row of the model with this T (and this name, if several models share T) and this setting (steps None: the
    full chain)."""
    rows = [row for row in report["rows"] if (row["T"], row["sampler"], row["sigma"], row["steps"]) ==
            (T, sampler, sigma, steps or T) and model in (None, row["model"])]
    if not rows:
        raise KeyError(f"no row for T={T}, {sampler}, sigma={sigma}, steps={steps or T}"
                       + (f", model {model}" if model else ""))
    if len(rows) > 1:
        raise KeyError(f"several models have T={T}: pass model= one of {[row['model'] for row in rows]}")
    return rows[0]


def share_standard_error(share, n):
    """Binomial standard error sqrt(p (1 - p) / N) of a share of confident samples measured on n samples."""
    return math.sqrt(share * (1 - share) / n)


def share_change(before, n_before, after, n_after):
    """(after - before, its standard error, whether it exceeds two of them) for two shares of confident samples
    from independent draws of n_before and n_after: the binomial variances p (1 - p) / N add."""
    change = after - before
    error = math.hypot(share_standard_error(before, n_before), share_standard_error(after, n_after))
    return change, error, abs(change) > 2 * error


TABLE_COLUMNS = ("model", "sampler", "steps", "FID-MNIST", "mean confidence", f"share ≥ {CONFIDENT} (± SE)",
                 "label entropy / log 10", "ms per image")


def device_kind(device):
    """"CPU" or "GPU" for a row's device as dgm.device.hardware_name writes it (a CPU's ends in its threads), or
    "unrecorded"."""
    if not device:
        return "unrecorded"
    return "CPU" if device.endswith("threads") else "GPU"


def table_lines(report, rows, book=False):
    """The header (TABLE_COLUMNS) and one list of formatted cells per line: the real-data floor first, then
    ``rows``, each share with its binomial standard error. Rows sampled on more than one device add a column naming
    each row's, since their times compare only within one device and a device's random generator draws its own x_T
    from the same seed. ``book`` (its narrow pages) writes sigma^2 as MyST math (dgm.labels.typeset), models
    without MODEL_PREFIX, devices by kind, the floor without its N (the text gives it) and each share's error
    unbroken by a line break."""
    uniform = math.log(CLASSES)
    floor = report["floor"]
    by_device = len({row.get("device") for row in rows}) > 1
    plus_minus = " ±\u00a0" if book else " ± "  # a no-break space: wrapped, the cell reads 0.850 / ± 0.016
    real = "real MNIST" if book else f"real MNIST ({report['n']} training images)"
    lines = [list(TABLE_COLUMNS) + ["device"] * by_device,
             [real, "", "", f"{floor['fid_mnist']:.1f}",
              f"{floor['mean_confidence']:.3f}", f"{floor['share_confident']:.3f}",
              f"{floor['label_entropy'] / uniform:.3f}", ""] + [""] * by_device]
    for row in rows:
        sampler = row["sampler"] + (", " + SIGMA_LABELS[row["sigma"]] if row["sigma"] else "")
        model, device = row["model"], row.get("device") or "unrecorded"
        if book:  # "T500_rescaled", "GPU"
            sampler, model, device = typeset(sampler), model.removeprefix(MODEL_PREFIX), device_kind(row.get("device"))
        share = row["share_confident"]
        error = share_standard_error(share, row["n"])
        lines.append([model, sampler, str(row["steps"]), f"{row['fid_mnist']:.1f}",
                      f"{row['mean_confidence']:.3f}", f"{share:.3f}{plus_minus}{error:.3f}",
                      f"{row['label_entropy'] / uniform:.3f}", f"{1000 * row['seconds_per_sample']:.2f}"]
                     + [device] * by_device)
    return lines


def markdown_table(report, rows):
    """Rows of the report as a Markdown table, with the real-data floor as the first line (the book's tables)."""
    header, *lines = table_lines(report, rows, book=True)
    lines = [header, ["---"] * len(header)] + lines
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def text_table(report):
    """Every row of the report as aligned text, the real-data floor first (what ``dgm ablation`` prints)."""
    lines = table_lines(report, report["rows"])
    widths = [max(len(cells[column]) for cells in lines) for column in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(width) if column < 2 else cell.rjust(width)
                               for column, (cell, width) in enumerate(zip(cells, widths))).rstrip()
                     for cells in lines)
