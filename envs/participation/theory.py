"""Mean-field theory of the participation game (SPEC §3, our formalisation of [G] §4, §7, §9, §11).

``N`` clients choose each round whether to participate and, if they do, a manipulation intensity ``u in [0, 1]``.
A participant's true contribution is ``q_i = q0 (1 - gamma u_i)``; model quality (welfare) is
``W = Q(z)``, ``z = sum_{i in P} q_i / N``; the server pays ``w y_i`` on the score ``y_i = (1 - pi) s_i + pi h_i``
(public, gameable ``s_i = q_i + delta u_i + noise``; private challenge ``h_i = q_i + noise'``; ``pi`` the challenge
mixing ratio, [G] Thm 9.4), audits ``k`` participants a round (uniformly, or the ``k`` with the largest score gap
``s_i - h_i``: risk-targeted, [G] §11), catches an audited one with probability ``p_detect u_i`` and then charges the
sanction ``S``; with side payments on score deviations it also charges ``C (y_i - M)^2`` (``M`` the mean paid score
of the participants; balanced: less the mean of the other participants' charges). A participant's round reward is
``phi W + w y_i - c_i - S 1[caught] - payment_i``; a non-participant gets its outside option ``o``.

Everything here is for a representative client (the mean ``q0`` and ``o``) with Gaussian participation costs
``c ~ max(0, N(c_mean, c_std))``, as SPEC §3's "Theory (mean-field, to reproduce)", except the retention map,
which averages over the clients' own ``q0_i`` and ``o_i`` where they differ (``client_q0``, ``client_outside_option``):

- :func:`gaming_slope`: the round reward is linear in ``u`` up to the welfare's curvature, with slope
  ``g = w((1 - pi) delta - gamma q0) - phi Q'(z) gamma q0 / N - (k / |P|) p_detect S``; the best reply is
  ``u = 1`` if ``g > 0``, else honesty (:func:`best_manipulation`). :func:`minimum_sanction` is the smallest ``S``
  with ``g <= 0``; :func:`manipulability_index` ``= max(g, 0)``.
- Beyond SPEC §3's linear case: risk-targeted audits (:func:`audit_probability`) and side payments on the score
  deviation (:func:`deviation_payment`) make the reward nonlinear in ``u``. :func:`gaming_gain` is then the exact
  gain of any ``u`` against honesty, and the best reply maximises it. Both leave the slope at ``u = 0`` as it is (a
  quadratic charge and a targeted audit cost nothing more at the margin), so :func:`minimum_sanction` stands; but a
  side payment alone cannot make honesty a best reply where ``g > 0``: it only caps the gain, at about
  ``g^2 / (4 kappa_n C b^2)`` (:func:`deviation_payment`), and where everybody games alike nobody deviates and
  nobody pays more.
- :func:`retention_map`: with myopic participation, ``x_{t+1} = G(x_t) = P[phi Q(x_t qbar) + w ybar - c -
  E[sanction] >= o]``; :func:`steady_states` are its fixed points (stable iff ``|G'(x*)| < 1``), and when it
  crosses the diagonal three times the middle crossing is the domino-exit threshold ([G] Thm 7.2,
  :func:`domino_threshold`); :func:`iterate_retention` follows a path, with or without rejoining.
- :func:`gaming_slope` with ``coalition=k`` and :func:`coalition_gain`: a coalition of ``k`` that games together
  and shares its rewards internalises ``k`` times the welfare loss (SPEC §7, "In the games"), so larger
  coalitions game less.
- :meth:`Setting.from_env`: the parameters of a ``participation_v0`` env and the mechanisms around it, so every
  closed form here reads the env's own configuration.
- :func:`price_of_gaming`: ``(W_honest - W_eq) / W_honest`` between the long-run welfare under honesty and under
  the myopic best replies (:func:`mean_field_path`: the steady state's, or a cycle's mean: with a fixed number of
  audits, gamers leaving raise the others' audit risk until gaming stops paying, and the dynamics can cycle).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy.integrate import trapezoid
from scipy.optimize import brentq
from scipy.stats import binom, norm

from fedgames.envs.config import name_hint
from fedgames.mechanisms.audit import AUDIT_POLICIES, MIXINGS, ScoreTest, check_audit_policy
from fedgames.validation import integer, real

WELFARE_CURVES = ("exponential", "s_shaped")


@dataclass(frozen=True)
class Setting:
    """The participation game's parameters (SPEC §3); defaults as there where it gives them.

    Attributes:
        n_players: ``N >= 2``.
        phi: value of the shared model to a participant.
        w: contribution payment rate.
        gamma: how much manipulation destroys of a contribution (``q = q0 (1 - gamma u)``), in ``[0, 1]``.
        delta: how much manipulation inflates the public score.
        pi: challenge-mixing ratio in ``[0, 1]``.
        mixing: ``"expected"`` (every participant paid ``(1 - pi) s + pi h``, every challenge score seen) or
            ``"random"`` (challenged with probability ``pi`` and then paid on ``h``; only those challenge scores
            seen): the same expected paid score, different variances and different evidence for targeted audits.
        audits: ``k``, participants audited per round.
        p_detect: probability that an audit catches full manipulation (``u = 1``).
        sanction: ``S``, charged to a caught participant.
        audit_policy: ``"uniform"`` (``k`` participants at random), ``"risk"`` (the ``k`` with the largest score
            gap ``s_i - h_i = delta u_i + noise``, ties at random) or ``"test"`` (the ``k`` with the largest
            GLS statistic of SPEC §8 over the rounds so far, ``sqrt(J_t) u_i + N(0, 1)`` in round ``t``).
        score_noise, challenge_noise: standard deviations of the public and the challenge scores' noise.
        C: side payment on the paid score's deviation from the participants' mean, ``C (y_i - M)^2``.
        balanced: the side payment is budget-balanced among the participants.
        q0: data quality of a client (the mean client's where they differ).
        outside_option: ``o``, a non-participant's round reward (the mean client's where they differ).
        client_q0, client_outside_option: each client's own ``q0_i`` and ``o_i`` where they differ (``()``: all alike);
            the retention map averages over them.
        c_mean, c_std: the participation cost ``max(0, N(c_mean, c_std))``.
        welfare: ``"exponential"`` (``Q(z) = 1 - exp(-kappa z)``) or ``"s_shaped"`` (``z^h / (z^h + z0^h)``).
        kappa, h, z0: the welfare curves' parameters.
    """

    n_players: int = 10
    phi: float = 1.0
    w: float = 0.5
    gamma: float = 0.5
    delta: float = 1.0
    pi: float = 0.0
    mixing: str = "expected"
    audits: int = 1
    p_detect: float = 0.5
    sanction: float = 0.0
    audit_policy: str = "uniform"
    score_noise: float = 0.1
    challenge_noise: float = 0.1
    C: float = 0.0
    balanced: bool = False
    q0: float = 1.0
    outside_option: float = 0.0
    client_q0: tuple[float, ...] = ()
    client_outside_option: tuple[float, ...] = ()
    c_mean: float = 0.5
    c_std: float = 0.2
    welfare: str = "exponential"
    kappa: float = 2.0
    h: float = 4.0
    z0: float = 0.5

    def __new__(cls, *args: Any, **kwargs: Any) -> Setting:
        """Refuse an unknown keyword with its did-you-mean (``n_clients``: ``'n_players'``, the game's spelling,
        :data:`~fedgames.envs.config.SYNONYMS`) before the dataclass's ``__init__`` gives Python's plain
        ``TypeError``."""
        names = [f.name for f in fields(cls)]
        for name in kwargs:
            if name not in names:
                raise TypeError(f"Setting: unknown parameter {name!r}{name_hint(name, names)} (parameters: {names})")
        return super().__new__(cls)

    @classmethod
    def from_env(cls, env: Any) -> Setting:
        """The parameters of ``env``, a ``participation_v0`` env with any mechanisms around it: its own config
        (through the game contract, :func:`~fedgames.envs.participation.game.participation_config`) and the
        mechanisms in force (``env.protocol``: the challenge-mixing ``pi``, the audits, the side payment), as
        :func:`~fedgames.envs.participation.game.theory_setting` reads them. A ``ValueError`` for another env, or
        where the mechanisms leave the mean-field theory (audits within a budget, several audit rules, side payments
        on a robust metric)."""
        from fedgames.envs.participation.game import participation_config, theory_setting  # game.py imports this

        return theory_setting(participation_config(env), env.protocol)

    def __post_init__(self) -> None:
        integer("n_players", self.n_players, 2)
        integer("audits", self.audits, 0)
        for name in ("phi", "w", "delta", "sanction", "q0", "kappa", "score_noise", "challenge_noise", "C"):
            real(name, getattr(self, name))
        real("z0", self.z0, strict=True)
        for name in ("gamma", "pi", "p_detect"):
            real(name, getattr(self, name), 0.0, 1.0)
        real("outside_option", self.outside_option, -math.inf)
        for name, minimum in (("client_q0", 0.0), ("client_outside_option", -math.inf)):
            values = getattr(self, name)
            if values and len(values) != self.n_players:
                raise ValueError(f"{name} must hold one value per client ({self.n_players}), got {len(values)}")
            for i, value in enumerate(values):
                real(f"{name}[{i}]", value, minimum)
        real("c_mean", self.c_mean, -math.inf)
        real("c_std", self.c_std, strict=True)
        real("h", self.h, 1.0)
        if self.welfare not in WELFARE_CURVES:
            raise ValueError(f"welfare must be one of {WELFARE_CURVES}, got {self.welfare!r}")
        check_audit_policy(self.audit_policy)
        if self.mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {MIXINGS}, got {self.mixing!r}")
        if not isinstance(self.balanced, (bool, np.bool_)):
            raise ValueError(f"balanced must be true or false, got {self.balanced!r}")


def welfare(z: float | np.ndarray, setting: Setting) -> float | np.ndarray:
    """``Q(z)``: increasing, ``Q(0) = 0``. The S-shaped curve ``z^h / (z^h + z0^h)`` is computed as written; where
    the powers overflow or both underflow (a large ``h``, a ``z0`` or ``z`` near 0 or far above 1) it is computed
    as ``1 / (1 + (z0 / z)^h)``, equal in exact arithmetic, whose ratio saturates to the right limit (0 or 1)."""
    z = np.asarray(z, dtype=float)
    if setting.welfare == "exponential":
        return 1.0 - np.exp(-setting.kappa * z)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        a, b = z**setting.h, np.float64(setting.z0) ** setting.h  # numpy: an overflow is inf, not an error
        q = a / (a + b)
        saturated = 1.0 / (1.0 + (setting.z0 / z) ** setting.h)
    return np.where(np.isfinite(q) | np.isnan(z), q, saturated)[()]


def welfare_slope(z: float | np.ndarray, setting: Setting) -> float | np.ndarray:
    """``Q'(z)``. The S-shaped curve's ``h z^(h-1) z0^h / (z^h + z0^h)^2``, where its powers overflow or
    underflow, as ``(h / z) Q (1 - Q)`` (equal in exact arithmetic; 0 where ``Q`` is 0 or 1 in float64), and at
    ``z = 0`` its limit (``1 / z0`` for ``h = 1``, else 0)."""
    z = np.asarray(z, dtype=float)
    if setting.welfare == "exponential":
        return setting.kappa * np.exp(-setting.kappa * z)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        a, b = z**setting.h, np.float64(setting.z0) ** setting.h  # numpy: an overflow is inf, not an error
        slope = setting.h * z ** (setting.h - 1) * b / (a + b) ** 2
        q = np.asarray(welfare(z, setting))
        spread = q * (1.0 - q)  # 0 where Q saturated: a flat curve, whatever h / z is
        inner = np.where(spread > 0, setting.h / z * spread, 0.0)
        saturated = np.where(z > 0, inner, 1.0 / setting.z0 if setting.h == 1 else 0.0)
    return np.where(np.isfinite(slope) | np.isnan(z), slope, saturated)[()]


def audit_rate(setting: Setting, participants: float) -> float:
    """``k / |P|``, the chance that a participant is audited (at most 1) when every participant plays alike, or
    under uniform audits whatever they play."""
    return min(1.0, setting.audits / participants) if participants > 0 else 0.0


def _manipulation_level(name: str, u: float | np.ndarray) -> np.ndarray:
    """``u`` as a float array, each value in ``[0, 1]``, else a ``ValueError`` naming ``name``."""
    values = np.asarray(u, dtype=float)
    if not np.all((values >= 0) & (values <= 1)):  # NaN fails too
        raise ValueError(f"{name} must lie in [0, 1], got {u!r}")
    return values


_RISK_NODES = np.linspace(-10.0, 10.0, 4001)
"""Where the risk-audit integral is evaluated: the own score noise in standard deviations (trapezoid rule)."""


def _outranked_at_most(n: int, k: int, ratio: np.ndarray) -> np.ndarray:
    """``E_e[P(Binomial(n - 1, Phi(-(ratio + e))) <= k - 1)]``, ``e ~ N(0, 1)``, for each ``ratio``."""
    if n <= k:
        return np.ones_like(ratio)
    others_ahead = norm.cdf(-(ratio[..., None] + _RISK_NODES))
    chance = binom.cdf(k - 1, n - 1, others_ahead) * norm.pdf(_RISK_NODES)
    return np.minimum(1.0, trapezoid(chance, _RISK_NODES, axis=-1))


def _challenged_share(setting: Setting) -> float:
    """The share of participants whose challenge score the server sees each round: all under expected mixing, or
    ``pi`` in ``{0, 1}`` under random challenges (a ``ValueError`` for targeted audits in between, where the
    evidence on each participant is random and the ranking has no closed form here)."""
    s = setting
    if s.mixing == "expected" or s.pi in (0.0, 1.0):
        return 1.0 if s.mixing == "expected" else s.pi
    raise ValueError(
        f"audit_probability knows targeted audits ({s.audit_policy!r}) when the server sees every challenge score "
        f"(mixing='expected', or random challenges with pi 0 or 1), not random challenges with pi = {s.pi}"
    )


def _separation(setting: Setting, rounds: int) -> float:
    """How far a unit of ``u`` moves a participant's audit ranking score, in the score noise's standard deviations
    (``inf`` without noise): ``delta / sqrt(score_noise^2 + challenge_noise^2)`` for the score gap (0 where the
    server sees no challenge score), ``sqrt(J)`` for the GLS statistic over ``rounds`` rounds, ``J = rounds
    ((delta - gamma q0)^2 / sigma_s^2 + c (gamma q0)^2 / sigma_h^2)`` with ``c`` the challenged share."""
    s, share = setting, _challenged_share(setting)
    if s.audit_policy == "test":
        if min(s.score_noise, s.challenge_noise) == 0:
            return math.inf
        test = ScoreTest(s.q0, s.delta, s.gamma, s.score_noise, s.challenge_noise)
        return math.sqrt(rounds * float(test.plain_information + share * test.challenge_information))
    sigma = math.hypot(s.score_noise, s.challenge_noise)
    if share == 0 or s.delta == 0:
        return 0.0
    return math.inf if sigma == 0 else s.delta / sigma


def audit_probability(
    setting: Setting, participants: float, u: float | np.ndarray = 0.0, others: float = 0.0, rounds: int = 1
) -> float | np.ndarray:
    """The chance that a participant playing ``u`` (a number or an array of them) is audited when the other
    ``|P| - 1`` play ``others``.

    Uniform audits: ``k / |P|``. Risk-targeted audits pick the ``k`` largest score gaps ``s_j - h_j = delta u_j +
    e_j``, ``e_j ~ N(0, sigma^2)``, ``sigma^2 = score_noise^2 + challenge_noise^2``; given its own noise ``e`` (in
    standard deviations) each other gap is larger with probability ``p(e) = Phi(-(r (u - others) + e))``,
    ``r = delta / sigma``, so the participant is audited with probability
    ``E_e[P(Binomial(|P| - 1, p(e)) <= k - 1)]`` (one integral on a fixed grid; for a fractional ``|P|`` the
    chances at the two nearest whole numbers interpolated). Audits by the GLS statistic (``"test"``) rank
    ``Z_j = sqrt(J) u_j + N(0, 1)``, the statistic of SPEC §8 over the episode's rounds so far: in round
    ``rounds`` of a participant that played ``u`` in each (and the others ``others``), ``J`` their information
    (a plain and, where the server sees it, a challenge score a round): the same with ``r = sqrt(J)``. Playing
    like the others, it is ``k / |P|`` either way. Targeted audits under random challenges with ``0 < pi < 1`` have
    no closed form here (a ``ValueError``)."""
    s = setting
    participants, rounds = real("participants", participants), integer("rounds", rounds, 1)
    u, others = _manipulation_level("u", u), float(_manipulation_level("others", others))
    rate = audit_rate(s, participants)
    if s.audit_policy == "uniform" or s.audits == 0 or participants <= s.audits or np.all(u == others):
        chance = np.full(u.shape, rate)
    else:
        lead, separation = u - others, _separation(s, rounds)
        if math.isinf(separation):  # no noise: the ranking is exact, ties broken at random
            chance = np.where(lead > 0, 1.0, np.where(lead == 0, rate, 0.0))
        elif separation == 0:  # no evidence on anybody: the lottery
            chance = np.full(u.shape, rate)
        else:
            low, high = math.floor(participants), math.ceil(participants)
            at_low, at_high = (_outranked_at_most(n, s.audits, separation * lead) for n in (low, high))
            chance = at_low + (participants - low) * (at_high - at_low)
            chance = np.where(lead == 0, rate, chance)
    return float(chance) if chance.ndim == 0 else chance


def deviation_payment(
    setting: Setting, participants: float, u: float | np.ndarray = 0.0, others: float = 0.0
) -> float | np.ndarray:
    """A participant's expected side payment ``C (y_i - M)^2`` on its paid score's deviation from the reported
    metric ``M``, the participants' mean paid score, when it plays ``u`` and the other ``n - 1 = |P| - 1`` play
    ``others``.

    The paid score is ``y = q0 + b u + eta``, ``b = (1 - pi) delta - gamma q0``, with variance ``V(u)``:
    ``tau^2 = (1 - pi)^2 score_noise^2 + pi^2 challenge_noise^2`` under expected mixing, and under random
    challenges (paid ``h`` with probability ``pi``, else ``s``) ``(1 - pi) score_noise^2 + pi challenge_noise^2 +
    pi (1 - pi) delta^2 u^2``. With ``d = b (u - others)``, ``V_i = V(u)`` and ``V_o = V(others)``:
    ``E[C (y_i - M)^2] = C ((1 - 1/n)^2 (d^2 + V_i) + V_o (n - 1) / n^2)``, and each other participant's is
    ``C (d^2 / n^2 + V_i / n^2 + V_o ((n - 1)^2 + n - 2) / n^2)``. Balanced, the participant also receives the
    mean of the others': net ``C (d^2 + V_i - V_o) (n - 2) / n``, 0 where everybody plays alike. So a lone gamer's
    charge grows like ``kappa_n C b^2 u^2``, ``kappa_n = (1 - 1/n)^2`` (plain) or ``(n - 2) / n`` (balanced).
    """
    s, n = setting, real("participants", participants)
    u, others = _manipulation_level("u", u), float(_manipulation_level("others", others))
    if s.C == 0 or n < 2:
        charge = np.zeros(u.shape)
    else:
        d = ((1 - s.pi) * s.delta - s.gamma * s.q0) * (u - others)
        own, rest = _paid_variance(s, u), _paid_variance(s, others)
        if s.balanced:
            charge = s.C * (d**2 + own - rest) * (n - 2) / n
        else:
            charge = s.C * ((1 - 1 / n) ** 2 * (d**2 + own) + rest * (n - 1) / n**2)
    return float(charge) if charge.ndim == 0 else charge


def _paid_variance(setting: Setting, u: float | np.ndarray) -> float | np.ndarray:
    """The variance of a paid score at manipulation ``u`` (:func:`deviation_payment`)."""
    s = setting
    if s.mixing == "random":
        return (1 - s.pi) * s.score_noise**2 + s.pi * s.challenge_noise**2 + s.pi * (1 - s.pi) * (s.delta * u) ** 2
    return ((1 - s.pi) * s.score_noise) ** 2 + (s.pi * s.challenge_noise) ** 2


def _paid_incentive(setting: Setting) -> float:
    """``w((1 - pi) delta - gamma q0)``: what gaming adds to a participant's score payment per unit of ``u``."""
    return setting.w * ((1 - setting.pi) * setting.delta - setting.gamma * setting.q0)


