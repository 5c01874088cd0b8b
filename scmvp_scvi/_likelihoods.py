"""Observation models of the two channels: log-likelihoods, means and probabilities of a non-zero count."""

from __future__ import annotations

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


def _log_zero_inflated_poisson(x: torch.Tensor, mu: torch.Tensor, zi_logits: torch.Tensor) -> torch.Tensor:
    # dropout probability is sigmoid(zi_logits); written with softplus for stability
    log_zero = torch.logaddexp(-F.softplus(-zi_logits), -F.softplus(zi_logits) - mu)
    log_nonzero = -F.softplus(zi_logits) + _log_poisson(x, mu)
    return torch.where(x > 0, log_nonzero, log_zero)


def _log_bernoulli_cloglog(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    # P(open) = 1 - exp(-mu): the probability that a Poisson(mu) count is non-zero
    log_open = torch.log(-torch.expm1(-mu.clamp_min(_EPS)))
    return torch.where(x > 0, log_open, -mu)


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
        log_p = _log_poisson(x, mu)
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
