"""Detecting metric gaming: identifiability, power and sample complexity (SPEC §8, our formalisation of [G] §10).

The server tests one client over ``T`` rounds in which it took part. Each round it sees the public score
``s_t = q0 (1 - gamma u) + delta u + eps_t``, ``eps_t ~ N(0, sigma_s^2)``, and on a challenge round (each round
independently with probability ``pi``) also the challenge score ``h_t = q0 (1 - gamma u) + eps'_t``,
``eps'_t ~ N(0, sigma_h^2)``; the honest level ``q0`` is known. ``H0: u = 0`` against ``H1: u = u1 > 0``.

- :func:`fisher_information`: ``I(pi) = (delta - gamma q0)^2 / sigma_s^2 + pi (gamma q0)^2 / sigma_h^2`` per round
  (SPEC §8, in expectation over the challenges).
- :func:`identifiable`: [G] Prop. 10.1, without challenges gaming cannot be told from honesty exactly when
  ``delta = gamma q0``; any ``pi > 0`` makes it identifiable when ``gamma q0 != 0``.
- :func:`gls_statistic` / :func:`gls_test`: the likelihood-ratio (GLS) statistic ``Z = [sum_t (delta - gamma q0)
  (s_t - q0) / sigma_s^2 - sum_{challenge t} gamma q0 (h_t - q0) / sigma_h^2] / sqrt(J)``, ``J = T (delta -
  gamma q0)^2 / sigma_s^2 + n_c (gamma q0)^2 / sigma_h^2``, exactly ``N(u sqrt(J), 1)`` given the number of
  challenge rounds ``n_c``; the test rejects when ``Z > z_{1-alpha}``. The per-round terms are
  :class:`~fedgames.mechanisms.audit.ScoreTest`'s, the statistic the ``audit:policy=test`` mechanism ranks by.
- :func:`power`: [G] Thm 10.2, ``1 - Phi(z_{1-alpha} - u1 sqrt(J))`` averaged over ``n_c ~ Binomial(T, pi)``.
- :func:`sample_size`: the normal approximation ``T* = ((z_{1-alpha} + z_{1-beta}) / (u1 sqrt(I(pi))))^2``;
  :func:`tail_bound_sample_size`: the sufficient ``T >= 2 (sqrt(log(1/alpha)) + sqrt(log(1/beta)))^2 /
  (u1^2 I(pi))`` from the Gaussian tail.
- :func:`simulate_rejections`: the test's rejection rate over simulated clients, with its binomial standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom, norm

from fedgames.mechanisms.audit import ScoreTest
from fedgames.validation import integer, real


@dataclass(frozen=True)
class DetectionModel:
    """The score model of SPEC §8 (one client; every parameter checked, a ``ValueError`` naming it).

    Attributes:
        pi: the chance that a round is a challenge round, in ``[0, 1]``.
        delta: how much full manipulation inflates the public score (``>= 0``).
        gamma: the share of the contribution that full manipulation destroys, in ``[0, 1]``.
        q0: the honest quality level (``>= 0``), known to the server.
        score_noise, challenge_noise: the standard deviations ``sigma_s``, ``sigma_h`` (``> 0``).
    """

    pi: float = 0.0
    delta: float = 1.0
    gamma: float = 0.5
    q0: float = 1.0
    score_noise: float = 0.1
    challenge_noise: float = 0.1

    def __post_init__(self) -> None:
        real("pi", self.pi, 0.0, 1.0)
        real("gamma", self.gamma, 0.0, 1.0)
        real("delta", self.delta)
        real("q0", self.q0)
        real("score_noise", self.score_noise, strict=True)
        real("challenge_noise", self.challenge_noise, strict=True)

    @property
    def test(self) -> ScoreTest:
        """The per-round GLS terms (:class:`~fedgames.mechanisms.audit.ScoreTest`) of this model."""
        return ScoreTest(self.q0, self.delta, self.gamma, self.score_noise, self.challenge_noise)


def _model(
    pi: float, delta: float, gamma: float, q0: float, score_noise: float, challenge_noise: float
) -> DetectionModel:
    return DetectionModel(pi, delta, gamma, q0, score_noise, challenge_noise)


def _level(name: str, value: float) -> float:
    """A test level or a miss rate, in ``(0, 1)``."""
    return real(name, value, 0.0, 1.0, strict=True, strict_maximum=True)


def fisher_information(
    pi: float = 0.0,
    delta: float = 1.0,
    gamma: float = 0.5,
    q0: float = 1.0,
    score_noise: float = 0.1,
    challenge_noise: float = 0.1,
) -> float:
    """``I(pi) = (delta - gamma q0)^2 / sigma_s^2 + pi (gamma q0)^2 / sigma_h^2``: the expected Fisher information
    about ``u`` per round (SPEC §8)."""
    test = _model(pi, delta, gamma, q0, score_noise, challenge_noise).test
    return float(test.plain_information + pi * test.challenge_information)


def identifiable(pi: float = 0.0, delta: float = 1.0, gamma: float = 0.5, q0: float = 1.0) -> bool:
    """[G] Prop. 10.1: whether the scores' law moves with ``u`` (then some test has power above its level):
    ``delta != gamma q0``, or challenges (``pi > 0``) with ``gamma q0 != 0``."""
    _model(pi, delta, gamma, q0, 1.0, 1.0)
    return delta != gamma * q0 or (pi > 0 and gamma * q0 != 0)


def gls_statistic(
    scores: np.ndarray,
    challenges: np.ndarray,
    challenged: np.ndarray,
    delta: float = 1.0,
    gamma: float = 0.5,
    q0: float = 1.0,
    score_noise: float = 0.1,
    challenge_noise: float = 0.1,
) -> np.ndarray:
    """The GLS statistic ``Z`` of SPEC §8 for each client: ``scores``, ``challenges`` and ``challenged``
    (booleans: which rounds were challenge rounds; a challenge score off them is ignored) of shape ``(..., T)``.
    ``N(u sqrt(J), 1)`` given the challenge rounds; NaN where ``J = 0`` (the scores say nothing about ``u``)."""
    test = _model(0.0, delta, gamma, q0, score_noise, challenge_noise).test
    challenged = np.asarray(challenged, dtype=bool)
    numerator = test.numerator(np.asarray(scores, float), np.asarray(challenges, float), challenged).sum(-1)
    information = test.information(challenged).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(information > 0, numerator / np.sqrt(information), np.nan)


def gls_test(statistic: np.ndarray, alpha: float = 0.05, rng: np.random.Generator | None = None) -> np.ndarray:
    """Reject ``H0: u = 0`` where ``Z > z_{1-alpha}``. Where the statistic is NaN (``J = 0``: no data can tell
    gaming from honesty) the level-``alpha`` test is randomised: it rejects with probability ``alpha`` (``rng``
    then required)."""
    alpha = _level("alpha", alpha)
    statistic = np.asarray(statistic, dtype=float)
    uninformed = np.isnan(statistic)
    if uninformed.any():
        if rng is None:
            raise ValueError("gls_test: some statistics are NaN (J = 0); give rng for the randomised test")
        statistic = np.where(uninformed, rng.standard_normal(statistic.shape), statistic)
    return statistic > norm.ppf(1 - alpha)


def _conditional_power(u: float, information: np.ndarray, alpha: float) -> np.ndarray:
    """``1 - Phi(z_{1-alpha} - u sqrt(J))`` for each ``J``."""
    return norm.sf(norm.ppf(1 - alpha) - u * np.sqrt(information))


def power(
    rounds: int,
    pi: float = 0.0,
    u: float = 1.0,
    delta: float = 1.0,
    gamma: float = 0.5,
    q0: float = 1.0,
    score_noise: float = 0.1,
    challenge_noise: float = 0.1,
    alpha: float = 0.05,
) -> float:
    """[G] Thm 10.2, exact: the GLS test's power against ``u1 = u`` over ``T = rounds`` rounds,
    ``sum_{n=0}^{T} P(Binomial(T, pi) = n) (1 - Phi(z_{1-alpha} - u sqrt(J_n)))``,
    ``J_n = T (delta - gamma q0)^2 / sigma_s^2 + n (gamma q0)^2 / sigma_h^2``. At ``u = 0`` it is ``alpha``."""
    rounds = integer("rounds", rounds, 1)
    u, alpha = real("u", u, 0.0, 1.0), _level("alpha", alpha)
    test = _model(pi, delta, gamma, q0, score_noise, challenge_noise).test
    n = np.arange(rounds + 1)
    information = rounds * test.plain_information + n * test.challenge_information
    return float(np.dot(binom.pmf(n, rounds, pi), _conditional_power(u, information, alpha)))


def sample_size(
    pi: float = 0.0,
    u: float = 1.0,
    delta: float = 1.0,
    gamma: float = 0.5,
    q0: float = 1.0,
    score_noise: float = 0.1,
    challenge_noise: float = 0.1,
    alpha: float = 0.05,
    beta: float = 0.2,
) -> float:
    """The normal approximation's rounds for power ``1 - beta`` at level ``alpha`` (SPEC §8):
    ``T* = ((z_{1-alpha} + z_{1-beta}) / (u sqrt(I(pi))))^2`` (``inf`` where gaming is not identifiable)."""
    u = real("u", u, 0.0, 1.0, strict=True)
    alpha, beta = _level("alpha", alpha), _level("beta", beta)
    information = fisher_information(pi, delta, gamma, q0, score_noise, challenge_noise)
    if information == 0:
        return math.inf
    return ((norm.ppf(1 - alpha) + norm.ppf(1 - beta)) / (u * math.sqrt(information))) ** 2


def tail_bound_sample_size(
    pi: float = 0.0,
    u: float = 1.0,
    delta: float = 1.0,
    gamma: float = 0.5,
    q0: float = 1.0,
    score_noise: float = 0.1,
    challenge_noise: float = 0.1,
    alpha: float = 0.05,
    beta: float = 0.2,
) -> float:
    """The sufficient rounds from the Gaussian tail (SPEC §8): ``2 (sqrt(log(1/alpha)) + sqrt(log(1/beta)))^2 /
    (u^2 I(pi))`` (``inf`` where gaming is not identifiable); at least :func:`sample_size`."""
    u = real("u", u, 0.0, 1.0, strict=True)
    alpha, beta = _level("alpha", alpha), _level("beta", beta)
    information = fisher_information(pi, delta, gamma, q0, score_noise, challenge_noise)
    if information == 0:
        return math.inf
    return 2 * (math.sqrt(math.log(1 / alpha)) + math.sqrt(math.log(1 / beta))) ** 2 / (u**2 * information)


@dataclass(frozen=True)
class RejectionRate:
    """A simulated rejection rate and its binomial standard error ``sqrt(p (1 - p) / runs)``."""

    rate: float
    se: float
    runs: int


def simulate_scores(
    rounds: int, model: DetectionModel, u: float, runs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``runs`` clients' ``(scores, challenges, challenged)``, each ``(runs, rounds)``, drawn from SPEC §8's model
    with manipulation ``u``."""
    rounds, runs = integer("rounds", rounds, 1), integer("runs", runs, 1)
    u = real("u", u, 0.0, 1.0)
    quality = model.q0 * (1 - model.gamma * u)
    noise = rng.standard_normal((2, runs, rounds))
    scores = quality + model.delta * u + model.score_noise * noise[0]
    challenges = quality + model.challenge_noise * noise[1]
    return scores, challenges, rng.random((runs, rounds)) < model.pi