def _deterrence(setting: Setting, participants: float) -> float:
    """``(k / |P|) p_detect``: a participant's expected sanction per unit of ``u`` and of ``S``."""
    return audit_rate(setting, participants) * setting.p_detect


def _unsanctioned_slope(setting: Setting, z: float, coalition: int = 1) -> float:
    """``w((1 - pi) delta - gamma q0) - k phi Q'(z) gamma q0 / N``: the gaming slope before any sanction of a
    member of a coalition of ``k = coalition`` (1: a lone participant)."""
    s = setting
    return _paid_incentive(s) - coalition * s.phi * float(welfare_slope(z, s)) * s.gamma * s.q0 / s.n_players


def _coalition_size(setting: Setting, coalition: int) -> int:
    return integer("coalition", coalition, 1, setting.n_players)


def gaming_slope(setting: Setting, participants: float, z: float, coalition: int = 1) -> float:
    """``g = w((1 - pi) delta - gamma q0) - phi Q'(z) gamma q0 / N - (k / |P|) p_detect S``: the derivative of a
    participant's expected round reward in its own ``u`` (SPEC §3), at ``|P| = participants`` and ``z``.

    For a coalition of ``coalition`` members that game together and share their rewards (SPEC §7, "In the
    games"), the slope of its mean reward in their common ``u``: each member's manipulation lowers every member's
    welfare, so the coalition internalises ``coalition`` times the welfare loss, ``g_k = w((1 - pi) delta -
    gamma q0) - k phi Q'(z) gamma q0 / N - (k_audits / |P|) p_detect S``: larger coalitions game less."""
    k = _coalition_size(setting, coalition)
    return _unsanctioned_slope(setting, z, k) - _deterrence(setting, participants) * setting.sanction


