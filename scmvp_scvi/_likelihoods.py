"""Observation models of the two channels, each one distribution object.

Every likelihood is a :class:`torch.distributions.Distribution` with the decoded mean ``mu`` (the mean of the count
component, before any zero-inflation), the normalised mean ``scale`` (``rho`` or ``alpha``), and the methods the
rest of the package calls: ``log_prob`` (per entry), ``cell_log_prob`` (per cell: what training sums),
``prob_nonzero`` (the probability of observing a non-zero count: for ATAC, that the peak is open) and ``denoised``
(what imputation returns). The negative binomials are scvi-tools' own; the negative binomial and the Poisson family
evaluate the terms that depend on the count on the non-zero entries only, since peak matrices are more than 99%
zeros and gene matrices more than 90% in snare_cortex. ``LIKELIHOODS`` is the one registry of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from torch.distributions import Distribution, constraints

_EPS = 1e-8
_NO_SHAPE = torch.Size()


def _log_poisson(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    return x * torch.log(mu + _EPS) - mu - torch.lgamma(x + 1)


def _log_nb(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    log_theta_mu = torch.log(theta + mu + _EPS)
    return (
        theta * (torch.log(theta + _EPS) - log_theta_mu)
        + x * (torch.log(mu + _EPS) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


def _where_nonzero(
    x: torch.Tensor,
    log_p_zero: torch.Tensor,
    log_p_nonzero: Callable[..., torch.Tensor],
    *params: torch.Tensor,
) -> torch.Tensor:
    """Log-probabilities that are ``log_p_zero`` where ``x == 0`` and ``log_p_nonzero(x, *params)`` elsewhere.

    The non-zero branch is evaluated on the non-zero entries only instead of on the whole minibatch.
    """
    x, log_p_zero, *params = torch.broadcast_tensors(x, log_p_zero, *params)
    index = torch.nonzero(x > 0, as_tuple=True)
    return log_p_zero.index_put(index, log_p_nonzero(x[index], *(p[index] for p in params)))


class _CellLogProb:
    """``cell_log_prob``: the log-probability of each cell's profile (``log_prob`` summed over the features)."""

    def cell_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of each cell, shape ``value.shape[:-1]``."""
        return self.log_prob(value).sum(-1)


Columns = slice | torch.Tensor | None


def _columns(values: torch.Tensor, columns: Columns) -> torch.Tensor:
    """Take the features ``columns`` of ``values`` (last axis; all when ``None``)."""
    return values if columns is None else values[..., columns]


def _nb_prob_nonzero(mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    # P(0) = (theta / (theta + mu)) ** theta
    return 1 - torch.exp(theta * (torch.log(theta + _EPS) - torch.log(theta + mu + _EPS)))


class NB(_CellLogProb, NegativeBinomial):
    """scvi-tools' negative binomial (``mu``, inverse dispersion ``theta``) with the package's extra methods.

    ``log_prob`` evaluates the count-dependent terms (gamma functions included) on the non-zero entries only:
    ``log P(0) = theta (log theta - log(theta + mu))`` needs none of them.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of each entry."""
        theta = self.theta
        log_zero = theta * (torch.log(theta + _EPS) - torch.log(theta + self.mu + _EPS))
        return _where_nonzero(value, log_zero, _log_nb, self.mu, theta)

    def prob_nonzero(self, columns: Columns = None) -> torch.Tensor:
        """Probability of a non-zero count (of the features ``columns`` only, if given)."""
        return _nb_prob_nonzero(_columns(self.mu, columns), _columns(self.theta, columns))

    def denoised(self) -> torch.Tensor:
        """Return the mean count."""
        return self.mu


class ZINB(_CellLogProb, ZeroInflatedNegativeBinomial):
    """scvi-tools' zero-inflated negative binomial with the package's extra methods."""

    def prob_nonzero(self, columns: Columns = None) -> torch.Tensor:
        """Probability of a non-zero count: no dropout, and a non-zero negative binomial draw."""
        nonzero = _nb_prob_nonzero(_columns(self.mu, columns), _columns(self.theta, columns))
        return nonzero * torch.sigmoid(-_columns(self.zi_logits, columns))

    def denoised(self) -> torch.Tensor:
        """Return the mean count before dropout."""
        return self.mu


class SparsePoisson(_CellLogProb, Distribution):
    """Poisson counts with mean ``mu``; ``log_prob`` evaluates ``log x!`` and ``log mu`` on non-zeros only.

    Built from ``scale`` and the log ``library`` instead of ``mu``, the mean is only formed when asked for, and
    ``cell_log_prob`` needs it on the non-zero entries alone: the sum of the means over a cell's features is its
    library size times the sum of ``scale``.
    """

    arg_constraints: ClassVar[dict] = {"mu": constraints.greater_than_eq(0)}
    support = constraints.nonnegative_integer

    def __init__(
        self,
        mu: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        validate_args: bool = False,
        library: torch.Tensor | None = None,
    ):
        if mu is None and (scale is None or library is None):
            raise ValueError("SparsePoisson needs mu, or scale and library.")
        self._mu, self.scale, self.library = mu, scale, library
        super().__init__(batch_shape=(scale if mu is None else mu).shape, validate_args=validate_args)

    @property
    def mu(self) -> torch.Tensor:
        """Mean count of each entry."""
        if self._mu is None:
            self._mu = torch.exp(self.library) * self.scale
        return self._mu

    @property
    def mean(self) -> torch.Tensor:
        return self.mu

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of each entry."""
        return _where_nonzero(value, -self.mu, _log_poisson, self.mu)

    def cell_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of each cell, shape ``value.shape[:-1]``."""
        if self._mu is not None or value.dim() != 2 or value.shape != self.scale.shape:
            return super().cell_log_prob(value)
        size = torch.exp(self.library).reshape(-1)
        rows, cols = torch.nonzero(value > 0, as_tuple=True)
        x = value[rows, cols]
        nonzero = x * torch.log(self.scale[rows, cols] * size[rows] + _EPS) - torch.lgamma(x + 1)
        return -size * self.scale.sum(-1) + torch.zeros_like(size).index_add(0, rows, nonzero)

    def sample(self, sample_shape: torch.Size = _NO_SHAPE) -> torch.Tensor:
        """Draw counts."""
        with torch.no_grad():
            return torch.poisson(self.mu.expand(torch.Size(sample_shape) + self.mu.shape))

    def prob_nonzero(self, columns: Columns = None) -> torch.Tensor:
        """Probability of a non-zero count (of the features ``columns`` only, if given).

        With ``columns`` the means are formed for those features alone.
        """
        if columns is None or self._mu is not None:
            mu = _columns(self.mu, columns)
        else:
            mu = torch.exp(self.library) * _columns(self.scale, columns)
        return -torch.expm1(-mu)

    def denoised(self) -> torch.Tensor:
        """Return the mean count."""
        return self.mu


class ZeroInflatedPoisson(SparsePoisson):
    """Poisson counts of mean ``mu`` that drop out to zero with probability ``sigmoid(zi_logits)``."""

    arg_constraints: ClassVar[dict] = {"mu": constraints.greater_than_eq(0), "zi_logits": constraints.real}

    # the zero branch needs every mean
    cell_log_prob = _CellLogProb.cell_log_prob

    def __init__(
        self,
        mu: torch.Tensor,
        zi_logits: torch.Tensor,
        scale: torch.Tensor | None = None,
        validate_args: bool = False,
    ):
        self.zi_logits = zi_logits
        super().__init__(mu, scale, validate_args)

    @property
    def mean(self) -> torch.Tensor:
        return self.mu * torch.sigmoid(-self.zi_logits)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of each entry."""
        # with dropout probability pi = sigmoid(zi_logits):
        # log P(0) = log(pi + (1 - pi) exp(-mu)) = softplus(-(mu + zi_logits)) - softplus(-zi_logits)
        # log P(x > 0) = log(1 - pi) + log Poisson(x; mu) = -softplus(zi_logits) + log Poisson(x; mu)
        mu, zi = self.mu, self.zi_logits
        log_zero = F.softplus(-(mu + zi)) - F.softplus(-zi)
        return _where_nonzero(value, log_zero, lambda x, mu, zi: _log_poisson(x, mu) - F.softplus(zi), mu, zi)

    def sample(self, sample_shape: torch.Size = _NO_SHAPE) -> torch.Tensor:
        """Draw counts."""
        with torch.no_grad():
            counts = super().sample(sample_shape)
            kept = torch.distributions.Bernoulli(logits=-self.zi_logits).sample(sample_shape)
            return counts * kept

    def prob_nonzero(self, columns: Columns = None) -> torch.Tensor:
        """Probability of a non-zero count: no dropout, and a non-zero Poisson draw."""
        return super().prob_nonzero(columns) * torch.sigmoid(-_columns(self.zi_logits, columns))

    def denoised(self) -> torch.Tensor:
        """Return the mean count before dropout."""
        return self.mu


