"""The students' edition of the handout: the same chapters without the exercises' solutions.

``make book-for-students`` sets ``DGM_STUDENTS_EDITION=1``. The chapters are then read from the full build's
execution cache, and every solution, gated ones with their code and figures included, is removed from the chapters as
they are read (sphinx-exercise's own ``hide_solutions`` cannot remove a gated one).
"""

import os
from pathlib import Path

from docutils import nodes
from sphinx.transforms import SphinxTransform
from sphinx_exercise.nodes import solution_node

FULL_BUILD_CACHE = Path(__file__).resolve().parents[2] / "_build" / ".jupyter_cache"


def students_edition(app, config):
    config.students_edition = os.environ.get("DGM_STUDENTS_EDITION") == "1"
    if config.students_edition:
        config.nb_execution_cache_path = str(FULL_BUILD_CACHE)
        config.html_copy_source = False  # the chapters' sources hold the solutions: neither copied nor offered
        config.html_show_sourcelink = False
        config.html_theme_options = {**config.html_theme_options, "use_download_button": False}


class RemoveSolutions(SphinxTransform):
    """Remove every solution as the chapter is read, after sphinx-exercise has assembled the gated ones (priority
    10) and before figures are numbered and labels registered, so that the edition keeps no trace of them."""

    default_priority = 20

    def apply(self):
        if not self.config.students_edition:
            return
        for solution in list(self.document.findall(solution_node)):
            for node in solution.findall(nodes.Element):
                for name in node["names"]:
                    self.document.nameids.pop(name, None)
                    self.document.nametypes.pop(name, None)
                for node_id in node["ids"]:
                    self.document.ids.pop(node_id, None)
            solution.parent.remove(solution)


def setup(app):
    app.add_config_value("students_edition", False, "env")
    app.connect("config-inited", students_edition)
    app.add_transform(RemoveSolutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