def _welfare_lost(setting: Setting, z: float, manipulation: float | np.ndarray) -> np.ndarray:
    """``phi (Q(z) - Q(z - gamma q0 m / N))``: the welfare a participant loses when the participants' total
    manipulation is ``m`` (``z`` counting it honest)."""
    s = setting
    return np.asarray(s.phi * (welfare(z, s) - welfare(z - s.gamma * s.q0 * manipulation / s.n_players, s)))


def coalition_gain(
    setting: Setting, participants: float, z: float, u: float | np.ndarray = 1.0, coalition: int = 1
) -> float | np.ndarray:
    """The exact gain in a coalition member's expected round reward (the coalition's mean) when its
    ``coalition`` members all play ``u`` instead of honesty, the other participants honest (SPEC §7):
    ``w((1 - pi) delta - gamma q0) u - phi (Q(z) - Q(z - k gamma q0 u / N)) - (k_audits / |P|) p_detect S u``,
    which :func:`gaming_slope` (``coalition=k``) linearises. For uniform audits without side payments (SPEC §3's
    linear case; a ``ValueError`` otherwise: then the members' audit chances and charges depend on each other)."""
    s = setting
    if not _linear_in_u(s):
        raise ValueError("coalition_gain knows uniform audits without side payments (the reward linear in u)")
    k = _coalition_size(s, coalition)
    u = _manipulation_level("u", u)
    gain = (_paid_incentive(s) - _deterrence(s, participants) * s.sanction) * u - _welfare_lost(s, z, k * u)
    return float(gain) if gain.ndim == 0 else gain


