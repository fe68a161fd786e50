"""The participation game's mean-field theory (SPEC §3; ``fedgames.envs.participation.theory``)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from fedgames.envs.participation import theory as t
from fedgames.eval.domino import DOMINO_CONFIG

DOMINO = t.Setting(**DOMINO_CONFIG)
"""The domino experiment's settings: an S-shaped welfare and costly participation, G crosses the diagonal three
times."""


def random_settings(count: int, seed: int) -> list[t.Setting]:
    rng = np.random.default_rng(seed)
    return [
        t.Setting(
            n_players=int(rng.integers(2, 50)),
            phi=rng.uniform(0, 2),
            w=rng.uniform(0.1, 1),
            gamma=rng.uniform(0, 1),
            delta=rng.uniform(0.5, 2),
            pi=rng.uniform(0, 0.5),
            audits=int(rng.integers(1, 4)),
            p_detect=rng.uniform(0.1, 1),
            q0=rng.uniform(0.5, 1.5),
            welfare=str(rng.choice(t.WELFARE_CURVES)),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("setting", random_settings(12, 0))
def test_minimum_sanction_makes_honesty_the_best_reply(setting):
    """At ``S = S_min`` the slope is 0; a smaller sanction leaves gaming profitable, a larger one deters it."""
    participants, z = 0.8 * setting.n_players, 0.8 * setting.q0
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
        setting = t.Setting(n_players=n, welfare=welfare, phi=1.5, sanction=0.3)
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
        value = x**4 / (x**4 + 0.5**4) + 0.2  # phi Q(x q0) + w q0: S-shaped, h = 4, z0 = 0.5; w = 0.2, honest
        share = np.mean(costs <= value - DOMINO.outside_option)
        predicted = t.retention_map(x, DOMINO)
        se = math.sqrt(max(predicted * (1 - predicted), 1e-12) / costs.size)
        assert abs(share - predicted) < 4 * se + 1e-12
    # an outside option that no participation value reaches: nobody takes part, whatever x
    assert all(t.retention_map(x, replace(DOMINO, outside_option=10.0)) == 0.0 for x in (0.0, 0.5, 1.0))


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


def test_participation_value_and_the_slope_by_hand():
    """SPEC §3's defaults (``phi = 1``, ``w = 0.5``, ``gamma = 0.5``, ``delta = 1``, ``q0 = 1``, ``Q(z) = 1 -
    exp(-2 z)``, ``N = 10``, one audit, ``p_detect = 0.5``), computed by hand."""
    s = t.Setting(sanction=2.0)
    # x = 0.5 honest: Q(0.5) + w q0 = 1 - e^-1 + 0.5
    assert t.participation_value(0.5, s) == pytest.approx(1 - math.exp(-1) + 0.5, rel=1e-12)
    # x = 0.5 gaming fully: Q(0.25) + w (0.5 + 1) - (1/5) 0.5 * 2
    assert t.participation_value(0.5, s, u=1.0) == pytest.approx(1 - math.exp(-0.5) + 0.75 - 0.2, rel=1e-12)
    # g at |P| = 10, z = 1: 0.5 (1 - 0.5) - 2 e^-2 0.5 / 10 - (1/10) 0.5 * 2
    assert t.gaming_slope(s, 10, 1.0) == pytest.approx(0.25 - 0.1 * math.exp(-2) - 0.1, rel=1e-12)
    # S_min at |P| = 10: (0.25 - 0.1 e^-2) / (0.1 * 0.5)
    assert t.minimum_sanction(s, 10, 1.0) == pytest.approx((0.25 - 0.1 * math.exp(-2)) / 0.05, rel=1e-12)


def test_price_of_gaming_by_hand():
    """Participation free (``c_mean = -5``: everybody always takes part) and unsanctioned gaming: honest welfare
    ``Q(1) = 1 - e^-2``, everybody gaming fully ``Q(1/2) = 1 - e^-1``, so ``PoG = (e^-1 - e^-2) / (1 - e^-2) =
    1 / (1 + e)``; a sanction of twice ``S_min`` plus one deters gaming and ``PoG = 0``."""
    setting = t.Setting(sanction=0.0, c_mean=-5.0)
    assert t.mean_field_equilibrium(setting) == (1.0, 1.0)
    assert t.price_of_gaming(setting) == pytest.approx(1 / (1 + math.e), rel=1e-9)
    deterred = replace(setting, sanction=2 * t.minimum_sanction(setting, setting.n_players, setting.q0) + 1)
    assert t.mean_field_equilibrium(deterred) == (1.0, 0.0) and t.price_of_gaming(deterred) == 0.0
    costly = t.Setting(sanction=0.0)  # costly participation: some leave, and the loss is still positive
    assert t.mean_field_equilibrium(costly)[1] == 1.0 and t.price_of_gaming(costly) > 0


def test_a_path_without_rejoining_never_recovers():
    """With permanent exits ``x_{t+1} = G(min_{s <= t} x_s)``: above the threshold the path stops at ``G(x_0)``, short
    of the high steady state that rejoining reaches; below it both collapse."""
    threshold = t.domino_threshold(DOMINO)
    high = t.steady_states(DOMINO)[-1].x
    start = threshold + 0.02
    rejoining, permanent = (t.iterate_retention(start, DOMINO, rejoin=r) for r in (True, False))
    assert rejoining[-1] == pytest.approx(high, abs=1e-9)
    assert permanent[-1] == pytest.approx(t.retention_map(start, DOMINO)) and permanent[-1] < high - 0.05
    assert np.all(np.diff(permanent[1:]) <= 0)
    low = t.steady_states(DOMINO)[0].x
    assert t.iterate_retention(threshold - 0.02, DOMINO, rejoin=False)[-1] == pytest.approx(low, abs=1e-9)


@pytest.mark.parametrize(
    "changes, name",
    [
        ({"pi": 1.5}, "pi"),
        ({"n_players": 1}, "n_players"),
        ({"c_std": 0.0}, "c_std"),
        ({"welfare": "linear"}, "welfare"),
        ({"audits": -1}, "audits"),
        ({"z0": 0.0}, "z0"),
        ({"audit_policy": "targeted"}, "audit policy"),
        ({"C": -0.1}, "C"),
        ({"balanced": "yes"}, "balanced"),
        ({"client_q0": (1.0, 2.0)}, "client_q0 must hold one value per client"),
        ({"n_players": 2, "client_outside_option": (0.0, math.nan)}, r"client_outside_option\[1\]"),
    ],
)
def test_bad_settings_name_the_parameter(changes, name):
    with pytest.raises(ValueError, match=name):
        t.Setting(**changes)


@pytest.mark.parametrize("setting", [replace(s, welfare="exponential", sanction=0.0) for s in random_settings(8, 3)])
def test_a_side_payment_caps_the_gain_from_gaming_but_cannot_remove_it(setting):
    """A quadratic charge on the score deviation costs nothing at the margin: where the slope ``g`` is positive the
    best reply to honest others stays interior and positive, falls as ``C`` grows, and its gain is at most
    ``g^2 / (4 kappa_n C b^2)`` (exact for a linear welfare; concave welfare loses more). Where everybody games
    alike nobody deviates, so the mean-field equilibrium still games fully."""
    n, z = setting.n_players, setting.q0
    b = (1 - setting.pi) * setting.delta - setting.gamma * setting.q0
    g = t.gaming_slope(setting, n, z)
    replies = []
    for C in (0.5, 2.0, 8.0):
        for balanced, kappa in ((False, (1 - 1 / n) ** 2), (True, (n - 2) / n)):
            charged = replace(setting, C=C, balanced=balanced)
            assert t.gaming_slope(charged, n, z) == g
            u = t.best_manipulation(charged, n, z)
            gain = t.gaming_gain(charged, n, z, u)
            if g <= 0:
                assert u == 0.0
                continue
            assert gain > 0 and (u > 0 if kappa > 0 else u == 1.0)
            if kappa > 0:
                assert gain <= g**2 / (4 * kappa * C * b**2) + 1e-12
                assert u <= min(1.0, g / (2 * kappa * C * b**2)) + 1 / 400
            if not balanced:
                replies.append(u)
    if g > 0:
        assert t.mean_field_equilibrium(replace(setting, C=2.0, c_mean=-5.0))[1] == 1.0
    assert replies == sorted(replies, reverse=True)


def test_risk_targeted_audits_deter_large_manipulation_more_than_uniform_ones():
    """At ``u = 0`` a participant is audited with probability ``k / |P|`` either way; under risk targeting the
    probability rises with ``u`` towards 1, the faster the less noisy the scores, and exactly 1 without noise."""
    uniform = t.Setting(n_players=10, audits=2, sanction=1.0)
    risk = replace(uniform, audit_policy="risk")
    assert t.audit_probability(risk, 10, 0.0) == pytest.approx(0.2, abs=1e-9)
    assert t.audit_probability(uniform, 10, 0.7) == 0.2
    chances = [t.audit_probability(risk, 10, u) for u in np.linspace(0, 1, 11)]
    assert np.all(np.diff(chances) > 0) and chances[-1] > 0.95
    quieter = replace(risk, score_noise=0.02, challenge_noise=0.02)
    assert t.audit_probability(quieter, 10, 0.1) > t.audit_probability(risk, 10, 0.1)
    exact = replace(risk, score_noise=0.0, challenge_noise=0.0)
    assert t.audit_probability(exact, 10, 0.01) == 1.0 and t.audit_probability(exact, 10, 0.0) == 0.2
    assert t.audit_probability(risk, 10, 0.0, others=1.0) < 1e-6  # the honest one among gamers is never picked
    assert t.gaming_gain(risk, 10, 1.0) < t.gaming_gain(uniform, 10, 1.0)
    assert t.gaming_slope(risk, 10, 1.0) == t.gaming_slope(uniform, 10, 1.0)


def test_with_a_fixed_number_of_audits_the_mean_field_dynamics_can_cycle():
    """As gamers leave, each remaining participant's audit risk ``k / |P|`` grows until gaming stops paying;
    participation then recovers and gaming resumes. ``mean_field_equilibrium`` says the dynamics do not settle,
    and ``price_of_gaming`` averages the welfare over the cycle."""
    setting = t.Setting(n_players=2000, c_mean=0.9, c_std=0.3, pi=0.2, audits=200, p_detect=0.5, sanction=2.0)
    path = t.mean_field_path(setting, 1.0, 200)
    assert set(path.u[-40:]) == {0.0, 1.0}
    with pytest.raises(ValueError, match="do not settle"):
        t.mean_field_equilibrium(setting)
    assert 0 < t.price_of_gaming(setting) < t.price_of_gaming(replace(setting, sanction=0.0))
    assert t.welfare_inverse(t.welfare(0.37, setting), setting) == pytest.approx(0.37)
    assert t.welfare_inverse(t.welfare(0.37, DOMINO), DOMINO) == pytest.approx(0.37)
    for curve in (setting, DOMINO):  # observed welfare outside [0, 1) is clipped to it: no negative contribution
        assert t.welfare_inverse(-0.2, curve) == 0.0 and np.isfinite(t.welfare_inverse(1.0, curve))


def test_the_symmetric_manipulation_is_a_best_reply_to_itself():
    """Honesty where the slope is negative, full gaming where it is positive, with or without a side payment (a
    quadratic charge on deviations from the others cannot hold a herd back); risk-targeted audits, which single
    out whoever games more than the others, hold it at an interior level. The reply to it is itself."""
    risk = t.Setting(audits=2, audit_policy="risk", sanction=1.0)
    for setting in (t.Setting(), t.Setting(sanction=10.0), t.Setting(C=2.0), t.Setting(C=2.0, balanced=True), risk):
        u = t.symmetric_manipulation(setting)
        z = (setting.n_players * setting.q0 * (1 - setting.gamma * u) + setting.gamma * setting.q0 * u) / 10
        assert t.best_manipulation(setting, 10, z, others=u) == u
        if setting is risk:
            assert t.gaming_slope(setting, 10, setting.q0) > 0 and 0 < u < 0.5
        else:
            assert u == (1.0 if t.gaming_slope(setting, 10, setting.q0) > 0 else 0.0)


COALITION = t.Setting(n_players=10, phi=3.0, audits=2, p_detect=0.5, sanction=0.3)
"""A valuable model (``phi = 3``): a coalition of 6 or more internalises enough welfare loss to stop gaming."""


def _coalition_gains(k: int, episodes: int = 100_000) -> np.ndarray:
    """Per episode, the mean round reward of players ``0 .. k-1`` gaming fully together minus all honest, the
    others honest and everybody present, on common random numbers (``participation_v0`` configured as
    :data:`COALITION`)."""
    import fedgames
    from fedgames.envs.batch import episode_batch

    env = fedgames.make(
        "participation_v0", mechanisms=["audit:k=2,p_detect=0.5,S=0.3"], n_players=10, rounds=1, phi=3.0
    )
    assert t.Setting.from_env(env) == replace(COALITION, c_std=env.unwrapped.game.c_std)
    rewards = []
    for u in (1.0, 0.0):
        batch = episode_batch(env, episodes, np.random.default_rng(k))
        batch.reset()
        actions = np.zeros((episodes, 10, 2))
        actions[..., 0] = 1.0
        actions[:, :k, 1] = u
        rewards.append(batch.step(actions).rewards[:, :k].mean(1))
    return rewards[0] - rewards[1]


@pytest.mark.parametrize("k", [1, 3, 6])
def test_a_coalition_internalises_its_welfare_loss(k):
    """SPEC §7 in the participation game: a coalition of ``k`` members sharing their rewards gains, per member,
    ``w b u - phi (Q(z) - Q(z - k gamma q0 u / N)) - (k_a / |P|) p_detect S u`` (Monte Carlo over 100,000 paired
    episodes, within 4 standard errors), its slope ``g_k`` falls linearly in ``k``, and ``g_k`` linearises the gain
    to within the welfare's curvature ``phi max|Q''| (k gamma q0 / N)^2 / 2``."""
    s, z = COALITION, COALITION.q0
    diffs = _coalition_gains(k)
    expected = t.coalition_gain(s, 10, z, 1.0, coalition=k)
    assert abs(diffs.mean() - expected) < 4 * diffs.std(ddof=1) / math.sqrt(diffs.size)
    # by hand: 0.5 * 0.5 - 3 (e^{-2 (1 - k/20)} - e^-2) - 0.2 * 0.5 * 0.3
    assert expected == pytest.approx(0.25 - 3 * (math.exp(-2 * (1 - k / 20)) - math.exp(-2)) - 0.03, rel=1e-12)
    step = s.gamma * s.q0 / s.n_players
    assert t.gaming_slope(s, 10, z, k) == pytest.approx(
        t.gaming_slope(s, 10, z) - (k - 1) * s.phi * 2 * math.exp(-2) * step
    )
    curvature = s.phi * 4 * math.exp(-2 * (z - k * step))  # max |Q''| on [z - k step, z]
    assert abs(expected - t.gaming_slope(s, 10, z, k)) <= curvature * (k * step) ** 2 / 2
    if k == 1:
        assert expected == pytest.approx(t.gaming_gain(s, 10, z))


