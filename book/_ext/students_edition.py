"""The students' edition of the handout: the same chapters without the exercises' solutions.

``make book-for-students`` sets ``DGM_STUDENTS_EDITION=1``. The chapters are then read from the full build's
execution cache, and every solution, gated ones with their code and figures included, is removed from the pages once
sphinx-exercise has assembled it and its references have been resolved (its own ``hide_solutions`` cannot remove a
gated solution).
"""

import os
from pathlib import Path

from sphinx_exercise.nodes import solution_node

FULL_BUILD_CACHE = Path(__file__).resolve().parents[2] / "_build" / ".jupyter_cache"


def students_edition(app, config):
    config.students_edition = os.environ.get("DGM_STUDENTS_EDITION") == "1"
    if config.students_edition:
        config.nb_execution_cache_path = str(FULL_BUILD_CACHE)
        config.html_copy_source = False  # the chapters' sources hold the solutions: neither copied nor offered
        config.html_show_sourcelink = False
        config.html_theme_options = {**config.html_theme_options, "use_download_button": False}


def remove_solutions(app, doctree, docname):
    if app.config.students_edition:
        for node in list(doctree.findall(solution_node)):
            node.parent.remove(node)


def setup(app):
    app.add_config_value("students_edition", False, "env")
    app.connect("config-inited", students_edition)
    app.connect("doctree-resolved", remove_solutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