def gaming_gain(
    setting: Setting, participants: float, z: float, u: float | np.ndarray = 1.0, others: float = 0.0
) -> float | np.ndarray:
    """The exact gain in expected round reward of manipulation ``u`` (a number or an array of them) over honesty
    for one participant, the other ``|P| - 1`` playing ``others`` (``z`` counts its honest contribution): the
    score payment's ``w b u``, less the welfare lost, the expected sanction ``S p_detect u P[audited]``
    (:func:`audit_probability`; audits by the GLS statistic: the first round's chance, later rounds' evidence
    accumulates) and the extra side payment (:func:`deviation_payment`). At ``u = 1`` with uniform
    audits and no side payment, this is :func:`gaming_slope` with the welfare's difference in place of its
    derivative."""
    s = setting
    u = _manipulation_level("u", u)
    lost = _welfare_lost(s, z, u)
    sanction = s.sanction * s.p_detect * u * audit_probability(s, participants, u, others)
    charged = deviation_payment(s, participants, u, others) - deviation_payment(s, participants, 0.0, others)
    gain = _paid_incentive(s) * u - lost - sanction - charged
    return float(gain) if gain.ndim == 0 else gain


def _linear_in_u(setting: Setting) -> bool:
    """Whether the reward is linear in ``u`` up to the welfare's curvature (SPEC §3's case): uniform audits, no
    side payment."""
    return setting.audit_policy == "uniform" and setting.C == 0


