"""Exact properties of the mean-estimation closed forms ([H] §4–5, App. B–D; SPEC §1). No Monte Carlo here.

The closed forms are exact expectations, so the comparisons below are exact up to floating-point rounding
(``rel=1e-12``-ish tolerances), except where a grid search is the reference.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fedgames
from fedgames.envs.mean_estimation.theory import (
    EnvTheory,
    OwnPayoff,
    Profile,
    Setting,
    attack_slope,
    balanced_payment_threshold,
    best_defence,
    best_response,
    bounded_equilibrium,
    expected_mse,
    expected_payment,
    expected_reward,
    expected_reward_alone,
    noisy_response_threshold,
    plain_payment_threshold,
)

EPS = 1e-2
NS = [3, 4, 7]
DIM = 3
NU = 0.35  # sigma^2/n + sigma_*^2 for e.g. sigma = 1, n = 10, sigma_* = 0.5


def setting(n: int, nu: float = NU, lam: float | np.ndarray = 1.0, payments=(), noise_C: float = 0.0) -> Setting:
    return Setting(nu=np.full(n, nu), lam=np.broadcast_to(lam, (n,)), payments=tuple(payments), noise_C=noise_C)


def random_profile(n: int, d: int, rng: np.random.Generator, beta_high: float = 1.0) -> Profile:
    return Profile(rng.uniform(0, 2, n), rng.uniform(0, beta_high, n), rng.uniform(-1, 1, (n, d)))


def unit(d: int, k: int = 0) -> np.ndarray:
    e = np.zeros(d)
    e[k] = 1.0
    return e


# ---------------------------------------------------------------------------------------------------------------
# thresholds: Thm D.1 (plain payment), Thm B.2 (balanced payment), Thm 5.1 (noisy response)


def _gain(honest: Profile, s: Setting, **deviation) -> float:
    """Player 0's exact expected reward change from deviating from ``honest``."""
    return float(expected_reward(honest.replace_player(0, **deviation), s)[0] - expected_reward(honest, s)[0])


DEVIATIONS = {"alpha": dict(alpha=EPS), "bias": dict(bias=EPS * unit(DIM))}


@pytest.mark.parametrize("side", [+1, -1], ids=["above", "below"])
@pytest.mark.parametrize("deviation", list(DEVIATIONS), ids=list(DEVIATIONS))
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize(
    "theorem,threshold,balanced",
    [("Thm D.1 plain", plain_payment_threshold, False), ("Thm B.2 balanced", balanced_payment_threshold, True)],
    ids=["D.1_plain", "B.2_balanced"],
)
def test_payment_threshold(theorem, threshold, balanced, n, deviation, side):
    C = threshold(n) * (1 + side * 0.01)
    s = setting(n, lam=0.8, payments=[(C, balanced)])
    gain = _gain(Profile.symmetric(n, DIM), s, **DEVIATIONS[deviation])
    if side > 0:
        assert gain < 0, f"{theorem}, N={n}, C={C:.6g} above threshold: {deviation} deviation gains {gain:.3g}"
    else:
        assert gain > 0, f"{theorem}, N={n}, C={C:.6g} below threshold: {deviation} deviation gains {gain:.3g}"


def test_threshold_values():
    for n in NS:
        assert plain_payment_threshold(n) == pytest.approx(1 / (n - 1) ** 2, rel=1e-15)
        assert balanced_payment_threshold(n) == pytest.approx(1 / ((n - 1) ** 2 - 1), rel=1e-15)
        for lam in (0.5, 1.0, 2.0):
            assert noisy_response_threshold(n, lam) == pytest.approx(1 / (lam * (n - 1) ** 2 - 1), rel=1e-15)
    assert noisy_response_threshold(3, 0.25) == float("inf")  # lambda (N-1)^2 = 1
    assert noisy_response_threshold(2, 1.0) == float("inf")


@pytest.mark.parametrize("deviation", list(DEVIATIONS), ids=list(DEVIATIONS))
@pytest.mark.parametrize("C", [0.0, 0.1, 1.0, 10.0, 1e3])
def test_balanced_threshold_is_infinite_for_two_players(C, deviation):
    assert balanced_payment_threshold(2) == float("inf")
    s = setting(2, lam=1.0, payments=[(C, True)])
    assert _gain(Profile.symmetric(2, DIM), s, **DEVIATIONS[deviation]) > 0


