"""The ``dgm`` command: one subcommand per task of the MNIST pipeline, each forwarding to its module's ``main``.

``dgm COMMAND [options]`` with the commands of ``COMMANDS`` below; ``dgm COMMAND --help`` lists a subcommand's
options. Modules are imported only when their subcommand runs.
"""

import difflib
import importlib
import sys
import warnings
from pathlib import Path

COMMANDS = {
    "prepare-data": ("dgm.data", "rebuild and verify MNIST offline (run by `make setup`)"),
    "train": ("dgm.train", "train a DDPM on MNIST (Problem 1d)"),
    "export": ("dgm.export", "copy a run's EMA weights and loss log into a small folder to ship"),
    "sample": ("dgm.sampling", "sample a trained run into a PNG grid"),
    "evaluate": ("dgm.evaluate", "FID-MNIST, confidence and label entropy of a run's samples"),
    "train-classifier": ("dgm.classifier", "train the evaluation classifier"),
    "learning-curve": ("dgm.learning_curve", "sample quality of a run's kept snapshots over training"),
    "ablation": ("dgm.ablation", "the MNIST ablation over T, respacing and DDIM (Problem 2)"),
    "toy-ablation": ("dgm.toy_ablation", "the 1-D toy's ablations (Problems 2-3)"),
    "check": ("dgm.check", "check your solutions to the problem set (exercises/), naming each mistake"),
}


def usage():
    width = max(map(len, COMMANDS))
    lines = [f"  {name:{width}s}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "usage: dgm COMMAND [options]   (dgm COMMAND --help for its options)\n\ncommands:\n" + "\n".join(lines)


PACKAGE = Path(__file__).resolve().parent
DEFAULT_FORMAT = warnings.formatwarning


def command_line_warning(message, category, filename, lineno, line=None):
    """A warning of the library as one line for the person at the terminal; one from their own code (a solution
    that ``dgm check`` runs) keeps its file and line."""
    if not Path(filename).resolve().is_relative_to(PACKAGE):
        return DEFAULT_FORMAT(message, category, filename, lineno, line)
    return f"warning: {message}\n"


def main(argv=None):
    """Dispatch ``argv`` (default: the command line) to the subcommand's ``main(remaining arguments)``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"dgm: unknown command {command!r}{guess}\n\n{usage()}", file=sys.stderr)
        return 2
    module, _ = COMMANDS[command]
    try:
        entry = importlib.import_module(module).main
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        print(f"dgm: {command!r} needs {module}, which this checkout does not have", file=sys.stderr)
        return 2
    formatwarning, warnings.formatwarning = warnings.formatwarning, command_line_warning
    try:
        entry(rest)
    except KeyboardInterrupt:  # `dgm train` says how to resume; both ablations keep the rows they finished
        print(f"dgm {command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning
    return 0
