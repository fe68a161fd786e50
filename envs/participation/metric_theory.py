"""The reported metric under contamination: exact and asymptotic moments of the aggregation rules ([G] §9,
Prop. 9.3, "Pareto frontier of aggregation design"; SPEC §3 "Signals").

Each of ``n`` participants games fully with probability ``eps`` (independently), the others are honest, so the paid
scores less ``q0`` are independent draws from the mixture ``F = (1 - eps) N(0, tau^2) + eps N(b, tau^2)``, with
``b = (1 - pi) delta - gamma q0`` what full gaming adds to a paid score and ``tau^2 = (1 - pi)^2 score_noise^2 +
pi^2 challenge_noise^2`` (:func:`paid_score_spread`). The metric ``M = Agg(y)`` is an L-statistic for the mean, the
trimmed means and the median: the average of the order statistics ``f + 1 .. n - f`` (``f = 0``: the mean;
``f = floor(fraction n)``: the trimmed mean; ``f = (n - 1) // 2`` or ``n // 2 - 1``: the median). So

- its **gaming bias** ``E[M] - q0`` is exact, one integral (:func:`metric_bias`): ``int x w(F(x)) dF(x)`` with
  ``w(p) = (1 / (n - 2f)) sum_{j=f+1}^{n-f} Beta(p; j, n - j + 1)``, the mean density of those order statistics'
  uniform ranks;
- its **standard deviation** is the large-``n`` one (:func:`metric_sd`): ``sigma_W / ((1 - 2 beta) sqrt(n))`` for the
  ``beta``-trimmed mean, ``sigma_W^2`` the ``beta``-Winsorized variance of ``F`` (the variance of ``X`` clipped to
  its ``beta`` and ``1 - beta`` quantiles, about the clipped mean: the trimmed mean's influence function, Stigler
  1973; ``beta = 0``: the variance), and ``1 / (2 F'(m) sqrt(n))`` for the median ``m``.

The trade-off: the mean has the smallest spread where nobody games and the largest bias ``eps b``; trimming and
the median give up spread for a bias bounded by the mixture's quantiles.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import trapezoid
from scipy.optimize import brentq
from scipy.special import betaln
from scipy.stats import norm

from fedgames.validation import integer, real

RULES = ("mean", "trimmed_mean", "median")


def paid_score_spread(score_noise: float, challenge_noise: float, pi: float = 0.0) -> float:
    """``tau``, the standard deviation of a paid score ``(1 - pi) s + pi h`` around its mean."""
    return math.hypot((1 - pi) * score_noise, pi * challenge_noise)


def trimmed_count(rule: str, n: int, fraction: float = 0.0) -> int:
    """``f``, the order statistics the rule drops at each end among ``n`` scores."""
    n = integer("n", n, 1)
    if rule == "mean":
        return 0
    if rule == "median":
        return (n - 1) // 2 if n % 2 else n // 2 - 1
    if rule == "trimmed_mean":
        return math.floor(real("fraction", fraction, 0.0, 0.5, strict_maximum=True) * n)
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def _mixture(eps: float, b: float, tau: float) -> tuple:
    eps, tau = real("eps", eps, 0.0, 1.0), real("tau", tau, strict=True)

    def pdf(x: np.ndarray) -> np.ndarray:
        return (1 - eps) * norm.pdf(x, 0.0, tau) + eps * norm.pdf(x, b, tau)

    def cdf(x: np.ndarray) -> np.ndarray:
        return (1 - eps) * norm.cdf(x, 0.0, tau) + eps * norm.cdf(x, b, tau)

    return pdf, cdf


def _quantile(cdf, p: float, b: float, tau: float) -> float:  # noqa: ANN001
    low, high = min(0.0, b) - 12 * tau, max(0.0, b) + 12 * tau
    return brentq(lambda x: float(cdf(x)) - p, low, high, xtol=1e-14)


def metric_bias(
    rule: str, n: int, eps: float, b: float, tau: float, fraction: float = 0.0, points: int = 40_001
) -> float:
    """``E[M] - q0`` exactly, for ``n`` participants each gaming with probability ``eps`` (module docstring; the
    integral on ``points`` grid points over ``F``'s support +- 12 ``tau``)."""
    f = trimmed_count(rule, n, fraction)
    pdf, cdf = _mixture(eps, b, tau)
    x = np.linspace(min(0.0, b) - 12 * tau, max(0.0, b) + 12 * tau, integer("points", points, 3))
    p = np.clip(cdf(x), 1e-300, 1 - 1e-16)
    ranks = np.arange(f + 1, n - f + 1)[:, None]  # order statistic j has rank density Beta(j, n - j + 1)
    log_beta = (ranks - 1) * np.log(p) + (n - ranks) * np.log1p(-p) - betaln(ranks, n - ranks + 1)
    weight = np.exp(log_beta).mean(0)
    return float(trapezoid(x * weight * pdf(x), x))


def metric_sd(rule: str, n: int, eps: float, b: float, tau: float, fraction: float = 0.0) -> float:
    """The large-``n`` standard deviation of ``M`` (module docstring); the trimmed mean's ``beta`` is
    ``floor(fraction n) / n``, as the aggregator trims."""
    n = integer("n", n, 1)
    pdf, cdf = _mixture(eps, b, tau)
    if rule == "median":
        return 1.0 / (2.0 * float(pdf(_quantile(cdf, 0.5, b, tau))) * math.sqrt(n))
    beta = trimmed_count(rule, n, fraction) / n
    if beta == 0:
        variance = tau**2 + eps * (1 - eps) * b**2
        return math.sqrt(variance / n)
    low, high = _quantile(cdf, beta, b, tau), _quantile(cdf, 1 - beta, b, tau)
    x = np.linspace(low, high, 20_001)
    winsorized_mean = float(trapezoid(x * pdf(x), x)) + beta * (low + high)
    winsorized = (
        float(trapezoid((x - winsorized_mean) ** 2 * pdf(x), x))
        + beta * (low - winsorized_mean) ** 2
        + beta * (high - winsorized_mean) ** 2
    )
    return math.sqrt(winsorized / n) / (1 - 2 * beta)


__all__ = ["RULES", "metric_bias", "metric_sd", "paid_score_spread", "trimmed_count"]
