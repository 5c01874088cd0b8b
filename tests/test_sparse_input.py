"""The ATAC encoders' first layers computed from the non-zero entries equal the dense products."""

import copy

import numpy as np
import pytest
import scvi
import torch
from scvi import REGISTRY_KEYS

import scmvp_scvi._module as module_code
from scmvp_scvi import SCMVP
from scmvp_scvi._components import DenseBlock
from scmvp_scvi._modalities import OBSERVED_MODALITIES_KEY
from scmvp_scvi._module import SCMVPModule
from scmvp_scvi._sparse_input import NonZeroEntries, non_zero_entries


def _sparse_counts(n_obs, n_features, density, seed=0):
    generator = torch.Generator().manual_seed(seed)
    open_ = torch.rand(n_obs, n_features, generator=generator) < density
    return open_ * torch.randint(1, 4, (n_obs, n_features), generator=generator).float()


def test_non_zero_entries_describe_the_matrix_and_keep_dense_inputs_dense():
    x = _sparse_counts(20, 300, 0.01)
    entries = non_zero_entries(x)
    assert isinstance(entries, NonZeroEntries) and entries.n_obs == 20
    assert len(entries.values) == int((x != 0).sum()) and (entries.values != 0).all()
    dense = torch.zeros_like(x)
    dense[entries.rows, entries.cols] = entries.values
    assert torch.equal(dense, x)
    # too dense for the gathered product, or not on the CPU: the dense matrix goes as it is
    assert non_zero_entries(_sparse_counts(20, 300, 0.3)) is None
    assert non_zero_entries(torch.zeros(20, 300, device="meta")) is None


