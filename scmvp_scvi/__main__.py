"""``python -m scmvp_scvi`` runs the ``scmvp`` command line."""

from ._cli import main

main()
