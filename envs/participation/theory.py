"""Mean-field theory of the participation game (SPEC §3, our formalisation of [G] §4, §7, §9, §11).

``N`` clients choose each round whether to participate and, if they do, a manipulation intensity ``u in [0, 1]``.
A participant's true contribution is ``q_i = q0 (1 - gamma u_i)``; model quality (welfare) is
``W = Q(z)``, ``z = sum_{i in P} q_i / N``; the server pays ``w y_i`` on the score ``y_i = (1 - pi) s_i + pi h_i``
(public, gameable ``s_i = q_i + delta u_i + noise``; private challenge ``h_i = q_i + noise'``; ``pi`` the challenge
mixing ratio, [G] Thm 9.4), audits ``k`` participants a round, catches an audited one with probability
``p_detect u_i`` and then charges the sanction ``S``. A participant's round reward is
``phi W + w y_i - c_i - S 1[caught]``; a non-participant gets its outside option ``o``.

Everything here is for identical clients (``q0``, ``o``) with Gaussian participation costs ``c ~ max(0,
N(c_mean, c_std))``, as SPEC §3's "Theory (mean-field, to reproduce)":

- :func:`gaming_slope`: the round reward is linear in ``u`` up to the welfare's curvature, with slope
  ``g = w((1 - pi) delta - gamma q0) - phi Q'(z) gamma q0 / N - (k / |P|) p_detect S``; the best reply is
  ``u = 1`` if ``g > 0``, else honesty (:func:`best_manipulation`). :func:`minimum_sanction` is the smallest ``S``
  with ``g <= 0``; :func:`manipulability_index` ``= max(g, 0)``.
- :func:`retention_map`: with myopic participation, ``x_{t+1} = G(x_t) = P[phi Q(x_t qbar) + w ybar - c -
  E[sanction] >= o]``; :func:`steady_states` are its fixed points (stable iff ``|G'(x*)| < 1``), and when it
  crosses the diagonal three times the middle crossing is the domino-exit threshold ([G] Thm 7.2,
  :func:`domino_threshold`).
- :func:`price_of_gaming`: ``(W_honest - W_eq) / W_honest`` between the steady states reached under honesty and
  under the manipulation the slope prescribes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from fedgames.validation import integer, real

WELFARE_CURVES = ("exponential", "s_shaped")


@dataclass(frozen=True)
class Setting:
    """The participation game's parameters (SPEC §3); defaults as there where it gives them.

    Attributes:
        n_clients: ``N >= 2``.
        phi: value of the shared model to a participant.
        w: contribution payment rate.
        gamma: how much manipulation destroys of a contribution (``q = q0 (1 - gamma u)``), in ``[0, 1]``.
        delta: how much manipulation inflates the public score.
        pi: challenge-mixing ratio in ``[0, 1]``.
        audits: ``k``, participants audited per round.
        p_detect: probability that an audit catches full manipulation (``u = 1``).
        sanction: ``S``, charged to a caught participant.
        q0: data quality of a client.
        outside: ``o``, a non-participant's round reward.
        c_mean, c_std: the participation cost ``max(0, N(c_mean, c_std))``.
        welfare: ``"exponential"`` (``Q(z) = 1 - exp(-kappa z)``) or ``"s_shaped"`` (``z^h / (z^h + z0^h)``).
        kappa, h, z0: the welfare curves' parameters.
    """

    n_clients: int = 10
    phi: float = 1.0
    w: float = 0.5
    gamma: float = 0.5
    delta: float = 1.0
    pi: float = 0.0
    audits: int = 1
    p_detect: float = 0.5
    sanction: float = 0.0
    q0: float = 1.0
    outside: float = 0.0
    c_mean: float = 0.5
    c_std: float = 0.2
    welfare: str = "exponential"
    kappa: float = 2.0
    h: float = 4.0
    z0: float = 0.5

    def __post_init__(self) -> None:
        integer("n_clients", self.n_clients, 2)
        integer("audits", self.audits, 0)
        for name in ("phi", "w", "delta", "sanction", "q0", "kappa", "z0"):
            real(name, getattr(self, name))
        for name in ("gamma", "pi", "p_detect"):
            real(name, getattr(self, name), 0.0, 1.0)
        real("outside", self.outside, -math.inf)
        real("c_mean", self.c_mean, -math.inf)
        real("c_std", self.c_std, strict=True)
        real("h", self.h, 1.0)
        if self.welfare not in WELFARE_CURVES:
            raise ValueError(f"welfare must be one of {WELFARE_CURVES}, got {self.welfare!r}")


def welfare(z: float | np.ndarray, setting: Setting) -> float | np.ndarray:
    """``Q(z)``: increasing, ``Q(0) = 0``."""
    z = np.asarray(z, dtype=float)
    if setting.welfare == "exponential":
        return 1.0 - np.exp(-setting.kappa * z)
    return z**setting.h / (z**setting.h + setting.z0**setting.h)


def welfare_slope(z: float | np.ndarray, setting: Setting) -> float | np.ndarray:
    """``Q'(z)``."""
    z = np.asarray(z, dtype=float)
    if setting.welfare == "exponential":
        return setting.kappa * np.exp(-setting.kappa * z)
    a, b = z**setting.h, setting.z0**setting.h
    return setting.h * z ** (setting.h - 1) * b / (a + b) ** 2


