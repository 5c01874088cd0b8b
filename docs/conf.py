"""Sphinx configuration of the scmvp_scvi documentation."""

import inspect
import os
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
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
]
# .rst first: autosummary writes rst
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
# tables written by benchmarks/ablation.py and joint_screen.py (included by ablation.md), markers.py
# (included by user_guide.md) and scaling.py (included by benchmarks.md)
exclude_patterns = [
    "_build",
    "**.ipynb_checkpoints",
    "tutorials/*_model",
    "tutorials/*.h5mu",
    "ablation_table.md",
    "ablation_fusion_table.md",
    "ablation_timing_table.md",
    "ablation_resolution_table.md",
    "screen_table.md",
    "markers_table.md",
    "scaling_table.md",
]
templates_path = ["_templates"]

# the notebooks are committed with their outputs and executed by the test workflow, not by the docs build
nb_execution_mode = "off"
myst_enable_extensions = ["amsmath", "colon_fence", "dollarmath"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_typehints = "signature"  # type hints in the signatures, linked through intersphinx
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "scipy": ("https://docs.scipy.org/doc/scipy", None),
    "pandas": ("https://pandas.pydata.org/docs", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable", None),
    "mudata": ("https://mudata.readthedocs.io/en/latest", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable", None),
    "muon": ("https://muon.readthedocs.io/en/latest", None),
    "scvi": ("https://docs.scvi-tools.org/en/stable", None),
    "torch": ("https://docs.pytorch.org/docs/stable", None),
    "lightning": ("https://lightning.ai/docs/pytorch/stable", None),
}
if os.environ.get("SCMVP_DOCS_OFFLINE"):  # a machine without internet: the links stay plain text
    intersphinx_mapping = {}

html_theme = "sphinx_book_theme"
html_title = "scmvp_scvi"


def _copy_tutorials(app) -> None:
    """Make the notebooks of ``tutorials/`` (the single source) part of the docs tree."""
    target = HERE / "tutorials"
    target.mkdir(exist_ok=True)
    for notebook in (HERE.parent / "tutorials").glob("*.ipynb"):
        shutil.copy2(notebook, target / notebook.name)


def _public_path(owner: type) -> str:
    """``scvi.model.base.BaseModelClass`` for a class defined in ``scvi.model.base._base_model``."""
    parts = owner.__module__.split(".")
    first_private = next((i for i, part in enumerate(parts) if part.startswith("_")), len(parts))
    return ".".join([*parts[:first_private], owner.__qualname__])


def _list_inherited_methods(app, what, name, obj, options, lines) -> None:
    """End the docstring of a package class with links to the public methods it inherits from other packages."""
    if what != "class" or not name.startswith(f"{project}."):
        return
    inherited = []
    for method, _ in inspect.getmembers(obj, callable):
        if method.startswith("_") or method in vars(obj):
            continue
        owner = next(c for c in obj.__mro__ if method in vars(c))
        if not owner.__module__.startswith(project):
            inherited.append(f":meth:`~{_public_path(owner)}.{method}`")
    if inherited:
        lines += ["", ".. rubric:: Inherited methods", "", "From the base classes: " + ", ".join(inherited) + "."]


def setup(app) -> None:
    """Copy the tutorials before Sphinx reads the sources; list inherited methods on class pages."""
    app.connect("builder-inited", _copy_tutorials)
    app.connect("autodoc-process-docstring", _list_inherited_methods)
