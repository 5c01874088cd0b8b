import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.image import AxesImage
from matplotlib.patches import Polygon, Rectangle

from scmvp_scvi import pl


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def trained(demo_data_and_model):
    mdata, model = demo_data_and_model
    model.get_cluster_assignments()
    model.get_imputed_values()
    return mdata, model


def test_training_history_draws_every_logged_term(trained, tmp_path):
    _, model = trained
    fig = pl.training_history(model, save=tmp_path / "history.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["total loss", "RNA reconstruction (NLL)", "ATAC reconstruction (NLL)"]
    assert "cycle-consistency KL" in titles and len(titles) == 9
    (train_line,) = fig.axes[0].get_lines()  # trained without validation cells
    np.testing.assert_allclose(train_line.get_ydata(), model.history["train_loss"].iloc[:, 0].to_numpy())
    # the cycle term exists only in joint training, drawn at the joint epochs
    phases = model.history["training_phase"]["training_phase"]
    cycle_ax = fig.axes[titles.index("cycle-consistency KL")]
    np.testing.assert_array_equal(cycle_ax.get_lines()[0].get_xdata(), phases.index[phases == "joint"])
    shaded = [patch for patch in fig.axes[0].patches if isinstance(patch, Polygon | Rectangle)]
    assert len(shaded) == 1
    assert (tmp_path / "history.png").read_bytes()[:4] == b"\x89PNG"


def test_training_history_draws_validation_when_logged(trained):
    _, model = trained
    history = dict(model.history)
    history["validation_loss"] = history["train_loss"] * 1.1
    train_line, valid_line = pl.training_history(history, ["loss"]).axes[0].get_lines()
    np.testing.assert_allclose(valid_line.get_ydata(), 1.1 * train_line.get_ydata())
    assert len(pl.training_history(history, ["loss"], validation=False).axes[0].get_lines()) == 1


def test_training_history_chosen_terms_and_errors(trained):
    _, model = trained
    fig = pl.training_history(model.history, ["nll_rna_train", "kl_prior"], validation=False)
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1]
    with pytest.raises(ValueError, match=r"\['elbo_typo'\] were not logged; the history has"):
        pl.training_history(model, ["elbo_typo"])
    with pytest.raises(ValueError, match="train the model first"):
        pl.training_history({})


def test_cluster_probabilities_heatmap_is_the_group_mean(trained, tmp_path):
    mdata, _ = trained
    fig = pl.cluster_probabilities(mdata, groupby="cell_type", save=tmp_path / "clusters.pdf")
    heat, hist = fig.axes[0], fig.axes[1]
    image = next(child for child in heat.get_children() if isinstance(child, AxesImage))
    probs = mdata.obsm["scmvp_cluster_probs"]
    groups = mdata.obs["cell_type"].astype(str)
    expected = np.stack([probs[(groups == g).to_numpy()].mean(axis=0) for g in sorted(groups.unique())])
    # float32 means summed in another order differ in the last bits: compare with an absolute floor
    np.testing.assert_allclose(image.get_array(), expected, rtol=1e-5, atol=1e-8)
    assert [label.get_text() for label in heat.get_yticklabels()] == sorted(groups.unique())
    assert sum(bar.get_height() for bar in hist.patches) == mdata.n_obs
    assert (tmp_path / "clusters.pdf").read_bytes()[:4] == b"%PDF"
    # without groupby, rows are the SCMVP clusters and each row is dominated by its own cluster
    image = pl.cluster_probabilities(mdata).axes[0].get_images()[0].get_array()
    assert image.shape[0] == mdata.obs["scmvp_cluster"].nunique()


def test_cluster_probabilities_errors(trained):
    mdata, _ = trained
    with pytest.raises(ValueError, match=r"run model\.get_cluster_assignments"):
        pl.cluster_probabilities(mdata, key="other")
    with pytest.raises(ValueError, match="groupby 'tissue' is not a column"):
        pl.cluster_probabilities(mdata, groupby="tissue")


def test_imputed_vs_observed_boxes_follow_the_counts(trained):
    mdata, _ = trained
    rna = mdata["rna"]
    genes = list(rna.var_names[:3])
    fig = pl.imputed_vs_observed(mdata, genes, max_count=2)
    assert len(fig.axes) == 3
    observed = np.asarray(rna[:, genes[0]].X.toarray()).ravel()
    imputed = rna[:, genes[0]].layers["scmvp_imputed"].ravel()
    bins = np.minimum(observed, 2)
    medians = [line.get_ydata()[0] for line in fig.axes[0].lines if line.get_gid() == "median"]
    expected = [np.median(imputed[bins == b]) for b in sorted(set(bins))]
    np.testing.assert_allclose(medians, expected, rtol=1e-5)
    assert fig.axes[0].get_title().startswith(f"{genes[0]}\nSpearman ")
    assert fig.axes[0].get_xticklabels()[-1].get_text() == f"2+\nn={int((bins == 2).sum()):,}"
    # the imputation of the demo model rises with the observed count
    assert np.median(imputed[bins == 2]) > np.median(imputed[bins == 0])


def test_imputed_vs_observed_on_one_modality_and_errors(trained):
    mdata, _ = trained
    atac = mdata["atac"]
    fig = pl.imputed_vs_observed(atac, atac.var_names[0], ncols=1)
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match=r"Features \['not_a_gene'\] are not in the var_names of 'rna'"):
        pl.imputed_vs_observed(mdata, ["not_a_gene"])
    with pytest.raises(ValueError, match="Layer 'denoised' not found"):
        pl.imputed_vs_observed(mdata, mdata["rna"].var_names[:1], layer="denoised")