def audit_rate(setting: Setting, participants: float) -> float:
    """``k / |P|``, the chance that a participant is audited (at most 1)."""
    return min(1.0, setting.audits / participants) if participants > 0 else 0.0


def gaming_slope(setting: Setting, participants: float, z: float) -> float:
    """``g = w((1 - pi) delta - gamma q0) - phi Q'(z) gamma q0 / N - (k / |P|) p_detect S``: the derivative of a
    participant's expected round reward in its own ``u`` (SPEC §3), at ``|P| = participants`` and ``z``."""
    s = setting
    return (s.w * ((1 - s.pi) * s.delta - s.gamma * s.q0)
            - s.phi * float(welfare_slope(z, s)) * s.gamma * s.q0 / s.n_clients
            - audit_rate(s, participants) * s.p_detect * s.sanction)


def gaming_gain(setting: Setting, participants: float, z: float) -> float:
    """The exact gain in expected round reward of ``u = 1`` over ``u = 0`` for one participant, the others fixed
    (``z`` counts its honest contribution): :func:`gaming_slope` with the welfare's difference in place of its
    derivative."""
    s = setting
    lost = s.phi * (float(welfare(z, s)) - float(welfare(z - s.gamma * s.q0 / s.n_clients, s)))
    return (s.w * ((1 - s.pi) * s.delta - s.gamma * s.q0) - lost
            - audit_rate(s, participants) * s.p_detect * s.sanction)


def best_manipulation(setting: Setting, participants: float, z: float) -> float:
    """The best reply's ``u``: 1 where gaming pays (``g > 0``), else 0 (honesty)."""
    return 1.0 if gaming_slope(setting, participants, z) > 0 else 0.0


def manipulability_index(setting: Setting, participants: float, z: float) -> float:
    """``Mi = max(g, 0)``: the per-round private gain of gaming over honesty (linearised)."""
    return max(gaming_slope(setting, participants, z), 0.0)


def minimum_sanction(setting: Setting, participants: float, z: float) -> float:
    """``S_min = max(0, (w((1 - pi) delta - gamma q0) - phi Q'(z) gamma q0 / N) |P| / (k p_detect))``: the
    smallest sanction that makes honesty a best reply (``inf`` without audits or detection while gaming pays)."""
    s = setting
    incentive = (s.w * ((1 - s.pi) * s.delta - s.gamma * s.q0)
                 - s.phi * float(welfare_slope(z, s)) * s.gamma * s.q0 / s.n_clients)
    if incentive <= 0:
        return 0.0
    deterrence = audit_rate(s, participants) * s.p_detect
    return incentive / deterrence if deterrence > 0 else math.inf


def participation_value(x: float, setting: Setting, u: float = 0.0) -> float:
    """A participant's expected round reward before its cost when a fraction ``x`` of the clients participates,
    all with manipulation ``u``: ``phi Q(x qbar) + w ybar - E[sanction]`` (``qbar = q0 (1 - gamma u)``,
    ``ybar = qbar + (1 - pi) delta u``)."""
    s = setting
    quality = s.q0 * (1 - s.gamma * u)
    score = quality + (1 - s.pi) * s.delta * u
    sanction = audit_rate(s, x * s.n_clients) * s.p_detect * u * s.sanction
    return s.phi * float(welfare(x * quality, s)) + s.w * score - sanction


