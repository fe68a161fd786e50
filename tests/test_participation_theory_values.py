"""The participation theory's closed forms at small cases worked by hand or computed independently (a bivariate
normal for the risk audits, the definitions of the maps for the dynamics), and its boundaries (SPEC §3, [G] §7,
§11; ``fedgames.envs.participation.theory``), written to kill the mutants the other theory tests leave alive
(docs/testing.md)."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm

from fedgames.envs.participation import theory as t
from fedgames.eval.domino import DOMINO_CONFIG

OUTSIDE = "outside_option" if "outside_option" in {f.name for f in dataclasses.fields(t.Setting)} else "outside"
"""The outside option's field (``outside_option``; ``outside`` before the rename)."""
PLAYERS = "n_players" if OUTSIDE == "outside_option" else "n_clients"
"""``N``'s field (``n_players``; ``n_clients`` before the rename)."""

DOMINO = t.Setting(**DOMINO_CONFIG)
FREE = t.Setting(sanction=0.0, c_mean=-5.0)
"""Participation free (everybody always takes part, ``G = 1`` exactly) and gaming unsanctioned."""


# ---------------------------------------------------------------------------------------------------------------
# Parameters and small pieces
# ---------------------------------------------------------------------------------------------------------------


def test_the_s_shaped_welfare_by_hand_at_its_defaults():
    """SPEC §3's ``Q(z) = z^h / (z^h + z0^h)``, ``h = 4``, ``z0 = 0.5``: ``Q(z0) = 1/2``, ``Q(2 z0) = 16/17``,
    ``Q'(z0) = h / (4 z0) = 2``; the exponential ``Q'(z) = kappa e^{-kappa z}``."""
    s = t.Setting(welfare="s_shaped")
    assert t.welfare(0.5, s) == pytest.approx(0.5, rel=1e-12)
    assert t.welfare(1.0, s) == pytest.approx(16 / 17, rel=1e-12)
    assert t.welfare_slope(0.5, s) == pytest.approx(2.0, rel=1e-12)
    assert t.welfare_slope(0.5, t.Setting()) == pytest.approx(2 * math.exp(-1), rel=1e-12)


@pytest.mark.parametrize(
    "changes, name",
    [
        ({"client_q0": (1.0,) * 9 + (-0.5,)}, r"client_q0\[9\] must be a finite number >= 0"),
        ({"h": 0.5}, "h must be a finite number >= 1"),
    ],
)
def test_bad_settings_name_the_parameter(changes, name):
    with pytest.raises(ValueError, match=name):
        t.Setting(**changes)


def test_settings_at_their_bounds_are_accepted():
    assert t.Setting(client_q0=(0.0,) + (0.5,) * 9).client_q0[0] == 0.0
    assert t.Setting(welfare="s_shaped", h=1.0).h == 1.0


def test_the_audit_rate_is_k_over_the_participants_at_most_one():
    s = t.Setting(audits=3)
    assert t.audit_rate(s, 12) == 0.25
    assert t.audit_rate(s, 2) == 1.0  # fewer participants than audits: each is audited
    assert t.audit_rate(t.Setting(audits=1), 0.5) == 1.0  # half a participant in the mean field
    assert t.audit_rate(s, 0) == 0.0


