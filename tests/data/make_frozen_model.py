"""Write the frozen model fixture of this release under tests/data/frozen_model_<version>/.

Run once per release that changes the saved format; never regenerate an existing fixture: the tests load every
fixture kept here with the current code, so a model saved by an old release keeps loading.

    python tests/data/make_frozen_model.py
"""

import json
from pathlib import Path

import numpy as np
import scvi

import scmvp_scvi

HERE = Path(__file__).resolve().parent


def main() -> None:
    target = HERE / f"frozen_model_{scmvp_scvi.__version__}"
    if target.exists():
        raise SystemExit(f"{target} exists; fixtures are frozen once written.")
    scvi.settings.seed = 0
    # the fixture keeps no data: the test rebuilds it from this seeded recipe
    recipe = {"n_cells": 120, "n_genes": 30, "n_peaks": 60, "n_cell_types": 3, "seed": 7}
    mdata = scmvp_scvi.data.synthetic_paired(**recipe)
    scmvp_scvi.SCMVP.setup_mudata(mdata)
    model = scmvp_scvi.SCMVP(mdata, n_latent=5, n_hidden=32, n_heads=4)
    model.train(max_epochs=3, pretrain_epochs=3, accelerator="cpu", enable_progress_bar=False)
    model.save(str(target / "model"), save_anndata=False)
    rna, atac = model.get_imputed_values(layer_key=None)
    cells, columns = 5, 8
    expected = {
        "data": {"generator": "scmvp_scvi.data.synthetic_paired", **recipe},
        "first_cells": cells,
        "latent": np.round(model.get_latent_representation(key_added=None)[:cells].astype(float), 6).tolist(),
        "rna_imputed": np.round(rna[:cells, :columns].astype(float), 6).tolist(),
        "atac_imputed": np.round(atac[:cells, :columns].astype(float), 6).tolist(),
        "clusters": model.get_cluster_assignments(key_added=None).astype(str).tolist(),
    }
    (target / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