@pytest.mark.parametrize("side", [+1, -1], ids=["above", "below"])
@pytest.mark.parametrize("deviation", list(DEVIATIONS), ids=list(DEVIATIONS))
@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("n", NS)
def test_noisy_response_threshold(n, lam, deviation, side):
    """Thm 5.1: others (and player 0 before deviating) play alpha = b = 0, beta = C/(C+1)."""
    C = noisy_response_threshold(n, lam) * (1 + side * 0.01)
    s = setting(n, lam=lam, noise_C=C)
    honest = Profile.symmetric(n, DIM, beta=C / (C + 1))
    gain = _gain(honest, s, **DEVIATIONS[deviation])
    if side > 0:
        assert gain < 0, f"Thm 5.1, N={n}, lam={lam}, C={C:.6g} above threshold: gain {gain:.3g}"
    else:
        assert gain > 0, f"Thm 5.1, N={n}, lam={lam}, C={C:.6g} below threshold: gain {gain:.3g}"


# ---------------------------------------------------------------------------------------------------------------
# Thm 4.1: the paper's literal formula (equal nu)


def thm_4_1_literal(alpha: np.ndarray, beta: np.ndarray, bias: np.ndarray, nu: float, i: int) -> float:
    n = alpha.size
    b = beta[i]
    others = [j for j in range(n) if j != i]
    sum_a2 = sum(alpha[j] ** 2 for j in others)
    sum_b = sum(bias[j] for j in others)
    return float(
        (1 - b) ** 2 * (nu / n + sum_a2 / n**2 + np.dot(sum_b, sum_b) / n**2) + b**2 * nu + 2 * (1 - b) * b * nu / n
    )


@pytest.mark.parametrize("n,d,seed", [(2, 1, 0), (3, 2, 1), (4, 3, 2), (7, 5, 3), (7, 1, 4)])
def test_thm_4_1_literal_formula(n, d, seed):
    rng = np.random.default_rng(seed)
    for _ in range(5):
        p = random_profile(n, d, rng)
        nu = rng.uniform(0.1, 3.0)
        got = expected_mse(p, np.full(n, nu))
        want = [thm_4_1_literal(p.alpha, p.beta, p.bias, nu, i) for i in range(n)]
        np.testing.assert_allclose(got, want, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Lemma C.2: the best defence


@pytest.mark.parametrize("n,d,seed", [(2, 2, 10), (3, 2, 11), (4, 3, 12), (7, 2, 13)])
def test_lemma_c_2_formula_and_grid_minimiser(n, d, seed):
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, 2_001)
    for _ in range(2):
        p = random_profile(n, d, rng)
        nu = rng.uniform(0.1, 3.0)
        nus = np.full(n, nu)
        for i in range(n):
            others = [j for j in range(n) if j != i]
            S = (sum(p.alpha[j] ** 2 for j in others) + np.sum(p.bias[others].sum(axis=0) ** 2)) / n**2
            paper = S / (nu - nu / n + S)
            got = best_defence(p, nus, i)
            assert got == pytest.approx(paper, rel=1e-12, abs=1e-15)
            # and it minimises player i's MSE over a fine grid of beta in [0, 1]
            mse = np.array([expected_mse(p.replace_player(i, beta=b), nus)[i] for b in grid])
            at_best = expected_mse(p.replace_player(i, beta=got), nus)[i]
            assert at_best <= mse.min() * (1 + 1e-12)
            assert abs(grid[np.argmin(mse)] - got) <= grid[1] - grid[0]


@pytest.mark.parametrize("n", [2, 3, 4, 7])
@pytest.mark.parametrize("C", [0.05, 0.5, 2.0])
def test_best_defence_with_noisy_response_at_honesty(n, C):
    """Thm 5.1 / D.3: at honesty the best defence under the noisy response is C/(C+1) (any lambda, any nu)."""
    for nu in (0.2, 1.0, 3.0):
        p = Profile.symmetric(n, DIM, beta=C / (C + 1))
        for i in range(n):
            assert best_defence(p, np.full(n, nu), i, noise_C=C) == pytest.approx(C / (C + 1), rel=1e-12)
        # and it minimises the MSE over a grid
        grid = np.linspace(0, 1, 1_001)
        mse = [expected_mse(p.replace_player(0, beta=b), np.full(n, nu), C)[0] for b in grid]
        assert abs(grid[int(np.argmin(mse))] - C / (C + 1)) <= grid[1] - grid[0]


# ---------------------------------------------------------------------------------------------------------------
# Cor. 4.2: no equilibrium without mechanisms