def test_with_own_honesty_by_hand():
    """``z + gamma q0 played / N`` with ``q0 = 2`` (not ``gamma / q0``): ``0.3 + 0.25 * 2 * 0.6 / 10``."""
    s = t.Setting(q0=2.0, gamma=0.25)
    assert t.with_own_honesty(0.3, s, 0.6) == pytest.approx(0.33, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Audit probabilities: risk-targeted and GLS-targeted, against a bivariate normal
# ---------------------------------------------------------------------------------------------------------------

RISK = t.Setting(audit_policy="risk", audits=1, score_noise=0.3, challenge_noise=0.4)
"""``r = delta / sigma = 1 / 0.5 = 2``: at ``u - others = 0.5`` the own gap leads each other by ``N(1, 2)`` (in the
noise's standard deviations)."""


def lead_probabilities(m: float) -> tuple[float, float, float]:
    """Independently of the library's quadrature: the differences ``D_j = m + e - e_j`` of the own standardised
    gap and two others' are ``N(m, 2)`` with correlation 1/2. ``P(D_1 > 0)`` (2 participants, 1 audit),
    ``P(D_1 > 0, D_2 > 0)`` (3, 1), ``1 - P(D_1 < 0, D_2 < 0)`` (3, 2)."""
    cov = [[2.0, 1.0], [1.0, 2.0]]
    both = multivariate_normal(mean=[0.0, 0.0], cov=cov)
    return float(norm.cdf(m / math.sqrt(2))), float(both.cdf([m, m])), 1 - float(both.cdf([-m, -m]))


@pytest.mark.parametrize("mixing, pi", [("expected", 0.0), ("expected", 0.5), ("random", 1.0)])
def test_risk_audit_probability_against_a_bivariate_normal(mixing, pi):
    """The server sees every challenge score (expected mixing at any ``pi``, or every participant challenged): a
    lone gamer's chance of being audited by the largest score gap."""
    s = replace(RISK, mixing=mixing, pi=pi)
    two, three, three_two = lead_probabilities(1.0)
    assert t.audit_probability(s, 2, 0.5) == pytest.approx(two, rel=1e-9)
    assert t.audit_probability(s, 3, 0.5) == pytest.approx(three, rel=1e-9)
    assert t.audit_probability(replace(s, audits=2), 3, 0.5) == pytest.approx(three_two, rel=1e-9)
    # vectorised: the same values at once, and an honest one among others playing 0.5
    both = t.audit_probability(s, 3, np.array([0.5, 0.7]), others=0.2)
    assert isinstance(both, np.ndarray) and both[0] == pytest.approx(lead_probabilities(0.6)[1], rel=1e-9)
    assert both[1] == pytest.approx(three, rel=1e-9)
    assert t.audit_probability(s, 3, 0.0, others=0.5) == pytest.approx(lead_probabilities(-1.0)[1], rel=1e-9)


def test_audit_probability_needs_a_round():
    assert t.audit_probability(RISK, 4) == 0.25  # by default an honest participant among honest ones: k / |P|
    with pytest.raises(ValueError, match="rounds"):
        t.audit_probability(replace(RISK, audit_policy="test"), 3, 0.5, rounds=0)


def test_a_certain_audit_is_at_most_one():
    for n in (3, 5, 40):
        assert t.audit_probability(replace(RISK, score_noise=0.01, challenge_noise=0.01), n, 1.0) <= 1.0


def test_without_challenge_scores_risk_audits_are_a_lottery():
    """Random challenges with ``pi = 0``: the server sees no score gap, so every participant is audited with
    probability ``k / |P|`` whatever it plays; with ``0 < pi < 1`` there is no closed form here."""
    s = replace(RISK, mixing="random", pi=0.0)
    assert t.audit_probability(s, 4, 1.0) == 0.25
    with pytest.raises(ValueError, match="random challenges with pi = 0.5"):
        t.audit_probability(replace(s, pi=0.5), 4, 1.0)


@pytest.mark.parametrize("mixing, pi, share", [("expected", 0.3, 1.0), ("random", 0.0, 0.0), ("random", 1.0, 1.0)])
@pytest.mark.parametrize("score_noise", [0.5, 1.0])
def test_gls_audit_probability_by_hand(mixing, pi, share, score_noise):
    """Audits by the GLS statistic ``Z = sqrt(J) u + N(0, 1)`` over ``rounds = 3``: of two participants the one
    that leads by ``u - others = 0.4`` is audited with probability ``Phi(0.4 sqrt(J) / sqrt(2))``, ``J = 3 ((delta -
    gamma q0)^2 / sigma_s^2 + c (gamma q0)^2 / sigma_h^2)`` with ``c`` the challenged share;
    ``delta - gamma q0 = 0.5``, ``gamma q0 = 0.5``, ``sigma_h = 0.25``."""
    s = t.Setting(audit_policy="test", score_noise=score_noise, challenge_noise=0.25, mixing=mixing, pi=pi)
    J = 3 * (0.25 / score_noise**2 + share * 0.25 / 0.0625)
    expected = norm.cdf(0.4 * math.sqrt(J) / math.sqrt(2))
    assert t.audit_probability(s, 2, 0.6, others=0.2, rounds=3) == pytest.approx(expected, rel=1e-9)
    first = norm.cdf(0.4 * math.sqrt(J / 3) / math.sqrt(2))  # by default the first round's
    assert t.audit_probability(s, 2, 0.6, others=0.2) == pytest.approx(first, rel=1e-9)


def test_noiseless_scores_rank_exactly():
    """Without noise the ranking is exact: whoever manipulates more than the others is audited, less never, as much
    at the rate ``k / |P|`` (no division by a zero variance on the way)."""
    for policy in ("risk", "test"):
        s = t.Setting(audit_policy=policy, audits=1, score_noise=0.0, challenge_noise=0.1 if policy == "test" else 0)
        chances = t.audit_probability(s, 4, np.array([0.0, 0.3, 0.6]), others=0.3)
        assert chances.tolist() == [0.0, 0.25, 1.0]
    exact = t.Setting(audit_policy="risk", audits=2, score_noise=0.0, challenge_noise=0.0)
    assert t.audit_probability(exact, 2, 0.0, others=0.5) == 1.0  # as many audits as participants


# ---------------------------------------------------------------------------------------------------------------
# Gains, slopes, replies
# ---------------------------------------------------------------------------------------------------------------


def test_the_gaming_slope_with_a_quality_other_than_one():
    """``q0 = 2``, ``gamma = 0.25``, ``delta = 1.5``: ``w((1 - pi) delta - gamma q0) = 0.5``, the welfare term
    ``phi kappa e^{-kappa z} gamma q0 / N = 0.1 e^-2`` at ``z = 1``, the sanction's ``(1/10) 0.5 * 1``."""
    s = t.Setting(q0=2.0, gamma=0.25, delta=1.5, sanction=1.0)
    assert t.gaming_slope(s, 10, 1.0) == pytest.approx(0.5 - 0.1 * math.exp(-2) - 0.05, rel=1e-12)


def test_the_coalition_gain_by_hand():
    """``coalition = 2`` playing ``u = 0.5`` at ``|P| = 10``, ``z = 1``, ``S = 2``: ``(w b - (1/10) 0.5 * 2) u -
    (Q(1) - Q(1 - 2 * 0.5 * 0.5 / 10))`` with ``w b = 0.25``; alone (the default) ``Q(1 - 0.025)``."""
    s = t.Setting(sanction=2.0)
    q = lambda z: 1 - math.exp(-2 * z)  # noqa: E731
    pair = t.coalition_gain(s, 10, 1.0, 0.5, coalition=2)
    assert isinstance(pair, float) and pair == pytest.approx(0.15 * 0.5 - (q(1) - q(0.95)), rel=1e-12)
    assert t.coalition_gain(s, 10, 1.0, 0.5) == pytest.approx(0.15 * 0.5 - (q(1) - q(0.975)), rel=1e-12)
    assert t.coalition_gain(s, 10, 1.0) == pytest.approx(0.15 - (q(1) - q(0.95)), rel=1e-12)
    assert isinstance(t.coalition_gain(s, 10, 1.0, np.array([0.5])), np.ndarray)
    with pytest.raises(ValueError, match="coalition"):
        t.coalition_gain(s, 10, 1.0, coalition=0)


def test_the_side_payment_of_honest_participants_is_their_noise():
    """Everybody honest (the defaults ``u = others = 0``): ``C V (n - 1) / n``, a number; ``V = 0.1^2``."""
    s = t.Setting(C=0.5)
    charge = t.deviation_payment(s, 4)
    assert isinstance(charge, float) and charge == pytest.approx(0.5 * 0.01 * 3 / 4, rel=1e-12)


def test_the_best_reply_at_a_flat_slope_is_honesty():
    """``g = 0`` exactly (no welfare value, ``(1 - pi) delta = gamma q0``, no sanction): gaming does not pay, so the
    reply is honesty; a grid of two points (``u`` in ``{0, 1}``) is allowed, one is not."""
    flat = t.Setting(phi=0.0, delta=0.5)
    assert t.gaming_slope(flat, 10, 1.0) == 0.0 and t.best_manipulation(flat, 10, 1.0) == 0.0
    charged = t.Setting(C=0.1, sanction=0.0)
    assert t.best_manipulation(charged, 10, 1.0, grid=2) == (1.0 if t.gaming_gain(charged, 10, 1.0, 1.0) > 0 else 0)
    with pytest.raises(ValueError, match="grid"):
        t.best_manipulation(charged, 10, 1.0, grid=1)


def test_without_audits_no_sanction_deters():
    assert t.minimum_sanction(t.Setting(audits=0), 10, 1.0) == math.inf
    assert t.minimum_sanction(t.Setting(audits=0, delta=0.1), 10, 1.0) == 0.0  # gaming does not pay anyway
    flat = t.Setting(audits=0, delta=0.0, gamma=0.0)  # gaming changes nothing: a slope of exactly 0
    assert t.gaming_slope(flat, 10, 1.0) == 0.0 and t.minimum_sanction(flat, 10, 1.0) == 0.0


def test_the_symmetric_manipulation_is_iterated_from_honesty():
    """Where gaming pays, honesty's reply is full gaming and the next reply confirms it: two rounds settle, one does
    not."""
    assert t.symmetric_manipulation(FREE, rounds=2) == 1.0
    with pytest.raises(ValueError, match="do not settle"):
        t.symmetric_manipulation(FREE, rounds=1)
    with pytest.raises(ValueError, match="participants must be a finite number > 0"):
        t.symmetric_manipulation(FREE, participants=0)


def test_the_symmetric_manipulation_counts_the_others_manipulation_in_z():
    """Two players, ``gamma = 1``, ``delta = 1.5`` (``w b = 0.25``): against honest others ``z = 1`` and the welfare
    term ``phi kappa e^{-2} / 2 = e^-2 < 0.25``, gaming pays; if both game, ``z = 0 + 1/2`` (one's own counted honest)
    and ``e^-1 > 0.25``, it does not: the replies alternate and never settle."""
    s = t.Setting(**{PLAYERS: 2}, gamma=1.0, delta=1.5, sanction=0.0)
    assert t.best_manipulation(s, 2, 1.0) == 1.0 and t.best_manipulation(s, 2, 0.5, others=1.0) == 0.0
    with pytest.raises(ValueError, match="do not settle"):
        t.symmetric_manipulation(s)
    path = t.mean_field_path(replace(s, c_mean=-5.0), rounds=6)
    assert path.u.tolist() == [1.0, 0.0] * 3 and np.all(path.x == 1.0)
    with pytest.raises(ValueError, match=re.escape("within 500 rounds (last participation levels [1.0, 1.0")):
        t.mean_field_equilibrium(replace(s, c_mean=-5.0))
    # the cycle's welfare: Q(1) in the honest rounds, Q(0) = 0 in the gamed ones, half of the last 100 each
    assert t.price_of_gaming(replace(s, c_mean=-5.0)) == pytest.approx(0.5, rel=1e-12)
    levels = "last participation levels [1.0, 1.0, 1.0, 1.0, 1.0, 1.0], manipulation [0.0, 1.0, 0.0, 1.0, 0.0])"
    with pytest.raises(ValueError, match=re.escape(levels)):
        t.mean_field_equilibrium(replace(s, c_mean=-5.0), rounds=6)


def test_the_first_round_sees_honest_contributions():
    """Two players, ``phi = 2``: at honest ``z = 1`` the welfare term ``2 e^-2 = 0.27 > 0.25`` deters gaming (had the
    first round counted a gamed ``z = 1.5``, ``2 e^-3 < 0.25`` would not): honesty from the first round on."""
    s = t.Setting(**{PLAYERS: 2}, phi=2.0, gamma=1.0, delta=1.5, sanction=0.0)
    assert t.mean_field_path(replace(s, c_mean=-5.0), rounds=3).u.tolist() == [0.0, 0.0, 0.0]
    # q0 = 2, gamma = 0.5 (gamma q0 = 1): the first round's honest z = x0 q0 = 2 leaves the welfare term at
    # phi e^-4 = 0.04 < w b = 0.25, so gaming pays from the first round; gamed, z = 1 + 1/2 and 2 e^-3 = 0.1 < 0.25
    s = t.Setting(**{PLAYERS: 2}, phi=2.0, q0=2.0, gamma=0.5, delta=1.5, sanction=0.0, c_mean=-5.0)
    assert t.mean_field_path(s, rounds=3).u.tolist() == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------------------------
# The retention map and its fixed points
# ---------------------------------------------------------------------------------------------------------------


def test_the_retention_map_with_clients_who_differ_by_hand():
    """Clients of qualities ``0.5`` and ``1.5`` (five each, mean 1), ``u = 0.5``, half taking part: the mean
    client's value ``Q(0.5 * 0.75) + w (0.75 + 0.5) = 1 - e^-0.75 + 0.625``; a client's own paid score moves it by
    ``w (q0_i - 1)(1 - gamma u) = -+0.1875``; each is covered with probability ``Phi((value - c_mean) / c_std)``."""
    s = t.Setting(client_q0=(0.5, 1.5) * 5)
    value = 1 - math.exp(-0.75) + 0.625
    expected = np.mean([norm.cdf((value + edge - 0.5) / 0.2) for edge in (-0.1875, 0.1875)])
    assert t.retention_map(0.5, s, 0.5) == pytest.approx(expected, rel=1e-12)


def test_a_value_that_just_covers_the_outside_option_keeps_the_free_participants():
    """Value exactly the outside option (``phi = 0``, ``w q0 = 0.5 = o``): a client stays when its cost is at most
    0, which ``max(0, N(0.5, 0.2))`` is with probability ``Phi(-2.5)``."""
    s = t.Setting(phi=0.0, **{OUTSIDE: 0.5})
    assert t.retention_map(0.3, s) == pytest.approx(norm.cdf(-2.5), rel=1e-12)


def test_the_fixed_points_at_the_ends():
    """An outside option no value covers: ``G = 0``, one fixed point, ``x = 0``, stable. Free participation:
    ``G = 1``, one fixed point, ``x = 1`` (the grid's last point)."""
    assert t.steady_states(t.Setting(**{OUTSIDE: 5.0})) == [t.SteadyState(0.0, 0.0, True)]
    assert t.steady_states(FREE) == [t.SteadyState(1.0, 0.0, True)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.SteadyState(0.0, 0.0, True).x = 1.0  # type: ignore[misc]


def test_a_crossing_steeper_than_the_diagonal_is_unstable():
    """The domino setting with ``c_std = 0.3``: the middle crossing's slope lies between 1 and 2 (a finite
    difference of ``G`` itself), unstable; the outer ones are flatter than the diagonal, stable."""
    s = replace(DOMINO, c_std=0.3)
    states = t.steady_states(s)
    middle = states[1].x
    slope = (t.retention_map(middle + 1e-5, s) - t.retention_map(middle - 1e-5, s)) / 2e-5
    assert 1 < slope < 2
    assert [state.stable for state in states] == [True, False, True]


def test_a_path_without_rejoining_follows_its_lowest_point():
    """Below the domino threshold participation falls each round, so without rejoining ``x_{t+1} = G(x_t)``, the
    lowest so far being the last; ``x0`` must lie in ``[0, 1]``."""
    path = t.iterate_retention(t.domino_threshold(DOMINO) - 0.05, DOMINO, rounds=4, rejoin=False)
    assert np.all(np.diff(path) < 0)
    for before, after in zip(path[:-1], path[1:]):
        assert after == t.retention_map(before, DOMINO)
    for x0 in (-0.5, 1.5):
        with pytest.raises(ValueError, match="x0"):
            t.iterate_retention(x0, DOMINO)
    assert t.iterate_retention(0.3, DOMINO, rounds=0).tolist() == [0.3]
    assert t.iterate_retention(0.3, DOMINO).shape == (201,)  # 200 rounds by default, and the start
    with pytest.raises(ValueError, match="rounds"):
        t.iterate_retention(0.3, DOMINO, rounds=-1)


# ---------------------------------------------------------------------------------------------------------------
# The mean-field dynamics and the price of gaming
# ---------------------------------------------------------------------------------------------------------------


def test_the_mean_field_defaults_start_from_full_participation():
    """``x0 = 1``, 500 rounds, ``tail = 100``: from full participation the domino setting with gaming deterred keeps
    its high steady state; from none it collapses."""
    path = t.mean_field_path(DOMINO)
    assert len(path.u) == 500 and path.x[0] == 1.0
    deterred = replace(DOMINO, sanction=5.0)
    high = t.mean_field_equilibrium(deterred)
    assert high == t.mean_field_equilibrium(deterred, 1.0) and high[0] > t.domino_threshold(deterred)
    assert t.mean_field_equilibrium(deterred, 0.0)[0] < t.domino_threshold(deterred)
    assert t.price_of_gaming(DOMINO) == t.price_of_gaming(DOMINO, 1.0, 500, 100)
    assert t.price_of_gaming(DOMINO) != t.price_of_gaming(DOMINO, 0.0)


def test_the_equilibrium_is_the_last_round_of_a_settled_path():
    """Two rounds of the default setting without sanction: participation moves by less than 1e-9 from round 1 to
    2, gaming stays full, so the equilibrium is round 2's level (not round 1's). One round cannot settle."""
    s = t.Setting(sanction=0.0)
    path = t.mean_field_path(s, rounds=2)
    assert 0 < abs(path.x[2] - path.x[1]) < 1e-9
    assert t.mean_field_equilibrium(s, rounds=2) == (path.x[2], 1.0)
    with pytest.raises(ValueError, match="do not settle"):
        t.mean_field_equilibrium(FREE, rounds=1)
    # costs more spread: participation still moves by 4e-9 in round 7, and settles later
    slow = replace(s, c_std=0.5)
    path = t.mean_field_path(slow)
    assert abs(path.x[7] - path.x[6]) > 1e-9
    assert t.mean_field_equilibrium(slow) == (path.x[-1], path.u[-1])
    with pytest.raises(ValueError, match="rounds"):
        t.mean_field_path(s, rounds=0)


def test_the_price_of_gaming_rounds_and_tail():
    """One round with a tail of one is allowed (free participation: ``(Q(1) - Q(1/2)) / Q(1)``), as is a tail of
    every round; no rounds is not; without participation there is no welfare to lose: 0."""
    pog = (math.exp(-1) - math.exp(-2)) / (1 - math.exp(-2))
    assert t.price_of_gaming(FREE, rounds=1, tail=1) == pytest.approx(pog, rel=1e-12)
    assert t.price_of_gaming(FREE, rounds=5, tail=5) == pytest.approx(pog, rel=1e-12)
    for rounds, tail in ((0, 1), (5, 0), (5, 6)):
        with pytest.raises(ValueError, match="rounds|tail"):
            t.price_of_gaming(FREE, rounds=rounds, tail=tail)
    assert t.price_of_gaming(t.Setting(**{OUTSIDE: 5.0}), x0=0.0, rounds=3, tail=2) == 0.0
