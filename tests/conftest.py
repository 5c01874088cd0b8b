import pytest
import scvi

import scmvp_scvi

# small enough for seconds-long training on 2 CPU cores
SMALL = {"n_cells": 300, "n_genes": 80, "n_peaks": 300, "n_cell_types": 3}
FAST_TRAIN = {"accelerator": "cpu", "enable_progress_bar": False}


@pytest.fixture
def fast_train():
    return dict(FAST_TRAIN)


@pytest.fixture(autouse=True)
def _seed():
    scvi.settings.seed = 0


@pytest.fixture
def small_mdata():
    return scmvp_scvi.data.synthetic_paired(**SMALL, seed=1)


@pytest.fixture(scope="session")
def demo_data_and_model():
    """The demo-sized synthetic data with a model trained by the default recipe (shared by several tests)."""
    scvi.settings.seed = 0
    mdata = scmvp_scvi.data.synthetic_paired(seed=0)
    scmvp_scvi.SCMVP.setup_mudata(mdata)
    model = scmvp_scvi.SCMVP(mdata)
    model.train(**FAST_TRAIN)
    return mdata, model