def retention_map(x: float, setting: Setting, u: float = 0.0) -> float:
    """``G(x) = P[c <= value(x) - o]``, the fraction that participates next round when ``x`` does now (myopic
    clients, costs ``max(0, N(c_mean, c_std))``)."""
    margin = participation_value(x, setting, u) - setting.outside
    if margin < 0:
        return 0.0
    return float(norm.cdf((margin - setting.c_mean) / setting.c_std))


@dataclass(frozen=True)
class SteadyState:
    """A fixed point ``x* = G(x*)`` and whether it attracts (``|G'(x*)| < 1``)."""

    x: float
    slope: float
    stable: bool


def _derivative(x: float, setting: Setting, u: float, step: float = 1e-6) -> float:
    low, high = max(x - step, 0.0), min(x + step, 1.0)
    return (retention_map(high, setting, u) - retention_map(low, setting, u)) / (high - low)


def steady_states(setting: Setting, u: float = 0.0, grid: int = 2001) -> list[SteadyState]:
    """Every fixed point of :func:`retention_map` in ``[0, 1]``, ascending: sign changes of ``G(x) - x`` on a grid
    of ``grid`` points, each refined by Brent's method (``x = 0`` counts when ``G(0) = 0``)."""
    xs = np.linspace(0.0, 1.0, integer("grid", grid, 3))
    gap = np.array([retention_map(x, setting, u) - x for x in xs])
    roots = [0.0] if gap[0] == 0 else []
    for a, b, ga, gb in zip(xs[:-1], xs[1:], gap[:-1], gap[1:]):
        if gb == 0 and b > 0:
            roots.append(float(b))
        elif ga * gb < 0:
            roots.append(float(brentq(lambda x: retention_map(x, setting, u) - x, a, b, xtol=1e-13)))
    states = []
    for root in roots:
        slope = _derivative(root, setting, u)
        states.append(SteadyState(root, slope, abs(slope) < 1))
    return states


def domino_threshold(setting: Setting, u: float = 0.0) -> float | None:
    """[G] Thm 7.2's domino-exit threshold: when ``G`` crosses the diagonal three times, the middle (unstable)
    crossing; started below it participation collapses to the low steady state, above it it converges to the high
    one. ``None`` with fewer crossings."""
    states = steady_states(setting, u)
    if len(states) != 3 or states[1].stable:
        return None
    return states[1].x


def iterate_retention(x0: float, setting: Setting, u: float = 0.0, rounds: int = 200) -> np.ndarray:
    """``x_0, G(x_0), G(G(x_0)), ...`` (``rounds + 1`` values)."""
    path = [real("x0", x0, 0.0, 1.0)]
    for _ in range(integer("rounds", rounds, 0)):
        path.append(retention_map(path[-1], setting, u))
    return np.array(path)


def mean_field_equilibrium(setting: Setting, x0: float = 1.0, rounds: int = 500) -> tuple[float, float]:
    """``(x, u)`` where the joint dynamics settle: participation follows ``G`` and every participant plays the
    best manipulation (:func:`best_manipulation`) at the current ``(|P|, z)``."""
    x = real("x0", x0, 0.0, 1.0)
    u = 0.0
    for _ in range(integer("rounds", rounds, 1)):
        z = x * setting.q0 * (1 - setting.gamma * u)  # the others' contributions at the current manipulation
        u = best_manipulation(setting, x * setting.n_clients, z)
        x = retention_map(x, setting, u)
    return x, u


def price_of_gaming(setting: Setting, x0: float = 1.0) -> float:
    """``PoG = (W_honest - W_eq) / W_honest``: welfare at the steady state reached from ``x0`` when everybody is
    honest against the one reached with the equilibrium manipulation (:func:`mean_field_equilibrium`)."""
    honest = iterate_retention(x0, setting, 0.0, 500)[-1]
    w_honest = float(welfare(honest * setting.q0, setting))
    x_eq, u_eq = mean_field_equilibrium(setting, x0)
    w_eq = float(welfare(x_eq * setting.q0 * (1 - setting.gamma * u_eq), setting))
    return (w_honest - w_eq) / w_honest if w_honest > 0 else 0.0


__all__ = ["WELFARE_CURVES", "Setting", "SteadyState", "audit_rate", "best_manipulation", "domino_threshold",
           "gaming_gain", "gaming_slope", "iterate_retention", "manipulability_index", "mean_field_equilibrium",
           "minimum_sanction", "participation_value", "price_of_gaming", "retention_map", "steady_states",
           "welfare", "welfare_slope", "with_params"]