def best_manipulation(setting: Setting, participants: float, z: float, others: float = 0.0, grid: int = 401) -> float:
    """The best reply's ``u`` when the other participants play ``others``: in SPEC §3's linear case 1 where gaming
    pays (``g > 0``), else 0 (honesty); with risk-targeted audits or side payments, the ``u`` of a ``grid``-point
    grid on ``[0, 1]`` with the largest :func:`gaming_gain` (0 on ties)."""
    if _linear_in_u(setting):
        return 1.0 if gaming_slope(setting, participants, z) > 0 else 0.0
    return _grid_reply(setting, float(participants), float(z), float(others), integer("grid", grid, 2))


@functools.lru_cache(maxsize=4096)
def _grid_reply(setting: Setting, participants: float, z: float, others: float, grid: int) -> float:
    """:func:`best_manipulation`'s grid search (remembered: a settled mean-field path asks the same again, and a
    risk-targeted audit's integral takes about 0.3 s at 2000 clients)."""
    us = np.linspace(0.0, 1.0, grid)
    gains = np.asarray(gaming_gain(setting, participants, z, us, others))
    return float(us[int(np.argmax(gains))]) if gains.max() > 0 else 0.0


def with_own_honesty(z: float | np.ndarray, setting: Setting, played: float | np.ndarray) -> float | np.ndarray:
    """The participants' total contribution ``z`` (everyone playing ``played``) with one participant's own counted
    honest, ``z + gamma q0 played / N``: the ``z`` that :func:`gaming_gain` and :func:`best_manipulation` take."""
    return z + setting.gamma * setting.q0 * np.asarray(played) / setting.n_players


