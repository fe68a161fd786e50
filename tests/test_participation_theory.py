"""The participation game's mean-field theory (SPEC §3; ``fedgames.envs.participation.theory``)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from fedgames.envs.participation import theory as t

DOMINO = t.Setting(welfare="s_shaped", w=0.2, c_mean=0.8, c_std=0.15, h=4.0, z0=0.5)
"""An S-shaped welfare and costly participation: G crosses the diagonal three times."""


def random_settings(count: int, seed: int) -> list[t.Setting]:
    rng = np.random.default_rng(seed)
    return [t.Setting(n_clients=int(rng.integers(2, 50)), phi=rng.uniform(0, 2), w=rng.uniform(0.1, 1),
                      gamma=rng.uniform(0, 1), delta=rng.uniform(0.5, 2), pi=rng.uniform(0, 0.5),
                      audits=int(rng.integers(1, 4)), p_detect=rng.uniform(0.1, 1), q0=rng.uniform(0.5, 1.5),
                      welfare=str(rng.choice(t.WELFARE_CURVES)))
            for _ in range(count)]


@pytest.mark.parametrize("setting", random_settings(12, 0))
def test_minimum_sanction_makes_honesty_the_best_reply(setting):
    """At ``S = S_min`` the slope is 0; a smaller sanction leaves gaming profitable, a larger one deters it."""
    participants, z = 0.8 * setting.n_clients, 0.8 * setting.q0
    s_min = t.minimum_sanction(setting, participants, z)
    if s_min == 0:  # aligned: gaming does not pay even unsanctioned
        assert t.gaming_slope(setting, participants, z) <= 0
        return
    assert t.gaming_slope(replace(setting, sanction=s_min), participants, z) == pytest.approx(0.0, abs=1e-12)
    assert t.best_manipulation(replace(setting, sanction=0.9 * s_min), participants, z) == 1.0
    assert t.best_manipulation(replace(setting, sanction=1.1 * s_min), participants, z) == 0.0
    assert t.manipulability_index(replace(setting, sanction=1.1 * s_min), participants, z) == 0.0


def test_minimum_sanction_falls_with_challenge_mixing_to_zero_at_alignment():
    """[G] Thm 9.4: mixing the private challenge into the paid score lowers the deterrent sanction, to 0 once
    ``(1 - pi) delta <= gamma q0`` (the paid score no longer rewards gaming)."""
    base = t.Setting(delta=2.0, gamma=0.5, q0=1.0, phi=0.0)
    pis = np.linspace(0, 1, 21)
    sanctions = [t.minimum_sanction(replace(base, pi=float(p)), 5, 0.5) for p in pis]
    assert all(a >= b for a, b in zip(sanctions, sanctions[1:])) and sanctions[0] > 0
    aligned = (1 - pis) * base.delta <= base.gamma * base.q0
    assert all((s == 0) == a for s, a in zip(sanctions, aligned))


@pytest.mark.parametrize("welfare", t.WELFARE_CURVES)
def test_slope_is_the_exact_gain_up_to_the_welfare_curvature(welfare):
    """``g`` linearises ``Q``: by Taylor, ``|gain - g| <= phi max|Q''| (gamma q0 / N)^2 / 2``, a gap that shrinks
    like ``1/N^2``."""
    gaps = []
    for n in (5, 50, 500):
        setting = t.Setting(n_clients=n, welfare=welfare, phi=1.5, sanction=0.3)
        z = 0.7 * setting.q0
        step = setting.gamma * setting.q0 / n
        zs = np.linspace(z - step, z, 2001)
        curvature = np.max(np.abs(np.gradient(t.welfare_slope(zs, setting), zs)))
        gap = abs(t.gaming_gain(setting, 0.7 * n, z) - t.gaming_slope(setting, 0.7 * n, z))
        assert gap <= setting.phi * curvature * step**2 / 2 * (1 + 1e-6)
        gaps.append(gap)
    assert gaps[1] < gaps[0] / 50 and gaps[2] < gaps[1] / 50


def test_retention_map_is_the_share_of_clients_whose_cost_is_covered():
    """``G(x)`` against clients drawn from the cost distribution ``max(0, N(c_mean, c_std))``: the share that
    participation pays for agrees within 4 standard errors."""
    rng = np.random.default_rng(3)
    costs = np.maximum(0.0, rng.normal(DOMINO.c_mean, DOMINO.c_std, 200_000))
    for x in (0.0, 0.3, 0.6, 0.9):
        share = np.mean(costs <= t.participation_value(x, DOMINO) - DOMINO.outside)
        predicted = t.retention_map(x, DOMINO)
        se = math.sqrt(max(predicted * (1 - predicted), 1e-12) / costs.size)
        assert abs(share - predicted) < 4 * se + 1e-12


def test_steady_states_and_the_domino_threshold():
    """[G] Thm 7.2: three crossings; the outer two attract, the middle one repels and splits the basins."""
    states = t.steady_states(DOMINO)
    assert len(states) == 3
    for state in states:
        assert abs(t.retention_map(state.x, DOMINO) - state.x) < 1e-10
    assert [s.stable for s in states] == [True, False, True]
    low, threshold, high = (s.x for s in states)
    assert t.domino_threshold(DOMINO) == threshold
    assert t.iterate_retention(threshold + 0.01, DOMINO)[-1] == pytest.approx(high, abs=1e-9)
    assert t.iterate_retention(threshold - 0.01, DOMINO)[-1] == pytest.approx(low, abs=1e-9)
    assert t.domino_threshold(t.Setting()) is None  # concave welfare, cheap participation: one steady state


def test_price_of_gaming_is_zero_when_sanctions_deter_and_positive_otherwise():
    setting = t.Setting(sanction=0.0)
    x_eq, u_eq = t.mean_field_equilibrium(setting)
    assert u_eq == 1.0 and t.price_of_gaming(setting) > 0
    deterred = replace(setting, sanction=2 * t.minimum_sanction(setting, setting.n_clients, setting.q0) + 1)
    assert t.mean_field_equilibrium(deterred)[1] == 0.0 and t.price_of_gaming(deterred) == 0.0
    w_honest = t.welfare(t.iterate_retention(1.0, setting, 0.0, 500)[-1] * setting.q0, setting)
    w_eq = t.welfare(x_eq * setting.q0 * (1 - setting.gamma), setting)
    assert t.price_of_gaming(setting) == pytest.approx((w_honest - w_eq) / w_honest)


@pytest.mark.parametrize("changes, name", [({"pi": 1.5}, "pi"), ({"n_clients": 1}, "n_clients"),
                                           ({"c_std": 0.0}, "c_std"), ({"welfare": "linear"}, "welfare"),
                                           ({"audits": -1}, "audits")])
def test_bad_settings_name_the_parameter(changes, name):
    with pytest.raises(ValueError, match=name):
        t.Setting(**changes)
