import math

import numpy as np
import pytest
import scvi
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from scmvp_scvi._components import GaussianMixturePrior, HiddenUnitSelfAttention, TwoChannelDecoder
from scmvp_scvi._gmm_init import cluster_statistics
from scmvp_scvi._likelihoods import observation_model


def log_likelihood(likelihood, x, mu, theta=None, zi_logits=None):
    """Per-cell log-likelihood of ``x`` under the observation model."""
    return observation_model(likelihood, mu, theta, zi_logits).log_prob(x).sum(-1)


def probability_nonzero(likelihood, mu, theta=None, zi_logits=None):
    return observation_model(likelihood, mu, theta, zi_logits).prob_nonzero()


def _prior(k=4, d=3, seed=0):
    torch.manual_seed(seed)
    prior = GaussianMixturePrior(k, d)
    with torch.no_grad():
        prior.means.normal_(0, 3)
        prior.log_vars.normal_(0, 0.5)
        prior.logits.normal_()
    return prior


def test_responsibilities_are_normalised_and_informative_far_away():
    prior = _prior()
    z = torch.randn(50, 3)
    gamma = prior.log_responsibilities(z).exp()
    assert torch.allclose(gamma.sum(-1), torch.ones(50), atol=1e-5)

    # far from every component: densities underflow in probability space, but not in log space
    far = prior.means[1:2].detach() + 1e4
    assert torch.all(prior.log_component_densities(far).exp() == 0)
    gamma_far = prior.log_responsibilities(far).exp()
    assert torch.isclose(gamma_far.sum(), torch.tensor(1.0))
    assert gamma_far.max() > 0.99  # a confident assignment, not the uniform 1/K of the reference code
    expected = (prior.log_component_densities(far) + torch.log_softmax(prior.logits, -1)).argmax()
    assert gamma_far.argmax() == expected


def test_mixture_weights_and_variances_valid_by_construction():
    prior = GaussianMixturePrior(5, 2)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([-30.0, 5.0, -2.0, 0.0, 100.0]))
        prior.log_vars.fill_(-50.0)
    assert torch.isclose(prior.weights.sum(), torch.tensor(1.0))
    assert torch.all(prior.weights >= 0)
    assert torch.all(prior.variances > 0)


def test_vade_kl_matches_monte_carlo():
    """The closed-form KL uses the posterior variance (not its log) exactly as VaDE prescribes."""
    prior = _prior(k=3, d=2, seed=1)
    qz = Normal(torch.tensor([[0.5, -1.0]]), torch.tensor([[0.7, 1.3]]))
    log_gamma = torch.log_softmax(torch.tensor([[0.2, -1.0, 1.5]]), -1)
    closed_form = prior.kl_divergence(qz, log_gamma)

    torch.manual_seed(0)
    z = qz.sample((200_000,))  # (S, 1, D)
    gamma = log_gamma.exp()
    log_pz_c = prior.log_component_densities(z)  # (S, 1, K)
    log_pi = torch.log_softmax(prior.logits, -1)
    mc = qz.log_prob(z).sum(-1) - (gamma * (log_pz_c + log_pi - log_gamma)).sum(-1)
    assert torch.allclose(closed_form, mc.mean(0), rtol=0.02)


def test_set_parameters_round_trip():
    prior = GaussianMixturePrior(2, 3)
    means = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    variances = torch.tensor([[0.5, 1.0, 2.0], [1.0, 1.0, 0.1]])
    prior.set_parameters(means, variances, torch.tensor([0.25, 0.75]))
    assert torch.allclose(prior.means, means)
    assert torch.allclose(prior.variances, variances, rtol=1e-5)
    assert torch.allclose(prior.weights, torch.tensor([0.25, 0.75]))


def test_cluster_statistics_handle_singletons():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(41, 4))
    labels = np.r_[np.zeros(40, int), 1]  # cluster 1 is a single cell
    means, variances, weights = cluster_statistics(latent, labels)
    assert means.shape == variances.shape == (2, 4)
    assert np.all(np.isfinite(variances)) and np.all(variances > 0)
    np.testing.assert_allclose(means[1], latent[40])
    np.testing.assert_allclose(weights, [40 / 41, 1 / 41])


def test_self_attention_matches_per_head_formula():
    torch.manual_seed(0)
    attention = HiddenUnitSelfAttention(16, n_heads=4, dropout_rate=0.0)
    h = torch.randn(5, 16)
    out = attention(h)
    assert out.shape == h.shape
    q, k, v = attention.query(h), attention.key(h), attention.value(h)
    for head in range(4):
        units = slice(4 * head, 4 * head + 4)
        weights = torch.softmax(q[:, units, None] * k[:, None, units], dim=-1)  # every unit attends to its head
        assert torch.allclose(out[:, units], (weights @ v[:, units, None]).squeeze(-1), atol=1e-6)