def symmetric_manipulation(setting: Setting, participants: float | None = None, rounds: int = 200) -> float:
    """The manipulation ``u`` that is a best reply to itself when ``participants`` (default: every client) all
    play it: replies iterated from honesty, ``u <- best_manipulation(..., others=u)``, until one repeats. In SPEC
    §3's linear case the one-shot reply; under a side payment the replies creep up to full gaming where ``g > 0``
    (the charge bites only on deviations from the others). A ``ValueError`` if the replies do not settle."""
    s = setting
    n = float(s.n_players if participants is None else real("participants", participants, strict=True))
    u = 0.0
    for _ in range(integer("rounds", rounds, 1)):
        total = float(with_own_honesty(n * s.q0 * (1 - s.gamma * u) / s.n_players, s, u))
        reply = best_manipulation(s, n, total, others=u)
        if reply == u:
            return u
        u = reply
    raise ValueError(f"the best replies do not settle on a symmetric manipulation within {rounds} rounds (last {u})")


def manipulability_index(setting: Setting, participants: float, z: float) -> float:
    """``Mi = max(g, 0)``: the per-round private gain of gaming over honesty (linearised)."""
    return max(gaming_slope(setting, participants, z), 0.0)


def minimum_sanction(setting: Setting, participants: float, z: float) -> float:
    """``S_min = max(0, (w((1 - pi) delta - gamma q0) - phi Q'(z) gamma q0 / N) |P| / (k p_detect))``: the
    smallest sanction that makes honesty a best reply (``inf`` without audits or detection while gaming pays)."""
    incentive = _unsanctioned_slope(setting, z)
    if incentive <= 0:
        return 0.0
    deterrence = _deterrence(setting, participants)
    return incentive / deterrence if deterrence > 0 else math.inf