def test_larger_coalitions_game_less():
    """``g_k`` falls with ``k`` and turns negative once ``k phi Q'(z) gamma q0 / N`` outweighs the paid incentive
    net of the sanction: lone members game, coalitions of 6 or more do not (``k > 0.22 / (0.3 e^-2) = 5.4``)."""
    slopes = [t.gaming_slope(COALITION, 10, 1.0, k) for k in range(1, 11)]
    assert np.all(np.diff(slopes) < 0)
    assert [g > 0 for g in slopes] == [k < 6 for k in range(1, 11)]
    with pytest.raises(ValueError, match="coalition"):
        t.gaming_slope(COALITION, 10, 1.0, 11)
    with pytest.raises(ValueError, match="uniform audits"):
        t.coalition_gain(replace(COALITION, audit_policy="risk"), 10, 1.0, 1.0, 2)


def test_setting_from_env_reads_the_config_and_the_mechanisms():
    import fedgames

    env = fedgames.make(
        "participation_v0",
        mechanisms=["challenge_mixing:pi=0.3", "audit:k=2,p_detect=0.6,S=1.5,policy=risk"],
        n_players=6,
        c_mean=0.7,
        welfare="s_shaped",
    )
    s = t.Setting.from_env(env)
    assert (s.n_players, s.pi, s.audits, s.p_detect, s.sanction, s.audit_policy) == (6, 0.3, 2, 0.6, 1.5, "risk")
    assert (s.c_mean, s.welfare) == (0.7, "s_shaped")
    with pytest.raises(ValueError, match="participation_v0 env"):
        t.Setting.from_env(fedgames.make("mean_estimation_v0"))
    with pytest.raises(ValueError, match="budget"):
        t.Setting.from_env(fedgames.make("participation_v0", mechanisms=["audit:budget=2"], n_players=4))