def test_self_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        HiddenUnitSelfAttention(100, n_heads=8)


def test_decoder_gate_changes_output_and_neutral_gate():
    torch.manual_seed(0)
    decoder = TwoChannelDecoder(4, 16, 10, 12, 4, 3, None, False, True).eval()
    z = torch.randn(6, 4)
    neutral = decoder.gate(None, 6)
    assert torch.all(neutral == 0.5)
    gamma_a = torch.eye(3)[[0, 0, 0, 1, 1, 1]]
    gamma_b = torch.eye(3)[[2, 2, 2, 2, 2, 2]]
    rho_a, _ = decoder.rna(z, decoder.gate(gamma_a, 6))
    rho_b, _ = decoder.rna(z, decoder.gate(gamma_b, 6))
    assert torch.allclose(rho_a.sum(-1), torch.ones(6))
    assert not torch.allclose(rho_a, rho_b)
    alpha, dropout = decoder.atac(z, neutral)
    assert alpha.shape == dropout.shape == (6, 12)


def test_decoder_stacks_several_latents_like_separate_calls():
    """Latents passed as a tuple get their own hidden layers and batch statistics; only the output layer is shared."""
    torch.manual_seed(0)
    decoder = TwoChannelDecoder(4, 16, 10, 12, 4, 3, None, True, True).train()
    z_a, z_b = torch.randn(6, 4), torch.randn(6, 4) * 3 + 1
    gate = decoder.gate(None, 6)
    for channel in (decoder.rna, decoder.atac):
        torch.manual_seed(1)
        scale, dropout = channel((z_a, z_b), (gate, gate))
        torch.manual_seed(1)
        separate = [channel(z, gate) for z in (z_a, z_b)]
        assert scale.shape == (12, dropout.shape[1])
        assert torch.allclose(scale, torch.cat([part[0] for part in separate]), atol=1e-6)
        assert torch.allclose(dropout, torch.cat([part[1] for part in separate]), atol=1e-5)


