"""Sphinx configuration of the scmvp_scvi documentation."""

import shutil
from datetime import date
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).parent

project = "scmvp_scvi"
author = "scmvp_scvi developers"
copyright = f"{date.today().year}, {author}"
release = metadata.version("scmvp_scvi")
version = release

extensions = [
    "myst_nb",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
]
# .rst first: autosummary writes rst
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
# ablation_table.md is written by benchmarks/ablation.py and included by ablation.md
exclude_patterns = ["_build", "**.ipynb_checkpoints", "tutorials/*_model", "tutorials/*.h5mu", "ablation_table.md"]
templates_path = ["_templates"]

# the notebooks are committed with their outputs and executed by the test workflow, not by the docs build
nb_execution_mode = "off"
myst_enable_extensions = ["amsmath", "colon_fence", "dollarmath"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_typehints = "none"  # numpydoc renders the types written in the docstrings
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

html_theme = "sphinx_book_theme"
html_title = "scmvp_scvi"


def _copy_tutorials(app) -> None:
    """Make the notebooks of ``tutorials/`` (the single source) part of the docs tree."""
    target = HERE / "tutorials"
    target.mkdir(exist_ok=True)
    for notebook in (HERE.parent / "tutorials").glob("*.ipynb"):
        shutil.copy2(notebook, target / notebook.name)


def setup(app) -> None:
    """Copy the tutorials before Sphinx reads the sources."""
    app.connect("builder-inited", _copy_tutorials)
