"""Neural-network building blocks of scMVP: attention encoders, the gated two-channel decoder and the GMM prior."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from scvi.nn import FCLayers
from torch import nn
from torch.distributions import Normal

from . import _sparse_input
from ._sparse_input import NonZeroEntries, SparseInputFCLayers, with_covariate_entries

# Variance floor of every Gaussian posterior (as in the reference code) and clamp of its log-variance head.
VAR_EPS = 1e-4
LOG_VAR_MIN, LOG_VAR_MAX = -12.0, 8.0
# one latent minibatch, or several of the same cells that a decoder channel decodes together
Latents = torch.Tensor | tuple[torch.Tensor, ...]


class DenseBlock(nn.Module):
    """Linear layer with covariate injection, then normalisation, LeakyReLU and dropout.

    The linear map is scvi-tools' :class:`~scvi.nn.FCLayers` (so categorical covariates are one-hot encoded and
    concatenated to the input exactly as in scvi-tools models); the normalisation order follows scMVP.

    Parameters
    ----------
    n_in
        Input dimension.
    n_out
        Output dimension.
    n_cat_list
        Number of categories of each categorical covariate injected into the layer.
    dropout_rate
        Dropout after the activation.
    layer_norm
        Apply an affine ``LayerNorm`` after the linear map.
    batch_norm
        Apply ``BatchNorm1d`` after the (optional) layer norm.
    sparse_input
        The layer may be fed :class:`~scmvp_scvi._sparse_input.NonZeroEntries` (the non-zero entries of a sparse
        input) as well as dense tensors; its linear map is then stored feature-major, which that product needs
        (:class:`~scmvp_scvi._sparse_input.SparseInputFCLayers`).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        n_cat_list: list[int] | None = None,
        dropout_rate: float = 0.1,
        layer_norm: bool = True,
        batch_norm: bool = True,
        sparse_input: bool = False,
    ):
        super().__init__()
        self.linear = (SparseInputFCLayers if sparse_input else FCLayers)(
            n_in,
            n_out,
            n_cat_list=n_cat_list,
            n_layers=1,
            dropout_rate=0.0,
            use_batch_norm=False,
            use_layer_norm=False,
            use_activation=False,
        )
        self.layer_norm = nn.LayerNorm(n_out, eps=1e-4) if layer_norm else nn.Identity()
        self.batch_norm = nn.BatchNorm1d(n_out, eps=1e-4, momentum=0.01) if batch_norm else nn.Identity()
        self.activation = nn.LeakyReLU(0.01)
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor | NonZeroEntries, *cat_list: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` (dense, or its non-zero entries) with covariates ``cat_list``."""
        h = self._sparse_product(x, cat_list) if isinstance(x, NonZeroEntries) else self.linear(x, *cat_list)
        return self.dropout(self.activation(self.batch_norm(self.layer_norm(h))))

    def _sparse_product(self, x: NonZeroEntries, cat_list: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Compute the linear map of ``FCLayers`` (input and one-hot covariates) from the non-zero entries."""
        linear = self.linear.fc_layers[0][0]
        n_features = linear.in_features - self.linear.n_cov
        x = with_covariate_entries(x, n_features, self.linear.n_cat_list, cat_list)
        # looked up at call time, so that benchmarks/training_step.py can time it
        return _sparse_input.sparse_linear(x, linear.weight_by_feature, linear.bias)


class HiddenUnitSelfAttention(nn.Module):
    """scMVP's multi-head self-attention over the hidden units of one cell.

    The hidden vector is split into ``n_heads`` heads of ``n_hidden / n_heads`` scalar tokens; within each head
    every token attends to every other (``softmax_j(q_i k_j)``) and the output is the attention-weighted sum of the
    values. It mixes hidden units within a cell, not genes, peaks or cells.

    Parameters
    ----------
    n_hidden
        Size of the hidden vector; must be divisible by ``n_heads``.
    n_heads
        Number of heads.
    dropout_rate
        Dropout applied to the attention weights.
    """

    def __init__(self, n_hidden: int, n_heads: int = 8, dropout_rate: float = 0.1):
        super().__init__()
        if n_hidden % n_heads != 0:
            raise ValueError(f"n_hidden ({n_hidden}) must be divisible by n_heads ({n_heads}).")
        self.n_heads = n_heads
        self.query = nn.Linear(n_hidden, n_hidden)
        self.key = nn.Linear(n_hidden, n_hidden)
        self.value = nn.Linear(n_hidden, n_hidden)
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Return the attended hidden vector, same shape as ``h``."""
        shape = (*h.shape[:-1], self.n_heads, -1)
        q = self.query(h).reshape(shape)
        k = self.key(h).reshape(shape)
        v = self.value(h).reshape(shape)
        # tokens are scalars, so the usual 1/sqrt(d) scaling is 1
        attention = self.dropout(torch.softmax(q.unsqueeze(-1) * k.unsqueeze(-2), dim=-1))
        return (attention @ v.unsqueeze(-1)).squeeze(-1).reshape(h.shape)


class RNABranch(nn.Module):
    """RNA encoder branch: dense layer weighted by a sigmoid mask-attention gate computed from the input.

    ``h = DenseBlock(x) * sigmoid(W2 W1 x)``
    """

    def __init__(self, n_input: int, n_hidden: int, n_cat_list: list[int] | None, dropout_rate: float):
        super().__init__()
        self.dense = DenseBlock(n_input, n_hidden, n_cat_list, dropout_rate, layer_norm=True, batch_norm=True)
        self.mask_attention = nn.Sequential(nn.Linear(n_input, n_hidden), nn.Linear(n_hidden, n_hidden))

    def forward(self, x: torch.Tensor, *cat_list: torch.Tensor) -> torch.Tensor:
        """Encode log-transformed expression ``x`` into the hidden space."""
        return self.dense(x, *cat_list) * torch.sigmoid(self.mask_attention(x))


class ATACBranch(nn.Module):
    """ATAC encoder branch: dense layer (batch norm, activation), hidden-unit self-attention, layer norm."""

    def __init__(self, n_input: int, n_hidden: int, n_heads: int, n_cat_list: list[int] | None, dropout_rate: float):
        super().__init__()
        self.dense = DenseBlock(
            n_input, n_hidden, n_cat_list, dropout_rate, layer_norm=False, batch_norm=True, sparse_input=True
        )
        self.self_attention = HiddenUnitSelfAttention(n_hidden, n_heads, dropout_rate)
        self.layer_norm = nn.LayerNorm(n_hidden, eps=1e-4)

    def forward(self, y: torch.Tensor | NonZeroEntries, *cat_list: torch.Tensor) -> torch.Tensor:
        """Encode log-transformed accessibility ``y`` (dense, or its non-zero entries) into the hidden space."""
        return self.layer_norm(self.self_attention(self.dense(y, *cat_list)))


class GaussianHead(nn.Module):
    """Map a hidden vector to a diagonal Gaussian posterior."""

    def __init__(self, n_hidden: int, n_latent: int):
        super().__init__()
        self.mean = nn.Linear(n_hidden, n_latent)
        self.log_var = nn.Linear(n_hidden, n_latent)

    def forward(self, h: torch.Tensor) -> Normal:
        """Return ``N(mean, var)`` with ``var = exp(log_var) + VAR_EPS``."""
        var = torch.exp(self.log_var(h).clamp(LOG_VAR_MIN, LOG_VAR_MAX)) + VAR_EPS
        return Normal(self.mean(h), var.sqrt())


class RNAEncoder(nn.Module):
    """Single-modality RNA encoder ``q(z | x_rna)``."""

    def __init__(self, n_input, n_hidden, n_latent, n_cat_list, dropout_rate):
        super().__init__()
        self.branch = RNABranch(n_input, n_hidden, n_cat_list, dropout_rate)
        self.head = GaussianHead(n_hidden, n_latent)

    def forward(self, x: torch.Tensor, *cat_list: torch.Tensor) -> Normal:
        """Posterior from log-transformed expression."""
        return self.head(self.branch(x, *cat_list))


class ATACEncoder(nn.Module):
    """Single-modality ATAC encoder ``q(z | x_atac)``."""

    def __init__(self, n_input, n_hidden, n_latent, n_heads, n_cat_list, dropout_rate):
        super().__init__()
        self.branch = ATACBranch(n_input, n_hidden, n_heads, n_cat_list, dropout_rate)
        self.head = GaussianHead(n_hidden, n_latent)

    def forward(self, y: torch.Tensor | NonZeroEntries, *cat_list: torch.Tensor) -> Normal:
        """Posterior from log-transformed accessibility."""
        return self.head(self.branch(y, *cat_list))


class JointEncoder(nn.Module):
    """Joint encoder ``q(z | x_rna, x_atac)``: both branches joined by the shared layer.

    ``h = LayerNorm(Linear([RNABranch(x); ATACBranch(y)]))``; its posterior is the scMVP latent.
    """

    def __init__(self, n_input_rna, n_input_atac, n_hidden, n_latent, n_heads, n_cat_list, dropout_rate):
        super().__init__()
        self.rna_branch = RNABranch(n_input_rna, n_hidden, n_cat_list, dropout_rate)
        self.atac_branch = ATACBranch(n_input_atac, n_hidden, n_heads, n_cat_list, dropout_rate)
        self.shared = nn.Sequential(nn.Linear(2 * n_hidden, n_hidden), nn.LayerNorm(n_hidden, eps=1e-4))
        self.head = GaussianHead(n_hidden, n_latent)

    def forward(self, x: torch.Tensor, y: torch.Tensor | NonZeroEntries, *cat_list: torch.Tensor) -> Normal:
        """Joint posterior from both log-transformed modalities."""
        h = torch.cat([self.rna_branch(x, *cat_list), self.atac_branch(y, *cat_list)], dim=-1)
        return self.head(self.shared(h))


class PosteriorFusion(nn.Module):
    """Fuse the RNA and ATAC posteriors into one Gaussian (scMVP's ``concatenter``).

    Means and log-variances get separate linear maps, so the fused variance is positive and independent of the
    fused mean.
    """

    def __init__(self, n_latent: int):
        super().__init__()
        self.mean = nn.Linear(2 * n_latent, n_latent)
        self.log_var = nn.Linear(2 * n_latent, n_latent)

    def forward(self, q_rna: Normal, q_atac: Normal) -> Normal:
        """Return the fused posterior."""
        mean = self.mean(torch.cat([q_rna.loc, q_atac.loc], dim=-1))
        log_var = self.log_var(torch.cat([2 * q_rna.scale.log(), 2 * q_atac.scale.log()], dim=-1))
        var = torch.exp(log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)) + VAR_EPS
        return Normal(mean, var.sqrt())


class GaussianMixturePrior(nn.Module):
    """Gaussian-mixture prior ``p(z) = sum_k pi_k N(z; mu_k, diag(var_k))`` with VaDE-style inference.

    Mixture weights are a softmax of free logits and variances the exponential of free log-variances, so both are
    valid by construction. Responsibilities are computed in log space.

    Parameters
    ----------
    n_components
        Number of mixture components ``K``.
    n_latent
        Dimension of the latent space.
    """

    def __init__(self, n_components: int, n_latent: int):
        super().__init__()
        self.n_components = n_components
        self.logits = nn.Parameter(torch.zeros(n_components))
        self.means = nn.Parameter(torch.zeros(n_components, n_latent))
        self.log_vars = nn.Parameter(torch.zeros(n_components, n_latent))

    @property
    def weights(self) -> torch.Tensor:
        """Mixture weights ``pi`` (sum to one)."""
        return torch.softmax(self.logits, dim=-1)

    @property
    def variances(self) -> torch.Tensor:
        """Component variances, shape ``(K, n_latent)``."""
        return torch.exp(self.log_vars.clamp(LOG_VAR_MIN, LOG_VAR_MAX))

    @torch.no_grad()
    def set_parameters(self, means: torch.Tensor, variances: torch.Tensor, weights: torch.Tensor) -> None:
        """Overwrite the mixture with given means ``(K, D)``, variances ``(K, D)`` and weights ``(K,)``."""
        self.means.copy_(means)
        self.log_vars.copy_(variances.clamp_min(VAR_EPS).log())
        self.logits.copy_(weights.clamp_min(1e-8).log())

    def _mixture(self, detach: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log weights, means and clamped log-variances; ``detach`` stops gradients into the mixture."""
        params = (torch.log_softmax(self.logits, -1), self.means, self.log_vars.clamp(LOG_VAR_MIN, LOG_VAR_MAX))
        return tuple(p.detach() for p in params) if detach else params

    def log_component_densities(self, z: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """``log N(z; mu_k, var_k)`` for every component, shape ``(..., K)``."""
        _, means, log_vars = self._mixture(detach)
        z = z.unsqueeze(-2)
        return -0.5 * (math.log(2 * math.pi) + log_vars + (z - means) ** 2 / log_vars.exp()).sum(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` under the mixture, shape ``z.shape[:-1]``."""
        log_pi = self._mixture(detach=False)[0]
        return torch.logsumexp(log_pi + self.log_component_densities(z), dim=-1)

    def log_responsibilities(self, z: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """``log p(c = k | z)``, normalised with log-softmax (no underflow far from every component)."""
        log_pi = self._mixture(detach)[0]
        return torch.log_softmax(log_pi + self.log_component_densities(z, detach), dim=-1)

    def kl_divergence(self, qz: Normal, log_gamma: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """VaDE's ``KL(q(z, c | x) || p(z, c))`` per cell, with ``q(c | x) = p(c | z)``.

        ``E_q[log p(z | c)]`` is computed in closed form from the posterior mean and variance. ``detach=True``
        fits the posterior to the mixture without moving the mixture.
        """
        gamma = log_gamma.exp()
        mean, var = qz.loc.unsqueeze(-2), qz.variance.unsqueeze(-2)
        log_pi, means, log_vars = self._mixture(detach)
        expected_log_pz_c = -0.5 * (
            math.log(2 * math.pi) + log_vars + (var + (mean - means) ** 2) / log_vars.exp()
        ).sum(-1)
        entropy_qz = 0.5 * (1 + math.log(2 * math.pi) + qz.variance.log()).sum(-1)
        return (gamma * (log_gamma - log_pi - expected_log_pz_c)).sum(-1) - entropy_qz


class ClusterAttention(nn.Module):
    """Decoder attention module: cluster responsibilities -> 128-unit layer -> sigmoid gate.

    Before the mixture prior is initialised (pretraining) the gate is the neutral constant 0.5, which is what
    a constant input gives after batch normalisation, so switching it on does not shock the decoder.
    """

    def __init__(self, n_components: int, n_hidden: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(n_components, n_hidden),
            nn.LayerNorm(n_hidden, eps=1e-4),
            nn.LeakyReLU(0.01),
            nn.BatchNorm1d(n_hidden, eps=1e-4, momentum=0.01),
            nn.LeakyReLU(0.01),
        )

    def forward(self, gamma: torch.Tensor | None, n_obs: int, n_hidden: int) -> torch.Tensor:
        """Gate of shape ``(n_obs, n_hidden)`` from responsibilities ``gamma`` (``None``: neutral gate)."""
        if gamma is None:
            return torch.full((n_obs, n_hidden), 0.5, device=self.layers[0].weight.device)
        return torch.sigmoid(self.layers(gamma))


class TwoChannelDecoder(nn.Module):
    """Two-channel decoder gated by the cluster attention module.

    RNA channel: ``rho = softmax(W_r (DenseBlock(z) * g))``; ATAC channel:
    ``alpha = softmax(W_a (SelfAttention(DenseBlock(z)) * g))``, where ``g`` is the cluster gate. Means are the
    observed library sizes times these proportions. Zero-inflation logits come from the same gated hidden layer.

    Parameters
    ----------
    n_latent, n_hidden, n_output_rna, n_output_atac, n_heads, n_components
        Dimensions.
    n_cat_list
        Categorical covariates injected into both channels.
    rna_zero_inflation, atac_zero_inflation
        Whether to build zero-inflation heads.
    """

    def __init__(
        self,
        n_latent: int,
        n_hidden: int,
        n_output_rna: int,
        n_output_atac: int,
        n_heads: int,
        n_components: int,
        n_cat_list: list[int] | None,
        rna_zero_inflation: bool,
        atac_zero_inflation: bool,
    ):
        super().__init__()
        self.n_hidden = n_hidden
        self.cluster_attention = ClusterAttention(n_components, n_hidden)
        self.rna_hidden = DenseBlock(n_latent, n_hidden, n_cat_list, dropout_rate=0.0)
        self.rna_scale = nn.Linear(n_hidden, n_output_rna)
        self.rna_dropout = nn.Linear(n_hidden, n_output_rna) if rna_zero_inflation else None
        self.atac_hidden = DenseBlock(n_latent, n_hidden, n_cat_list, dropout_rate=0.0)
        self.atac_attention = HiddenUnitSelfAttention(n_hidden, n_heads, dropout_rate=0.01)
        self.atac_scale = nn.Linear(n_hidden, n_output_atac)
        self.atac_dropout = nn.Linear(n_hidden, n_output_atac) if atac_zero_inflation else None

    def gate(self, gamma: torch.Tensor | None, n_obs: int) -> torch.Tensor:
        """Cluster gate for a minibatch."""
        return self.cluster_attention(gamma, n_obs, self.n_hidden)

    def rna(self, z: Latents, gate: Latents, *cat_list: torch.Tensor):
        """Return ``(rho, zero-inflation logits or None)`` of the RNA channel.

        ``z`` and ``gate`` may be tuples of latents of the same cells (same covariates): each gets its own hidden
        layer, batch statistics included, and the output layer runs once on their stacked rows, which is what is
        returned. Stacked, the large output layer costs one matrix product and one weight gradient.
        """
        h = _stacked(lambda z, gate: self.rna_hidden(z, *cat_list) * gate, z, gate)
        dropout = self.rna_dropout(h) if self.rna_dropout is not None else None
        return torch.softmax(self.rna_scale(h), dim=-1), dropout

    def atac(self, z: Latents, gate: Latents, *cat_list: torch.Tensor):
        """Return ``(alpha, zero-inflation logits or None)`` of the ATAC channel (``z``, ``gate``: as in ``rna``)."""
        h = _stacked(lambda z, gate: self.atac_attention(self.atac_hidden(z, *cat_list)) * gate, z, gate)
        dropout = self.atac_dropout(h) if self.atac_dropout is not None else None
        return torch.softmax(self.atac_scale(h), dim=-1), dropout


def _stacked(hidden, z: Latents, gate: Latents) -> torch.Tensor:
    """``hidden(z, gate)``, or the rows of ``hidden`` of each pair stacked when given tuples."""
    if isinstance(z, torch.Tensor):
        return hidden(z, gate)
    return torch.cat([hidden(*pair) for pair in zip(z, gate, strict=True)])


def rebuild_cluster_attention(decoder: TwoChannelDecoder, n_components: int) -> None:
    """Replace the decoder's attention module by a fresh one for ``n_components`` clusters."""
    device = decoder.rna_scale.weight.device
    decoder.cluster_attention = ClusterAttention(n_components, decoder.n_hidden).to(device)


@contextmanager
def running_statistics_kept(*modules: nn.Module) -> Iterator[None]:
    """Leave the running statistics of the batch norms in ``modules`` unchanged inside the block.

    The layers still normalise with the minibatch statistics in training mode, so training computes the same
    thing; only the statistics used at inference are kept from being averaged with inputs that are not data
    (the cycle head's re-encoded means, whose peak profiles look nothing like counts).
    """
    norms = [m for module in modules for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
