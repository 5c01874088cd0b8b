"""Observation models of the two channels: log-likelihoods, means and probabilities of a non-zero count."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

RNA_LIKELIHOODS = ("nb", "zinb", "poisson")
ATAC_LIKELIHOODS = ("zip", "poisson", "nb", "bernoulli")
ZERO_INFLATED = ("zinb", "zip")
WITH_DISPERSION = ("nb", "zinb")
_EPS = 1e-8


def _log_poisson(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    return x * torch.log(mu + _EPS) - mu - torch.lgamma(x + 1)


def _where_nonzero(
    x: torch.Tensor,
    log_p_zero: torch.Tensor,
    log_p_nonzero: Callable[..., torch.Tensor],
    *params: torch.Tensor,
) -> torch.Tensor:
    """Log-probabilities that are ``log_p_zero`` where ``x == 0`` and ``log_p_nonzero(x, *params)`` elsewhere.

    Peak (and many gene) matrices are more than 99% zeros, so the non-zero branch is evaluated on the non-zero
    entries only instead of on the whole minibatch.
    """
    x, log_p_zero, *params = torch.broadcast_tensors(x, log_p_zero, *params)
    index = torch.nonzero(x > 0, as_tuple=True)
    return log_p_zero.index_put(index, log_p_nonzero(x[index], *(p[index] for p in params)))


def _log_zero_inflated_poisson(x: torch.Tensor, mu: torch.Tensor, zi_logits: torch.Tensor) -> torch.Tensor:
    # with dropout probability pi = sigmoid(zi_logits):
    # log P(0) = log(pi + (1 - pi) exp(-mu)) = softplus(-(mu + zi_logits)) - softplus(-zi_logits)
    # log P(x > 0) = log(1 - pi) + log Poisson(x; mu) = -softplus(zi_logits) + log Poisson(x; mu)
    log_zero = F.softplus(-(mu + zi_logits)) - F.softplus(-zi_logits)
    return _where_nonzero(x, log_zero, lambda x, mu, zi: _log_poisson(x, mu) - F.softplus(zi), mu, zi_logits)


def _log_sparse_poisson(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    return _where_nonzero(x, -mu, _log_poisson, mu)


def _log_bernoulli_cloglog(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    # P(open) = 1 - exp(-mu): the probability that a Poisson(mu) count is non-zero
    return _where_nonzero(x, -mu, lambda _, mu: torch.log(-torch.expm1(-mu.clamp_min(_EPS))), mu)


def log_likelihood(
    likelihood: str,
    x: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor | None = None,
    zi_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-cell log-likelihood of counts ``x`` (summed over features).

    Parameters
    ----------
    likelihood
        One of ``"nb"``, ``"zinb"``, ``"poisson"``, ``"zip"``, ``"bernoulli"``. Bernoulli binarises ``x``.
    x
        Observed counts, shape ``(n_obs, n_features)``.
    mu
        Mean of the count (Poisson or negative binomial) component.
    theta
        Inverse dispersion (``"nb"``, ``"zinb"``).
    zi_logits
        Logits of the zero-inflation (dropout) probability (``"zinb"``, ``"zip"``).
    """
    if likelihood == "nb":
        log_p = NegativeBinomial(mu=mu, theta=theta, validate_args=False).log_prob(x)
    elif likelihood == "zinb":
        log_p = ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=zi_logits, validate_args=False).log_prob(x)
    elif likelihood == "poisson":
        log_p = _log_sparse_poisson(x, mu)
    elif likelihood == "zip":
        log_p = _log_zero_inflated_poisson(x, mu, zi_logits)
    elif likelihood == "bernoulli":
        log_p = _log_bernoulli_cloglog(x, mu)
    else:  # pragma: no cover - guarded at model construction
        raise ValueError(f"Unknown likelihood {likelihood!r}.")
    return log_p.sum(-1)


def probability_nonzero(
    likelihood: str,
    mu: torch.Tensor,
    theta: torch.Tensor | None = None,
    zi_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Probability that a feature is observed non-zero (for ATAC: that the peak is open)."""
    if likelihood in WITH_DISPERSION:
        p = 1 - torch.exp(theta * (torch.log(theta + _EPS) - torch.log(theta + mu + _EPS)))
    else:
        p = -torch.expm1(-mu)
    if likelihood in ZERO_INFLATED:
        p = p * torch.sigmoid(-zi_logits)
    return p