def simulate_rejections(
    rounds: int,
    pi: float = 0.0,
    u: float = 1.0,
    delta: float = 1.0,
    gamma: float = 0.5,
    q0: float = 1.0,
    score_noise: float = 0.1,
    challenge_noise: float = 0.1,
    alpha: float = 0.05,
    runs: int = 10_000,
    seed: int = 0,
) -> RejectionRate:
    """The GLS test's rejection rate over ``runs`` simulated clients gaming with ``u`` (:func:`simulate_scores`,
    :func:`gls_test`): the Monte Carlo counterpart of :func:`power`."""
    model = _model(pi, delta, gamma, q0, score_noise, challenge_noise)
    rng = np.random.default_rng(seed)
    scores, challenges, challenged = simulate_scores(rounds, model, u, runs, rng)
    statistic = gls_statistic(scores, challenges, challenged, delta, gamma, q0, score_noise, challenge_noise)
    rejected = gls_test(statistic, alpha, rng)
    rate = float(rejected.mean())
    return RejectionRate(rate, math.sqrt(rate * (1 - rate) / runs), runs)


__all__ = [
    "DetectionModel",
    "RejectionRate",
    "fisher_information",
    "gls_statistic",
    "gls_test",
    "identifiable",
    "power",
    "sample_size",
    "simulate_rejections",
    "simulate_scores",
    "tail_bound_sample_size",
]
