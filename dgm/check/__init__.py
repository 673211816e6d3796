"""Check a student's solutions to the problem set against the library and the exact 1-D toy, naming the mistake.

``dgm check PROBLEM FILE`` on the command line (``dgm.check.command``); ``check("1a")`` in the student notebook
checks the functions defined in it. The notebook and the template come from the handout (``dgm.check.exercises``).
"""

from dgm.check.command import check, main
from dgm.check.problems import PROBLEMS

__all__ = ["PROBLEMS", "check", "main"]
