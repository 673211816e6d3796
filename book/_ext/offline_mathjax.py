"""Serve MathJax from the built site, so the handout renders math offline.

MathJax 3 comes from the PyPI package ``sphinx-mathjax-offline`` (installed by requirements.txt), not from a copy in
this repository. That package would copy all 24 MB of MathJax into every build; this extension copies only what the
TeX-to-CommonHTML bundle loads (about 3 MB): the bundle, its web fonts, the TeX extensions it may autoload, and the
menu and accessibility components it fetches on start-up.
"""

import importlib.util
from pathlib import Path

from sphinx.util.fileutil import copy_asset

NEEDED = ("tex-chtml.js", "output/chtml/fonts", "input/tex/extensions", "ui", "a11y")


def mathjax_source():
    """The MathJax folder inside the installed ``sphinx-mathjax-offline`` package."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("sphinx-mathjax-offline is not installed: run `make setup` (pip install -r requirements.txt)")
    return Path(spec.origin).parent / "static" / "mathjax"


def copy_mathjax(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    source, target = mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    for part in NEEDED:
        destination = target / part
        if (source / part).is_dir():
            copy_asset(str(source / part), str(destination))
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            copy_asset(str(source / part), str(destination.parent))


def setup(app):
    mathjax_source()  # fail early, with the fix, if the package is missing
    app.config.mathjax_path = "mathjax/tex-chtml.js"
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
