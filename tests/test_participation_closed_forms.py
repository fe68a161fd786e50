"""Hand-computed values of the participation theory's side payment (SPEC §3, ``deviation_payment``), written to kill
the mutants the theory tests left alive (docs/testing.md)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedgames.envs.participation import theory as t

# b = (1 - pi) delta - gamma q0 = 0.75 * 2 - 0.5 = 1; with u = 0.6 against others = 0.2: d = 0.4, d^2 = 0.16
BASE = t.Setting(C=0.5, pi=0.25, delta=2.0, gamma=0.5, q0=1.0, score_noise=0.4, challenge_noise=0.8)


@pytest.mark.parametrize(
    "mixing, balanced, expected",
    [
        # expected mixing: V = (0.75 * 0.4)^2 + (0.25 * 0.8)^2 = 0.13 for everybody
        ("expected", False, 0.5 * ((3 / 4) ** 2 * (0.16 + 0.13) + 0.13 * 3 / 16)),  # 0.09375
        ("expected", True, 0.5 * 0.16 * 2 / 4),  # 0.04: the equal variances cancel
        # random challenges: V(u) = 0.75 * 0.16 + 0.25 * 0.64 + 0.25 * 0.75 * (2 u)^2 = 0.28 + 0.75 u^2
        ("random", False, 0.5 * ((3 / 4) ** 2 * (0.16 + 0.55) + 0.31 * 3 / 16)),  # 0.22875
        ("random", True, 0.5 * (0.16 + 0.55 - 0.31) * 2 / 4),  # 0.1
    ],
)
def test_deviation_payment_by_hand(mixing, balanced, expected):
    setting = replace(BASE, mixing=mixing, balanced=balanced)
    assert t.deviation_payment(setting, 4, 0.6, 0.2) == pytest.approx(expected, rel=1e-12)
    both = t.deviation_payment(setting, 4, np.array([0.6, 0.2]), 0.2)
    assert isinstance(both, np.ndarray) and both[0] == pytest.approx(expected, rel=1e-12)


def test_deviation_payment_is_zero_without_a_rate_or_a_second_participant():
    assert t.deviation_payment(replace(BASE, C=0.0), 4, 0.6, 0.2) == 0.0
    assert t.deviation_payment(BASE, 1.5, 0.6, 0.2) == 0.0
    # two participants, plain: C ((1/2)^2 (d^2 + V) + V / 4) = 0.5 (0.25 * 0.29 + 0.0325)
    assert t.deviation_payment(BASE, 2, 0.6, 0.2) == pytest.approx(0.5 * (0.25 * 0.29 + 0.13 / 4), rel=1e-12)


def test_deviation_payment_at_a_rate_of_one():
    one = replace(BASE, C=1.0)
    assert t.deviation_payment(one, 4, 0.6, 0.2) == pytest.approx(2 * 0.09375, rel=1e-12)


def test_participation_value_charges_the_noise_of_the_participants_scores():
    """Everybody honest, half of the 10 clients taking part: ``Q(0.5) + w q0 - C V (n - 1) / n`` with ``n = 5``
    participants and ``V = 0.13`` (the deviations' noise alone)."""
    value = t.participation_value(0.5, BASE)
    assert value == pytest.approx(1 - np.exp(-1.0) + 0.5 - 0.5 * 0.13 * 4 / 5, rel=1e-12)


def test_risk_audits_interpolate_between_whole_numbers_of_participants():
    s = t.Setting(audit_policy="risk", audits=1, score_noise=0.3, challenge_noise=0.4)
    at = {n: t.audit_probability(s, n, u=0.5) for n in (4, 4.25, 5)}
    assert at[4] > at[5] > 0
    assert at[4.25] == pytest.approx(0.75 * at[4] + 0.25 * at[5], rel=1e-12)


def test_small_pieces_of_the_mean_field_dynamics():
    assert t.Setting().n_players == 10
    costly = t.Setting(sanction=0.0)
    path = t.mean_field_path(costly)
    assert path.x[1] != path.x[-1]  # the participation moves before it settles
    assert t.mean_field_equilibrium(costly) == (path.x[-1], path.u[-1])
    fixed = t.mean_field_path(costly, u=0.5, rounds=5)
    assert all(u == 0.5 for u in fixed.u)
    with pytest.raises(ValueError, match="u"):
        t.mean_field_path(costly, u=1.5)
    assert t.symmetric_manipulation(costly) == t.symmetric_manipulation(costly, costly.n_players)
    assert t.steady_states(costly, grid=3) == t.steady_states(costly, grid=3)
    with pytest.raises(ValueError, match="grid"):
        t.steady_states(costly, grid=2)