def participation_value(x: float, setting: Setting, u: float = 0.0) -> float:
    """A participant's expected round reward before its cost when a fraction ``x`` of the clients participates,
    all with manipulation ``u``: ``phi Q(x qbar) + w ybar - E[sanction] - E[side payment]``
    (``qbar = q0 (1 - gamma u)``, ``ybar = qbar + (1 - pi) delta u``; the side payment charges the scores' noise
    alone, :func:`deviation_payment`)."""
    s = setting
    quality = s.q0 * (1 - s.gamma * u)
    score = quality + (1 - s.pi) * s.delta * u
    sanction = _deterrence(s, x * s.n_players) * u * s.sanction
    charged = deviation_payment(s, x * s.n_players, u, u)
    return float(s.phi * float(welfare(x * quality, s)) + s.w * score - sanction - charged)


def retention_map(x: float, setting: Setting, u: float = 0.0) -> float:
    """``G(x) = P_i[c_i <= value_i(x) - o_i]``, the fraction that participates next round when ``x`` does now
    (myopic clients, costs ``max(0, N(c_mean, c_std))``): the mean over the clients (``client_q0``,
    ``client_outside_option``; all alike where not given) of the chance that the value of taking part covers the cost.
    A client's value is :func:`participation_value` with its own expected paid score, ``w (q0_i - q0)(1 - gamma
    u)`` more than the mean client's."""
    s = setting
    edge = s.w * (np.asarray(s.client_q0 or (s.q0,)) - s.q0) * (1 - s.gamma * u)
    margin = participation_value(x, s, u) + edge - np.asarray(s.client_outside_option or (s.outside_option,))
    covered = np.where(margin < 0, 0.0, norm.cdf((margin - s.c_mean) / s.c_std))
    return float(covered.mean())


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


def iterate_retention(
    x0: float, setting: Setting, u: float = 0.0, rounds: int = 200, rejoin: bool = True
) -> np.ndarray:
    """The participation path ``x_0, x_1, ...`` (``rounds + 1`` values) of myopic clients whose costs stay fixed
    through an episode.

    ``rejoin`` (clients decide afresh every round): ``x_{t+1} = G(x_t)``. Without it an exit is for good, so the
    clients left after round t are those whose cost every value so far covered, and since the value rises with
    participation, ``x_{t+1} = G(min_{s <= t} x_s)``: participation can fall but never recover.
    """
    path = [real("x0", x0, 0.0, 1.0)]
    lowest = path[0]
    for _ in range(integer("rounds", rounds, 0)):
        path.append(retention_map(path[-1] if rejoin else lowest, setting, u))
        lowest = min(lowest, path[-1])
    return np.array(path)


@dataclass(frozen=True)
class MeanFieldPath:
    """Rounds of the mean-field dynamics from ``x[0]``: in round ``t`` the clients choose ``u[t]``, a fraction
    ``x[t + 1] = G(x[t])`` of them takes part (at that manipulation) and the model's quality is ``welfare[t]``."""

    x: np.ndarray
    u: np.ndarray
    welfare: np.ndarray