def test_sparse_first_layer_equals_the_dense_one_with_covariates():
    torch.manual_seed(0)
    # batch (3 categories), an ignored single-category covariate, then one of 4 categories
    block = DenseBlock(200, 16, n_cat_list=[3, 1, 4], dropout_rate=0.0, sparse_input=True)
    plain = DenseBlock(200, 16, n_cat_list=[3, 1, 4], dropout_rate=0.0)
    linear = block.linear.fc_layers[0][0]
    # stored feature-major, and saved under the name and shape scvi-tools' FCLayers gives the weight
    assert linear.weight_by_feature.shape == (207, 16) and linear.weight_by_feature.is_contiguous()
    assert {k: v.shape for k, v in block.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    # state dicts go both ways between the two layouts
    plain.load_state_dict(block.state_dict())
    torch.testing.assert_close(plain.linear.fc_layers[0][0].weight, linear.weight)
    copy.deepcopy(block).load_state_dict(plain.state_dict())
    x = _sparse_counts(30, 200, 0.02)
    covariates = (torch.randint(0, 3, (30, 1)), torch.zeros(30, 1, dtype=torch.long), torch.randint(0, 4, (30, 1)))
    dense_block = copy.deepcopy(block)
    sparse_out = block(non_zero_entries(x, max_density=1.0), *covariates)
    dense_out = dense_block(x, *covariates)
    torch.testing.assert_close(sparse_out, dense_out)
    (sparse_out**2).sum().backward()
    (dense_out**2).sum().backward()
    for (name, sparse_param), dense_param in zip(block.named_parameters(), dense_block.parameters(), strict=True):
        torch.testing.assert_close(sparse_param.grad, dense_param.grad, rtol=1e-4, atol=1e-4, msg=name)
    torch.testing.assert_close(plain(x, *covariates), dense_out.detach())


def _minibatch(n_obs=40, n_genes=30, n_peaks=500, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        REGISTRY_KEYS.X_KEY: torch.poisson(torch.full((n_obs, n_genes), 2.0), generator=generator),
        REGISTRY_KEYS.ATAC_X_KEY: _sparse_counts(n_obs, n_peaks, 0.01, seed),
        REGISTRY_KEYS.BATCH_KEY: torch.randint(0, 2, (n_obs, 1), generator=generator),
    }


@pytest.mark.parametrize("joint", [False, True], ids=["pretraining", "joint"])
@pytest.mark.parametrize("encoder_input", ["normalized", "counts", "mosaic"])
def test_training_step_on_sparse_atac_equals_the_dense_one(monkeypatch, joint, encoder_input):
    torch.manual_seed(0)
    idf = torch.linspace(1.0, 5.0, 500)
    mosaic = encoder_input == "mosaic"
    module = SCMVPModule(
        30,
        500,
        n_batch=2,
        n_hidden=32,
        n_heads=4,
        n_latent=5,
        encoder_input="normalized" if mosaic else encoder_input,
        library_fill=(4.0, 2.0) if mosaic else None,
    )
    if encoder_input != "counts":
        module.atac_idf.copy_(idf)
    if joint:
        module.initialize_gmm(torch.randn(3, 5), torch.ones(3, 5), torch.full((3,), 1 / 3))
    tensors = _minibatch()
    if mosaic:  # paired, RNA-only (no ATAC counts) and ATAC-only (no RNA counts) cells
        kinds = torch.arange(40).reshape(-1, 1) % 3
        tensors[REGISTRY_KEYS.ATAC_X_KEY][kinds[:, 0] == 1] = 0
        tensors[REGISTRY_KEYS.X_KEY][kinds[:, 0] == 2] = 0
        tensors[OBSERVED_MODALITIES_KEY] = kinds
    found = []
    real = module_code.non_zero_entries

    def step(sparse: bool):
        model = copy.deepcopy(module).train()
        monkeypatch.setattr(module_code, "non_zero_entries", lambda x: found.append(x) or (real(x) if sparse else None))
        torch.manual_seed(1)
        _, _, losses = model(tensors)
        losses.loss.backward()
        return losses.loss, model

    sparse_loss, sparse_model = step(sparse=True)
    dense_loss, dense_model = step(sparse=False)
    assert found and all(x is tensors[REGISTRY_KEYS.ATAC_X_KEY] for x in found)
    torch.testing.assert_close(sparse_loss, dense_loss)
    # the same sums in another order: equal up to float rounding (parameters whose gradient is itself rounding
    # noise differ relatively more, so the gradient is compared as a whole and per peak layer)
    names = [name for name, param in dense_model.named_parameters() if param.grad is not None]
    sparse_grads = dict(sparse_model.named_parameters())
    sparse_all = torch.cat([sparse_grads[name].grad.reshape(-1) for name in names])
    dense_all = torch.cat([param.grad.reshape(-1) for param in dense_model.parameters() if param.grad is not None])
    assert (sparse_all - dense_all).norm() <= 1e-5 * dense_all.norm()
    for name in names:
        if name.endswith("weight_by_feature"):
            sparse_grad, dense_grad = sparse_grads[name].grad, dense_model.get_parameter(name).grad
            assert (sparse_grad - dense_grad).norm() <= 1e-3 * dense_grad.norm(), name
    for sparse_buffer, dense_buffer in zip(sparse_model.buffers(), dense_model.buffers(), strict=True):
        torch.testing.assert_close(sparse_buffer, dense_buffer)


def test_saved_models_keep_the_feature_major_layout(tmp_path):
    from scmvp_scvi.data import synthetic_paired

    mdata = synthetic_paired(n_cells=200, n_genes=40, n_peaks=400, n_cell_types=3, atac_open_fraction=0.01, seed=0)
    SCMVP.setup_mudata(mdata)
    model = SCMVP(mdata, n_latent=4, n_hidden=16)
    model.train(max_epochs=1, pretrain_epochs=1, batch_size=50, accelerator="cpu", enable_progress_bar=False)
    model.save(tmp_path / "model")
    loaded = SCMVP.load(str(tmp_path / "model"), mdata, accelerator="cpu")
    for encoder in (loaded.module.atac_encoder.branch, loaded.module.joint_encoder.atac_branch):
        assert encoder.dense.linear.fc_layers[0][0].weight_by_feature.shape == (400, 16)
    np.testing.assert_allclose(
        loaded.get_latent_representation(key_added=None), model.get_latent_representation(key_added=None), atol=1e-6
    )


def test_query_mapping_trains_only_the_covariate_rows_of_the_peak_layers():
    block = DenseBlock(50, 8, n_cat_list=[3], dropout_rate=0.0, sparse_input=True)
    block.linear.set_online_update_hooks()
    x = _sparse_counts(10, 50, 0.05)
    batch = torch.randint(0, 3, (10, 1))
    for inputs in (x, non_zero_entries(x, max_density=1.0)):
        block.zero_grad()
        block(inputs, batch).square().sum().backward()
        grad = block.linear.fc_layers[0][0].weight_by_feature.grad
        assert (grad[:50] == 0).all() and (grad[50:] != 0).any()
        assert (block.linear.fc_layers[0][0].bias.grad == 0).all()


def test_training_on_sparse_atac_recovers_the_cell_types_as_the_dense_product_does(monkeypatch):
    from sklearn.metrics import adjusted_rand_score

    from scmvp_scvi.data import synthetic_paired

    mdata = synthetic_paired(n_cells=600, n_genes=80, n_peaks=2000, n_cell_types=4, atac_open_fraction=0.01, seed=1)
    SCMVP.setup_mudata(mdata)
    real = module_code.non_zero_entries
    calls = []

    def train(sparse: bool) -> tuple[np.ndarray, np.ndarray]:
        entries = (lambda x: calls.append(True) or real(x)) if sparse else (lambda x: calls.append(False))
        monkeypatch.setattr(module_code, "non_zero_entries", entries)
        scvi.settings.seed = 0
        model = SCMVP(mdata, n_latent=6, n_hidden=32, n_centroids=4)
        model.train(max_epochs=4, pretrain_epochs=4, batch_size=64, accelerator="cpu", enable_progress_bar=False)
        return model.get_latent_representation(key_added=None), model.get_cluster_assignments(key_added=None)

    sparse_latent, sparse_clusters = train(sparse=True)
    dense_latent, dense_clusters = train(sparse=False)
    assert True in calls and False in calls
    labels = mdata.obs["cell_type"].to_numpy()
    assert adjusted_rand_score(labels, sparse_clusters) > 0.8
    assert adjusted_rand_score(sparse_clusters, dense_clusters) > 0.9
    # the same training up to float rounding: latents agree coordinate by coordinate
    correlation = [np.corrcoef(sparse_latent[:, k], dense_latent[:, k])[0, 1] for k in range(6)]
    assert min(correlation) > 0.99, correlation