def test_poisson_cell_log_prob_from_scale_and_library_matches_the_dense_formula():
    """The Poisson built from scale and library sums over cells without forming every mean, in value and gradient."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 30, generator=generator, requires_grad=True)
    library = torch.rand(8, 1, generator=generator) * 3
    x = torch.poisson(torch.full((8, 30), 0.3), generator=generator)
    x[0] = 0  # a cell without counts
    scale = torch.softmax(logits, -1)
    lazy = observation_model("poisson", None, scale=scale, library=library)
    expected = torch.distributions.Poisson(torch.exp(library) * scale).log_prob(x).sum(-1)
    observed = lazy.cell_log_prob(x)
    assert torch.allclose(observed, expected, rtol=1e-5, atol=1e-4)
    weights = torch.randn(8, generator=generator)
    grad = torch.autograd.grad((observed * weights).sum(), logits, retain_graph=True)[0]
    expected_grad = torch.autograd.grad((expected * weights).sum(), logits)[0]
    assert torch.allclose(grad, expected_grad, rtol=1e-4, atol=1e-5)
    assert torch.allclose(lazy.mu, torch.exp(library) * scale)
    with pytest.raises(ValueError, match="scale and library"):
        observation_model("poisson", None, scale=scale)


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson", "zip"])
def test_count_likelihoods_are_normalised(likelihood):
    mu = torch.tensor([[0.3, 2.0, 7.0]])
    theta = torch.tensor([0.5, 2.0, 10.0])
    zi = torch.tensor([[-1.0, 0.0, 2.0]])
    x = torch.arange(0, 200, dtype=torch.float32)[:, None].expand(200, 3)
    log_p = torch.stack(
        [log_likelihood(likelihood, x[:, j : j + 1], mu[:, j], theta[j : j + 1], zi[:, j]) for j in range(3)], -1
    )
    assert torch.allclose(log_p.exp().sum(0), torch.ones(3), atol=1e-4)
    # probability of a non-zero count agrees with 1 - P(0)
    p_nonzero = probability_nonzero(likelihood, mu, theta, zi)
    assert torch.allclose(p_nonzero[0], 1 - log_p[0].exp(), atol=1e-5)


@pytest.mark.parametrize("likelihood", ["poisson", "zip", "bernoulli", "nb"])
def test_sparse_evaluation_matches_dense_formula(likelihood):
    """Likelihoods that evaluate their non-zero branch on the non-zeros only equal the dense textbook formula,
    in value and gradient, also when x is mostly zeros or has no zero at all."""
    generator = torch.Generator().manual_seed(0)
    for density in (0.01, 0.3, 1.0):
        counts = torch.poisson(torch.full((40, 50), 2.0), generator=generator)
        x = counts * (torch.rand(40, 50, generator=generator) < density)
        mu = (torch.rand(40, 50, generator=generator) * 5 + 1e-3).requires_grad_()
        zi = (torch.randn(40, 50, generator=generator) * 2).requires_grad_()
        theta = (torch.rand(50, generator=generator) * 3 + 0.1).requires_grad_()
        poisson = torch.distributions.Poisson(mu).log_prob(x)
        if likelihood == "nb":  # scvi-tools' dense formula
            expected = scvi.distributions.NegativeBinomial(mu=mu, theta=theta).log_prob(x)
        elif likelihood == "poisson":
            expected = poisson
        elif likelihood == "zip":
            log_pi, log_not_pi = -F.softplus(-zi), -F.softplus(zi)
            expected = torch.where(x > 0, log_not_pi + poisson, torch.logaddexp(log_pi, log_not_pi - mu))
        else:
            expected = torch.where(x > 0, torch.log1p(-torch.exp(-mu)), -mu)
        observed = log_likelihood(likelihood, x, mu, theta, zi_logits=zi)
        assert torch.allclose(observed, expected.sum(-1), rtol=1e-5, atol=1e-4)
        weights = torch.randn(40, generator=generator)
        grads = torch.autograd.grad((observed * weights).sum(), (mu, zi, theta), allow_unused=True)
        expected_grads = torch.autograd.grad((expected.sum(-1) * weights).sum(), (mu, zi, theta), allow_unused=True)
        for grad, expected_grad in zip(grads, expected_grads, strict=True):
            if expected_grad is not None:
                assert torch.allclose(grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_bernoulli_cloglog_likelihood():
    mu = torch.tensor([[0.1, 1.0, 5.0]])
    p_open = probability_nonzero("bernoulli", mu)
    assert torch.allclose(p_open, 1 - torch.exp(-mu))
    x = torch.tensor([[3.0, 0.0, 1.0]])  # counts are binarised
    expected = math.log(p_open[0, 0]) + math.log(1 - p_open[0, 1]) + math.log(p_open[0, 2])
    assert torch.isclose(log_likelihood("bernoulli", x, mu), torch.tensor([expected]), atol=1e-5)


def test_cluster_balance_term_spreads_cells():
    """Minimising the balance term favours cells spread over clusters, not collapsed into one."""
    from scmvp_scvi._module import SCMVPModule

    confident = torch.full((6, 3), 1e-6)
    spread, collapsed = confident.clone(), confident.clone()
    spread[torch.arange(6), torch.arange(6) % 3] = 1.0
    collapsed[:, 0] = 1.0
    log_spread = torch.log(spread / spread.sum(-1, keepdim=True))
    log_collapsed = torch.log(collapsed / collapsed.sum(-1, keepdim=True))
    _, sharp_spread, balance_spread = SCMVPModule.cluster_terms(log_spread, log_spread)
    _, sharp_collapsed, balance_collapsed = SCMVPModule.cluster_terms(log_collapsed, log_collapsed)
    assert torch.all(balance_spread < balance_collapsed)
    assert torch.allclose(sharp_spread, sharp_collapsed)  # both equally confident per cell


def test_cluster_balance_towards_the_prior_keeps_unequal_clusters():
    """With the mixture weights as target, the balance term is lowest at those weights, not at equal clusters."""
    from scmvp_scvi._module import SCMVPModule

    def confident(counts):  # cells confidently assigned, counts[k] of them to cluster k
        gamma = torch.full((sum(counts), len(counts)), 1e-6)
        gamma[torch.arange(sum(counts)), torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))] = 1
        return torch.log(gamma / gamma.sum(-1, keepdim=True))

    unequal, equal, collapsed = confident([6, 2, 1, 1]), confident([3, 3, 2, 2]), confident([10, 0, 0, 0])
    log_pi = torch.log(torch.tensor([0.6, 0.2, 0.1, 0.1]))
    balance = {
        name: SCMVPModule.cluster_terms(g, g, log_pi)[2][0]
        for name, g in (("unequal", unequal), ("equal", equal), ("collapsed", collapsed))
    }
    assert balance["unequal"].abs() < 1e-3  # the KL from the marginal to the weights is zero there
    assert balance["unequal"] < balance["equal"] < balance["collapsed"]
    # the original target ranks the other way round: it prefers equal clusters
    assert SCMVPModule.cluster_terms(equal, equal)[2][0] < SCMVPModule.cluster_terms(unequal, unequal)[2][0]


def test_balance_target_is_checked():
    from scmvp_scvi._module import SCMVPModule

    with pytest.raises(ValueError, match="balance_target must be one of"):
        SCMVPModule(10, 12, balance_target="equal")


def test_cluster_consistency_is_lowest_when_assignments_agree():
    from scmvp_scvi._module import SCMVPModule

    log_gamma = torch.log_softmax(torch.tensor([[4.0, 0.0, 0.0]]), -1)
    agree = torch.log_softmax(torch.tensor([[4.0, 0.0, 0.0]]), -1)
    disagree = torch.log_softmax(torch.tensor([[0.0, 4.0, 0.0]]), -1)
    assert SCMVPModule.cluster_terms(log_gamma, agree)[0] < SCMVPModule.cluster_terms(log_gamma, disagree)[0]


def test_normalized_encoder_input_ignores_sequencing_depth():
    from scmvp_scvi._module import SCMVPModule

    torch.manual_seed(0)
    x = torch.poisson(torch.full((8, 30), 2.0))
    y = torch.poisson(torch.full((8, 40), 0.5))
    batch = torch.zeros(8, 1, dtype=torch.long)
    for normalize in (True, False):
        module = SCMVPModule(
            30, 40, n_hidden=16, n_latent=4, encoder_input="counts", normalize_encoder_input=normalize
        ).eval()
        shallow = module.inference(x, y, batch, use_mean=True)["z"]
        deep = module.inference(3 * x, 3 * y, batch, use_mean=True)["z"]
        assert torch.allclose(shallow, deep, atol=1e-5) == normalize


def test_normalized_encoder_input_is_depth_free_and_tfidf_weighted():
    from scmvp_scvi._module import SCMVPModule

    torch.manual_seed(0)
    x = torch.poisson(torch.full((8, 30), 2.0))
    y = torch.poisson(torch.full((8, 40), 0.5))
    idf = torch.linspace(1.0, 20.0, 40)
    module = SCMVPModule(30, 40, n_hidden=16, n_latent=4, encoder_input="normalized", atac_idf=idf).eval()
    batch = torch.zeros(8, 1, dtype=torch.long)
    shallow = module.inference(x, y, batch, use_mean=True)
    deep = module.inference(3 * x, 3 * y, batch, use_mean=True)
    for key in ("qz", "qz_rna", "qz_atac"):
        torch.testing.assert_close(shallow[key].loc, deep[key].loc, atol=1e-5, rtol=1e-5)
    # ATAC input is log1p(TF * IDF * 1e4)
    library = torch.log(y.sum(-1, keepdim=True))
    expected = torch.log1p(y / y.sum(-1, keepdim=True) * idf * 1e4)
    torch.testing.assert_close(module._encoder_input(y, library, "atac"), expected)
    assert torch.equal(module.state_dict()["atac_idf"], idf)
    with pytest.raises(ValueError, match="encoder_input must be one of"):
        SCMVPModule(30, 40, encoder_input="tfidf")
    with pytest.raises(ValueError, match="one value per peak"):
        SCMVPModule(30, 40, encoder_input="normalized", atac_idf=torch.ones(39))


def test_cluster_statistics_match_the_posteriors():
    from scmvp_scvi._gmm_init import cluster_statistics

    rng = np.random.default_rng(0)
    latent = rng.normal(size=(200, 3))
    labels = np.repeat([0, 1], 100)
    posterior_var = np.full((200, 3), 0.5)
    _, spread, _ = cluster_statistics(latent, labels)
    _, matched, _ = cluster_statistics(latent, labels, posterior_variances=posterior_var)
    np.testing.assert_allclose(matched, spread + 0.5)


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson", "zip", "bernoulli"])
def test_each_likelihood_is_one_distribution_object(likelihood):
    """Sampling, the probability of a non-zero count, the mean and log_prob of one object agree."""
    torch.manual_seed(0)
    mu = torch.tensor([[0.2, 1.5, 6.0]])
    theta = torch.tensor([0.8, 3.0, 10.0])
    zi = torch.tensor([[-2.0, 0.0, 1.0]])
    scale = mu / mu.sum()
    px = observation_model(likelihood, mu, theta, zi, scale=scale)
    assert isinstance(px, torch.distributions.Distribution)
    assert torch.equal(px.mu, mu) and torch.equal(px.scale, scale)
    draws = px.sample((20_000,))
    assert draws.shape == (20_000, 1, 3) and (draws >= 0).all()
    # the observed fraction of non-zero draws is the model's probability of a non-zero count
    assert torch.allclose((draws > 0).float().mean(0), px.prob_nonzero(), atol=0.015)
    assert torch.allclose(draws.mean(0), px.mean, rtol=0.05, atol=0.01)
    # denoised values: the probability of an open peak for Bernoulli, else the count mean before dropout
    assert torch.equal(px.denoised(), px.prob_nonzero() if likelihood == "bernoulli" else mu)
    assert torch.allclose(px.log_prob(draws[:5]).sum(-1), log_likelihood(likelihood, draws[:5], mu, theta, zi))


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson", "zip", "bernoulli"])
def test_prob_nonzero_of_some_features_equals_those_of_all(likelihood):
    """Asking for some features gives exactly their columns of the full result, built from mu or from scale."""
    torch.manual_seed(0)
    scale = torch.softmax(torch.randn(4, 6), -1)
    library = torch.log(torch.tensor([[50.0], [200.0], [10.0], [1000.0]]))
    theta, zi = torch.rand(6) * 5 + 0.1, torch.randn(4, 6)
    built = {
        "mu": observation_model(likelihood, torch.exp(library) * scale, theta, zi),
        "scale": observation_model(likelihood, None, theta, zi, scale=scale, library=library),
    }
    for px in built.values():
        full = px.prob_nonzero()
        for columns in (torch.tensor([4, 0, 4]), slice(1, 3)):
            torch.testing.assert_close(px.prob_nonzero(columns), full[:, columns])
    torch.testing.assert_close(built["mu"].prob_nonzero(), built["scale"].prob_nonzero())


def test_joint_atac_weight_acts_in_joint_training_only():
    """``joint_atac_weight`` replaces ``atac_weight`` on the joint ATAC term once the mixture is in place."""
    from scvi import REGISTRY_KEYS

    from scmvp_scvi._module import SCMVPModule

    torch.manual_seed(0)
    module = SCMVPModule(20, 30, n_latent=4, n_hidden=16, n_heads=4, atac_weight=0.7).eval()
    tensors = {
        REGISTRY_KEYS.X_KEY: torch.poisson(torch.full((8, 20), 2.0)),
        REGISTRY_KEYS.ATAC_X_KEY: (torch.rand(8, 30) < 0.2).float(),
        REGISTRY_KEYS.BATCH_KEY: torch.zeros(8, 1),
    }

    def loss_and_nll():
        torch.manual_seed(1)
        _, _, losses = module(tensors)
        return losses.loss, losses.reconstruction_loss["atac"].mean()

    pretraining = loss_and_nll()[0]
    module.weights["joint_atac"] = 0.0
    assert torch.equal(loss_and_nll()[0], pretraining)  # pretraining keeps atac_weight
    module.initialize_gmm(torch.randn(3, 4), torch.ones(3, 4), torch.full((3,), 1 / 3))
    without, nll_atac = loss_and_nll()
    module.weights["joint_atac"] = None  # follows atac_weight
    assert torch.isclose(loss_and_nll()[0] - without, 0.7 * nll_atac, rtol=1e-4)


def test_cycle_head_leaves_the_encoders_inference_statistics_alone():
    """A joint-training step updates the encoders' batch-norm running statistics from the data only."""
    import copy

    from scvi import REGISTRY_KEYS

    from scmvp_scvi._module import SCMVPModule

    torch.manual_seed(0)
    module = SCMVPModule(20, 30, n_latent=4, n_hidden=16, n_heads=4)
    module.initialize_gmm(torch.randn(3, 4), torch.ones(3, 4), torch.full((3,), 1 / 3))
    tensors = {
        REGISTRY_KEYS.X_KEY: torch.poisson(torch.full((16, 20), 2.0)),
        REGISTRY_KEYS.ATAC_X_KEY: (torch.rand(16, 30) < 0.2).float(),
        REGISTRY_KEYS.BATCH_KEY: torch.zeros(16, 1),
    }

    def statistics(m):
        return {k: v.clone() for k, v in m.state_dict().items() if "running_" in k and "encoder" in k}

    encode_only = copy.deepcopy(module).train()
    encode_only.inference(**encode_only._get_inference_input(tensors))
    module.train()
    module(tensors)  # inference, decoding and the loss with its cycle head
    expected, observed = statistics(encode_only), statistics(module)
    assert expected and any("atac_encoder" in k for k in expected)
    for key, value in expected.items():
        torch.testing.assert_close(observed[key], value, msg=key)
    # the layers themselves keep their momentum, so the data still updates the statistics
    assert all(m.momentum == 0.01 for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d))
