"""The one place where the library finds this checkout's folders: shipped checkpoints, results, figures, runs, data,
the book and the exercises.

Every default path into the checkout is built from these; commands take the paths themselves as arguments. A new
training run's ``--out`` is relative to the working directory, like any output a command is given.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO_ROOT / "checkpoints"  # shipped weights (checkpoints/README.md)
RESULTS = REPO_ROOT / "results"  # shipped reports (results/README.md)
FIGURES = REPO_ROOT / "figures"  # every chapter figure, saved by the book's handout.save_figure
RUNS = REPO_ROOT / "runs"  # where quick trials write (git ignores it)
DATA = REPO_ROOT / "data"  # MNIST, rebuilt offline by `dgm prepare-data` (git ignores it)
BOOK = REPO_ROOT / "book"  # the handout's sources, which `dgm check` reads its exercises from
EXERCISES = REPO_ROOT / "exercises"  # the student notebook and template (`make exercises`)

MODELS = tuple(CHECKPOINTS / f"ddpm_mnist_T{T}" for T in (500, 1000, 2000))  # the gpu preset at three T
RESCALED_MODELS = tuple(CHECKPOINTS / f"ddpm_mnist_T{T}_rescaled" for T in (500, 2000))  # betas scaled by 1000 / T
CPU_PRESET_MODEL = CHECKPOINTS / "ddpm_mnist_cpu_preset"  # the cpu preset, T = 1000