@pytest.mark.parametrize("n,seed", [(2, 20), (3, 21), (4, 22), (7, 23)])
def test_cor_4_2_attack_slope_positive(n, seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        p = random_profile(n, 2, rng, beta_high=0.999)
        s = Setting(nu=rng.uniform(0.1, 2.0, n), lam=rng.uniform(0.0, 3.0, n))
        for i in range(n):
            slope = attack_slope(p, s, i)
            assert slope > 0
            # exact: E R_i is linear in E alpha_i^2 with this slope (Cor. 4.2's derivative)
            expected_slope = sum((1 - p.beta[j]) ** 2 / n**2 for j in range(n) if j != i) / (n - 1)
            assert slope == pytest.approx(expected_slope, rel=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Cor. B.1: bounded attacks


@pytest.mark.parametrize("n", [2, 3, 4, 7])
@pytest.mark.parametrize("A", [0.5, 1.5, 4.0])
@pytest.mark.parametrize("nu", [0.35, 1.0, 2.5])
def test_cor_b_1_equilibrium(n, A, nu):
    d = 2
    profile, mse = bounded_equilibrium(A, nu, n, d)
    np.testing.assert_array_equal(profile.alpha, np.full(n, A))
    np.testing.assert_allclose(profile.beta, A**2 / (nu * n + A**2), rtol=1e-14)
    np.testing.assert_array_equal(profile.bias, np.zeros((n, d)))
    # the MSE formula agrees with Thm 4.1 at the profile
    assert mse == pytest.approx(nu * (1 + A**2 / nu) / (n + A**2 / nu), rel=1e-14)
    np.testing.assert_allclose(expected_mse(profile, np.full(n, nu)), mse, rtol=1e-12)
    # each player's exact best response (alpha <= A, no bias) is the equilibrium strategy itself
    s = setting(n, nu=nu, lam=1.3)
    for i in range(n):
        br = best_response(profile, s, i, alpha_max=A, bias_max=0.0)
        assert br.alpha[i] == pytest.approx(A, rel=1e-14)
        assert br.beta[i] == pytest.approx(A**2 / (nu * n + A**2), rel=1e-12)
        np.testing.assert_array_equal(br.bias[i], np.zeros(d))
        assert expected_reward(br, s)[i] == pytest.approx(expected_reward(profile, s)[i], rel=1e-12, abs=1e-14)


# ---------------------------------------------------------------------------------------------------------------
# best_response: the balanced-payment threshold and exactness against a grid


def _grid_rewards(profile: Profile, s: Setting, i: int, alpha_max: float, bias_max: float, d: int) -> np.ndarray:
    rewards = []
    for a, b, b1 in itertools.product(
        np.linspace(0, alpha_max, 11), np.linspace(0, 1, 21), np.linspace(-bias_max, bias_max, 11)
    ):
        bias = np.zeros(d)
        bias[0] = b1
        rewards.append(expected_reward(profile.replace_player(i, alpha=a, beta=b, bias=bias), s)[i])
    return np.array(rewards)


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("side", [+1, -1], ids=["above", "below"])
def test_best_response_balanced_payment(n, side):
    d, alpha_max, bias_max = 2, 3.0, 0.8
    C = balanced_payment_threshold(n) * (1 + side * 0.01)
    s = setting(n, lam=0.9, payments=[(C, True)])
    honest = Profile.symmetric(n, d)
    for i in (0, n - 1):
        br = best_response(honest, s, i, alpha_max=alpha_max, bias_max=bias_max)
        if side > 0:
            assert br.alpha[i] == 0.0
            np.testing.assert_array_equal(br.bias[i], np.zeros(d))
            assert br.beta[i] == 0.0
        else:
            assert br.alpha[i] == alpha_max
            np.testing.assert_allclose(np.abs(br.bias[i]), bias_max)
        best = expected_reward(br, s)[i]
        grid = _grid_rewards(honest, s, i, alpha_max, bias_max, d)
        assert best >= grid.max() - 1e-12 * (1 + abs(grid.max()))
        # the others' strategies are untouched
        others = [j for j in range(n) if j != i]
        np.testing.assert_array_equal(br.actions()[others], honest.actions()[others])


@pytest.mark.parametrize(
    "payments",
    [(), ((0.4, False),), ((0.2, True),), ((0.05, False), (0.3, True))],
    ids=["none", "plain", "balanced", "plain+balanced"],
)
@pytest.mark.parametrize("n,seed", [(3, 30), (4, 31), (7, 32)])
def test_best_response_is_exact_on_a_grid(n, seed, payments):
    """Against random (non-honest) others, with equal nu and no server noise."""
    d, alpha_max, bias_max = 2, 2.0, 0.7
    rng = np.random.default_rng(seed)
    s = setting(n, nu=rng.uniform(0.2, 2.0), lam=rng.uniform(0.2, 2.0, n), payments=payments)
    profile = random_profile(n, d, rng)
    profile = Profile(np.minimum(profile.alpha, alpha_max), profile.beta, np.clip(profile.bias, -bias_max, bias_max))
    for i in (0, n - 1):
        br = best_response(profile, s, i, alpha_max=alpha_max, bias_max=bias_max)
        assert 0 <= br.alpha[i] <= alpha_max and 0 <= br.beta[i] <= 1
        assert np.all(np.abs(br.bias[i]) <= bias_max)
        best = expected_reward(br, s)[i]
        grid = _grid_rewards(profile, s, i, alpha_max, bias_max, d)
        assert best >= grid.max() - 1e-12 * (1 + abs(grid.max()))


@pytest.mark.parametrize("n", NS)
def test_best_response_is_exact_under_noisy_response(n):
    d, alpha_max, bias_max, lam = 2, 5.0, 1.0, 1.0
    C = 2 * noisy_response_threshold(n, lam)
    s = setting(n, nu=1.0, lam=lam, noise_C=C)
    honest = Profile.symmetric(n, d, beta=C / (C + 1))
    br = best_response(honest, s, 0, alpha_max=alpha_max, bias_max=bias_max)
    grid = _grid_rewards(honest, s, 0, alpha_max, bias_max, d)
    assert expected_reward(br, s)[0] >= grid.max() - 1e-12 * (1 + abs(grid.max()))


def test_best_defence_stays_in_action_range_with_unequal_nu():
    nu = np.array([1.0, 0.1, 0.1])
    p = Profile.symmetric(3, 2)
    assert 0.0 <= best_defence(p, nu, 0) <= 1.0


# ---------------------------------------------------------------------------------------------------------------
# Thm B.2 participation and Thm D.1 expected payment


@pytest.mark.parametrize("n", [3, 4, 7])
@pytest.mark.parametrize("C", [0.0, 0.3, 5.0])
def test_thm_b_2_participation(n, C):
    s_of = lambda lam: setting(n, lam=np.full(n, lam), payments=[(C, True)])  # noqa: E731
    honest = Profile.symmetric(n, DIM)
    paper = n / (n - 1) ** 2
    for lam in (paper * 1.01, paper * 2, paper + 1.0):
        s = s_of(lam)
        rewards = expected_reward(honest, s)
        for i in range(n):
            assert rewards[i] > expected_reward_alone(s, i), f"N={n}, lam={lam}: participation should pay"
    # "well below": the exact participation threshold of this model is 1/(N-1)^2 (the paper's N/(N-1)^2 is only
    # sufficient, its proof drops the 1/N term), so go below that.
    for lam in (0.0, 0.5 / (n - 1) ** 2):
        s = s_of(lam)
        rewards = expected_reward(honest, s)
        for i in range(n):
            assert rewards[i] < expected_reward_alone(s, i), f"N={n}, lam={lam}: going alone should pay"


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_participation_gap_closed_form(n):
    """Balanced payments at honesty: E R_i - E R_alone = nu ((N-1)/N) (lam - 1/(N-1)^2), exactly."""
    for lam in (0.0, 0.1, 1.0, 3.0):
        s = setting(n, lam=lam, payments=[(0.7, True)])
        gap = expected_reward(Profile.symmetric(n, DIM), s)[0] - expected_reward_alone(s, 0)
        assert gap == pytest.approx(NU * (n - 1) / n * (lam - 1 / (n - 1) ** 2), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("n", [2, 3, 4, 7])
@pytest.mark.parametrize("C", [0.0, 0.05, 0.3, 2.0])
def test_thm_d_1_expected_payment_at_honesty(n, C):
    for nu in (0.1, NU, 2.0):
        honest = Profile.symmetric(n, DIM)
        np.testing.assert_allclose(expected_payment(honest, np.full(n, nu), C, False), C * (n - 1) * nu / n, rtol=1e-14)
        np.testing.assert_allclose(expected_payment(honest, np.full(n, nu), C, True), 0.0, atol=1e-15)
        # and the reward at honesty is (1 - lam) nu / N minus that payment
        s = setting(n, nu=nu, lam=0.6, payments=[(C, False)])
        np.testing.assert_allclose(
            expected_reward(honest, s), (1 - 0.6) * nu / n - C * (n - 1) * nu / n, rtol=1e-12, atol=1e-15
        )


@pytest.mark.parametrize(
    ("mechanisms", "payments", "noise_C"),
    [
        ([], (), 0.0),
        (["robust_aggregation:rule=mean"], (), 0.0),  # the plain mean: the game's own aggregate
        (["bounded_attack:A=1"], (), 0.0),  # bounds the actions only
        (
            ["side_payment:C=0.4", "noisy_response:C=0.5", "side_payment:C=0.2,balanced=true"],
            ((0.4, False), (0.2, True)),
            0.5,
        ),
    ],
)
def test_the_setting_of_an_env_reads_its_mechanisms(mechanisms, payments, noise_C):
    env = fedgames.make("mean_estimation_v0", mechanisms=mechanisms, n_players=4)
    found = Setting.from_env(env)
    assert found.payments == payments and found.noise_C == noise_C and np.all(found.nu == env.unwrapped.game.nu)


@pytest.mark.parametrize(
    "spec",
    [
        "robust_aggregation:rule=median",
        "robust_aggregation:rule=mean,clip_norm=1.0",
        "robust_aggregation:rule=mean,mixing_f=1",
    ],
)
def test_robust_aggregation_other_than_the_plain_mean_has_no_closed_form(spec):
    with pytest.raises(ValueError, match="no closed form for mechanism robust_aggregation"):
        Setting.from_env(fedgames.make("mean_estimation_v0", mechanisms=[spec], n_players=4))


def test_the_env_theory_best_response_takes_its_bounds_from_the_action_space():
    """Without a penalty attacking pays ([H] Cor. 4.2): the best reply attacks at ``alpha_max = 2`` with its bias at
    ``bias_max = 0.7``, the two bounds read from the env's action space (alpha first, then beta, then the bias)."""
    env = fedgames.make("mean_estimation_v0", n_players=3, dim=1, alpha_max=2.0, bias_max=0.7)
    reply = EnvTheory(env).best_response(np.zeros((3, 3)), 0)
    expected = best_response(Profile(np.zeros(3), np.zeros(3), np.zeros((3, 1))), Setting.from_env(env), 0, 2.0, 0.7)
    np.testing.assert_array_equal(reply, expected.actions()[0])
    assert reply[0] == 2.0 and abs(reply[2]) == 0.7


@pytest.mark.parametrize(
    ("B", "cell", "alpha_slopes"),
    [
        ([1.0, -2.0, 2.0], (0.2, 0.6), (1.0, 1.36)),
        ([0.0, 2.0, -2.0], (0.2, 0.6), (0.64, 1.0)),
        ([1.0, -2.0, 2.0], (0.4, 0.6), (1.0, 1.04)),
    ],
)
def test_own_payoff_slope_range_finds_the_vertex_inside_the_cell(B, cell, alpha_slopes):
    """``d/d alpha = 2 alpha B(beta)`` at alpha = 1, by hand: B's vertex at beta = 1/2 is inside the cell, where
    B = 1/2 is the smallest (convex B) or the largest (concave B) value; the other end of the range is at an end of
    the cell: over [0.2, 0.6] at beta = 0.2, B = 0.68 (convex) or 0.32 (concave); over [0.4, 0.6] B = 0.52 at
    both ends (convex)."""
    own = OwnPayoff(np.zeros(3), np.array(B))
    smallest, largest = own.slope_range(np.array([1.0, cell[0]]), np.array([1.0, cell[1]]))
    assert (smallest[0], largest[0]) == pytest.approx(alpha_slopes, abs=1e-12)


def test_best_response_beats_a_grid_where_the_others_send_biases_under_the_noisy_response():
    """Outside the exact case (the others send biases, the noisy response couples i's defence, attack and bias) the
    reply is the best of its candidates, the bias optimised alternately with beta until neither moves: no point of
    a 41 x 41 grid over (beta, bias), at alpha = 0 or alpha_max, does better (a search stopped after one
    alternation loses up to 3e-3 against the grid in these settings)."""
    rng = np.random.default_rng(1)
    for _ in range(10):
        s = Setting(
            nu=rng.uniform(0.2, 1.5, 3), lam=rng.uniform(0.5, 2, 3), payments=(), noise_C=float(rng.uniform(0.1, 2))
        )
        others = Profile(rng.uniform(0, 2, 3), rng.uniform(0, 1, 3), rng.uniform(-1, 1, (3, 1)))
        reply = expected_reward(best_response(others, s, 0, 2.0, 1.0), s)[0]
        grid = [
            expected_reward(others.replace_player(0, alpha=a, beta=b, bias=np.array([bias])), s)[0]
            for a in (0.0, 2.0)
            for b in np.linspace(0, 1, 41)
            for bias in np.linspace(-1, 1, 41)
        ]
        assert reply >= max(grid) - 1e-12