class OpenPeak(SparsePoisson):
    """Open/closed peaks: a peak is open when a Poisson(``mu``) count would be non-zero (complementary log-log).

    ``log_prob`` binarises the observed counts.
    """

    support = constraints.boolean
    cell_log_prob = _CellLogProb.cell_log_prob

    @property
    def mean(self) -> torch.Tensor:
        return self.prob_nonzero()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of each entry being open (non-zero) or closed."""
        return _where_nonzero(value, -self.mu, lambda _, mu: torch.log(-torch.expm1(-mu.clamp_min(_EPS))), self.mu)

    def sample(self, sample_shape: torch.Size = _NO_SHAPE) -> torch.Tensor:
        """Draw open (1) or closed (0) peaks."""
        return (super().sample(sample_shape) > 0).float()

    def denoised(self) -> torch.Tensor:
        """Return the probability that the peak is open."""
        return self.prob_nonzero()


@dataclass(frozen=True)
class Likelihood:
    """How to build one observation model, and which decoder outputs it needs."""

    build: Callable[..., Distribution]
    dispersion: bool = False
    zero_inflated: bool = False


def _mean(mu: torch.Tensor | None, scale: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
    return torch.exp(library) * scale if mu is None else mu


LIKELIHOODS: dict[str, Likelihood] = {
    "nb": Likelihood(
        lambda mu, theta, zi, scale, lib: NB(mu=_mean(mu, scale, lib), theta=theta, scale=scale), dispersion=True
    ),
    "zinb": Likelihood(
        lambda mu, theta, zi, scale, lib: ZINB(mu=_mean(mu, scale, lib), theta=theta, zi_logits=zi, scale=scale),
        dispersion=True,
        zero_inflated=True,
    ),
    "poisson": Likelihood(lambda mu, theta, zi, scale, lib: SparsePoisson(mu, scale, library=lib)),
    "zip": Likelihood(
        lambda mu, theta, zi, scale, lib: ZeroInflatedPoisson(_mean(mu, scale, lib), zi, scale), zero_inflated=True
    ),
    "bernoulli": Likelihood(lambda mu, theta, zi, scale, lib: OpenPeak(_mean(mu, scale, lib), scale)),
}
RNA_LIKELIHOODS = ("nb", "zinb", "poisson")
ATAC_LIKELIHOODS = ("zip", "poisson", "nb", "bernoulli")


def observation_model(
    likelihood: str,
    mu: torch.Tensor | None = None,
    theta: torch.Tensor | None = None,
    zi_logits: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    library: torch.Tensor | None = None,
) -> Distribution:
    """Build the distribution of the counts for decoded parameters.

    Parameters
    ----------
    likelihood
        A key of ``LIKELIHOODS``: ``"nb"``, ``"zinb"``, ``"poisson"``, ``"zip"`` or ``"bernoulli"``.
    mu
        Mean of the count (Poisson or negative binomial) component; ``None``: ``exp(library) * scale``, formed
        only where the likelihood needs it.
    theta
        Inverse dispersion (``"nb"``, ``"zinb"``).
    zi_logits
        Logits of the zero-inflation (dropout) probability (``"zinb"``, ``"zip"``).
    scale
        Normalised mean (``mu`` divided by the library size), kept for the outputs.
    library
        Log library size of each cell, shape ``(n, 1)``; needed when ``mu`` is ``None``.
    """
    if mu is None and (scale is None or library is None):
        raise ValueError("observation_model needs mu, or scale and library.")
    return LIKELIHOODS[likelihood].build(mu, theta, zi_logits, scale, library)