def welfare_inverse(value: float | np.ndarray, setting: Setting) -> float | np.ndarray:
    """``z`` with ``Q(z) = value`` (``value`` in ``[0, 1)``): what a client infers of the participants' total
    contribution from the welfare it observed."""
    value = np.clip(np.asarray(value, dtype=float), 0.0, 1.0 - 1e-15)
    if setting.welfare == "exponential":
        return -np.log1p(-value) / setting.kappa
    return setting.z0 * (value / (1.0 - value)) ** (1.0 / setting.h)


def mean_field_path(setting: Setting, x0: float = 1.0, rounds: int = 500, u: float | None = None) -> MeanFieldPath:
    """The joint dynamics of participation and manipulation from ``x0`` (the first round's decisions see ``x0``
    and honest contributions). ``u=None``: each round every client plays the myopic best reply
    (:func:`best_manipulation`) at the last round's ``(|P|, z)`` against the others' last ``u``, and takes part
    by the retention map at that manipulation; a number: everybody plays that ``u``.

    With a fixed number ``k`` of audits the path need not settle: as participants leave, each one's audit risk
    ``k / |P|`` grows until gaming stops paying, participation recovers, and gaming resumes (a cycle)."""
    x = [real("x0", x0, 0.0, 1.0)]
    if u is not None:
        u = real("u", u, 0.0, 1.0)
    us: list[float] = []
    welfares: list[float] = []
    z, played = x[0] * setting.q0, 0.0
    for _ in range(integer("rounds", rounds, 1)):
        if u is None:
            played = best_manipulation(
                setting, x[-1] * setting.n_players, float(with_own_honesty(z, setting, played)), others=played
            )
        else:
            played = u
        x.append(retention_map(x[-1], setting, played))
        z = x[-1] * setting.q0 * (1 - setting.gamma * played)
        us.append(played)
        welfares.append(float(welfare(z, setting)))
    return MeanFieldPath(np.array(x), np.array(us), np.array(welfares))


def mean_field_equilibrium(setting: Setting, x0: float = 1.0, rounds: int = 500) -> tuple[float, float]:
    """``(x, u)`` where the joint dynamics (:func:`mean_field_path`) settle; a ``ValueError`` where they do not
    (still moving after ``rounds`` rounds, or cycling: :func:`price_of_gaming` then averages over the cycle)."""
    path = mean_field_path(setting, x0, rounds)
    if len(path.u) < 2 or path.u[-1] != path.u[-2] or abs(path.x[-1] - path.x[-2]) > 1e-9:
        tail = path.x[-6:]
        raise ValueError(
            f"the mean-field dynamics do not settle within {rounds} rounds (last participation levels "
            f"{np.round(tail, 4).tolist()}, manipulation {path.u[-5:].tolist()}); see mean_field_path"
        )
    return float(path.x[-1]), float(path.u[-1])


def price_of_gaming(setting: Setting, x0: float = 1.0, rounds: int = 500, tail: int = 100) -> float:
    """``PoG = (W_honest - W_eq) / W_honest``: the long-run welfare of everybody honest against that of the
    myopic best replies (:func:`mean_field_path`), each averaged over the last ``tail`` rounds (the steady state's
    welfare where the path settles, the cycle's mean where it cycles)."""
    rounds, tail = integer("rounds", rounds, 1), integer("tail", tail, 1)
    if tail > rounds:
        raise ValueError(f"tail must be at most rounds = {rounds}, got {tail}")
    w_honest = float(mean_field_path(setting, x0, rounds, u=0.0).welfare[-tail:].mean())
    w_eq = float(mean_field_path(setting, x0, rounds).welfare[-tail:].mean())
    return (w_honest - w_eq) / w_honest if w_honest > 0 else 0.0


__all__ = [
    "AUDIT_POLICIES",
    "WELFARE_CURVES",
    "MeanFieldPath",
    "Setting",
    "SteadyState",
    "audit_probability",
    "audit_rate",
    "best_manipulation",
    "check_audit_policy",
    "coalition_gain",
    "deviation_payment",
    "domino_threshold",
    "gaming_gain",
    "gaming_slope",
    "iterate_retention",
    "manipulability_index",
    "mean_field_equilibrium",
    "mean_field_path",
    "minimum_sanction",
    "participation_value",
    "price_of_gaming",
    "retention_map",
    "steady_states",
    "symmetric_manipulation",
    "welfare",
    "welfare_inverse",
    "welfare_slope",
    "with_own_honesty",
]
