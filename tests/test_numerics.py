"""No NaN or inf in loss, latent or imputations across seeds, at the default and a 10x larger learning rate."""

import numpy as np
import pytest
import scvi

import scmvp_scvi
from scmvp_scvi import SCMVP


@pytest.mark.parametrize("lr", [5e-3, 5e-2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_stays_finite(seed, lr):
    scvi.settings.seed = seed
    mdata = scmvp_scvi.data.synthetic_paired(n_cells=200, n_genes=40, n_peaks=120, n_cell_types=3, seed=seed)
    SCMVP.setup_mudata(mdata)
    model = SCMVP(mdata, n_hidden=32, n_heads=4)
    model.train(max_epochs=3, pretrain_epochs=3, lr=lr, accelerator="cpu", enable_progress_bar=False)
    for name, frame in model.history.items():
        if name != "training_phase":
            values = frame.to_numpy(dtype=float)
            assert np.isfinite(values[~np.isnan(values)]).all(), name
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    assert np.isfinite(model.get_latent_representation(key_added=None)).all()
    rna, atac = model.get_imputed_values(layer_key=None)
    assert np.isfinite(rna).all() and np.isfinite(atac).all()
