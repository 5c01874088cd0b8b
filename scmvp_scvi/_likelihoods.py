"""Observation models of the two channels, each one distribution object.

Every likelihood is a :class:`torch.distributions.Distribution` with the decoded mean ``mu`` (the mean of the count
component, before any zero-inflation), the normalised mean ``scale`` (``rho`` or ``alpha``), and three methods the
rest of the package calls: ``log_prob`` (per entry), ``prob_nonzero`` (the probability of observing a non-zero
count: for ATAC, that the peak is open) and ``denoised`` (what imputation returns). The negative binomials are
scvi-tools' own; the Poisson family evaluates its non-zero branch on the non-zero entries only, since peak
matrices are more than 99% zeros. ``LIKELIHOODS`` is the one registry of them.
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


def _nb_prob_nonzero(mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    # P(0) = (theta / (theta + mu)) ** theta
    return 1 - torch.exp(theta * (torch.log(theta + _EPS) - torch.log(theta + mu + _EPS)))


class NB(NegativeBinomial):
    """scvi-tools' negative binomial (``mu``, inverse dispersion ``theta``) with the package's extra methods."""

    def prob_nonzero(self) -> torch.Tensor:
        """Probability of a non-zero count."""
        return _nb_prob_nonzero(self.mu, self.theta)

    def denoised(self) -> torch.Tensor:
        """Return the mean count."""
        return self.mu


class ZINB(ZeroInflatedNegativeBinomial):
    """scvi-tools' zero-inflated negative binomial with the package's extra methods."""

    def prob_nonzero(self) -> torch.Tensor:
        """Probability of a non-zero count: no dropout, and a non-zero negative binomial draw."""
        return _nb_prob_nonzero(self.mu, self.theta) * torch.sigmoid(-self.zi_logits)

    def denoised(self) -> torch.Tensor:
        """Return the mean count before dropout."""
        return self.mu


class SparsePoisson(Distribution):
    """Poisson counts with mean ``mu``; ``log_prob`` evaluates ``log x!`` and ``log mu`` on non-zeros only."""

    arg_constraints: ClassVar[dict] = {"mu": constraints.greater_than_eq(0)}
    support = constraints.nonnegative_integer

    def __init__(self, mu: torch.Tensor, scale: torch.Tensor | None = None, validate_args: bool = False):
        self.mu, self.scale = mu, scale
        super().__init__(batch_shape=mu.shape, validate_args=validate_args)

    @property
    def mean(self) -> torch.Tensor:
        return self.mu

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-probability of each entry."""
        return _where_nonzero(value, -self.mu, _log_poisson, self.mu)

    def sample(self, sample_shape: torch.Size = _NO_SHAPE) -> torch.Tensor:
        """Draw counts."""
        with torch.no_grad():
            return torch.poisson(self.mu.expand(torch.Size(sample_shape) + self.mu.shape))

    def prob_nonzero(self) -> torch.Tensor:
        """Probability of a non-zero count."""
        return -torch.expm1(-self.mu)

    def denoised(self) -> torch.Tensor:
        """Return the mean count."""
        return self.mu


class ZeroInflatedPoisson(SparsePoisson):
    """Poisson counts of mean ``mu`` that drop out to zero with probability ``sigmoid(zi_logits)``."""

    arg_constraints: ClassVar[dict] = {"mu": constraints.greater_than_eq(0), "zi_logits": constraints.real}

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

    def prob_nonzero(self) -> torch.Tensor:
        """Probability of a non-zero count: no dropout, and a non-zero Poisson draw."""
        return super().prob_nonzero() * torch.sigmoid(-self.zi_logits)

    def denoised(self) -> torch.Tensor:
        """Return the mean count before dropout."""
        return self.mu


class OpenPeak(SparsePoisson):
    """Open/closed peaks: a peak is open when a Poisson(``mu``) count would be non-zero (complementary log-log).

    ``log_prob`` binarises the observed counts.
    """

    support = constraints.boolean

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


LIKELIHOODS: dict[str, Likelihood] = {
    "nb": Likelihood(lambda mu, theta, zi, scale: NB(mu=mu, theta=theta, scale=scale), dispersion=True),
    "zinb": Likelihood(
        lambda mu, theta, zi, scale: ZINB(mu=mu, theta=theta, zi_logits=zi, scale=scale),
        dispersion=True,
        zero_inflated=True,
    ),
    "poisson": Likelihood(lambda mu, theta, zi, scale: SparsePoisson(mu, scale)),
    "zip": Likelihood(lambda mu, theta, zi, scale: ZeroInflatedPoisson(mu, zi, scale), zero_inflated=True),
    "bernoulli": Likelihood(lambda mu, theta, zi, scale: OpenPeak(mu, scale)),
}
RNA_LIKELIHOODS = ("nb", "zinb", "poisson")
ATAC_LIKELIHOODS = ("zip", "poisson", "nb", "bernoulli")


def observation_model(
    likelihood: str,
    mu: torch.Tensor,
    theta: torch.Tensor | None = None,
    zi_logits: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> Distribution:
    """Build the distribution of the counts for decoded parameters.

    Parameters
    ----------
    likelihood
        A key of ``LIKELIHOODS``: ``"nb"``, ``"zinb"``, ``"poisson"``, ``"zip"`` or ``"bernoulli"``.
    mu
        Mean of the count (Poisson or negative binomial) component.
    theta
        Inverse dispersion (``"nb"``, ``"zinb"``).
    zi_logits
        Logits of the zero-inflation (dropout) probability (``"zinb"``, ``"zip"``).
    scale
        Normalised mean (``mu`` divided by the library size), kept for the outputs.
    """
    return LIKELIHOODS[likelihood].build(mu, theta, zi_logits, scale)
