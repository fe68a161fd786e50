"""The grid oracle's certified upper bound (SPEC §5 step 2; issue 15): exact local slopes from the closed form,
branch-and-bound cells, a bound that really bounds the regret over the box, and the verdicts it makes possible.

- ``OwnPayoff`` is the closed form itself (to rounding) and its slope ranges contain every slope of a cell and are
  attained (exact, not just valid);
- the cells: the first grid is ``linspace`` per component, points on the boundary where a cell touches it, and a
  split halves the dominant components;
- the bound covers the exact largest gain over the box (from the closed form) and exceeds it by at most what the
  search itself reports: twice the per-point confidence term plus the slope term of the worst cell;
- with the default budgets the check says *consistent* above the thresholds of Thm B.2, Thm D.1, for Cor. B.1's
  profile and for Thm 5.1's with a small ``alpha_max``, and *refuted* below them and where the joint deviation of
  Thm 5.1's discussion pays.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import fedgames
from fedgames.agents import profile_policies
from fedgames.envs.mean_estimation import theory
from fedgames.envs.mean_estimation.theory import EnvTheory
from fedgames.eval.nash import nash_check, parse_tolerance
from fedgames.train.grid_cells import Cell, anchored_point, initial_cells
from fedgames.train.oracles import GridOracle

TOL = 5e-3

STACKS = [
    [],
    ["side_payment:C=0.3,balanced=true"],
    ["side_payment:C=0.2"],
    ["noisy_response:C=0.5"],
    ["noisy_response:C=0.5", "side_payment:C=0.1,balanced=true", "bounded_attack:A=1"],
]


def make(mechanisms=(), **config):
    return fedgames.make("mean_estimation_v0", mechanisms=list(mechanisms), **config)


def honest(env):
    setting = theory.Setting.from_env(env)
    return profile_policies(theory.honest_profile(setting, env.unwrapped.game.dim), env.possible_agents)


def cor_b1(env, A):
    game = env.unwrapped.game
    profile, _ = theory.bounded_equilibrium(A, float(game.nu[0]), game.n_players, game.dim)
    return profile_policies(profile, env.possible_agents)


@pytest.mark.parametrize("stack", STACKS, ids=[" + ".join(s) or "none" for s in STACKS])
def test_own_payoff_is_the_closed_form_and_its_slope_ranges_are_exact(stack):
    env = make(stack, n_players=4, sigma=[1.0, 2.0, 1.0, 1.5], lam=[1.0, 0.5, 2.0, 1.0])
    exact = EnvTheory(env)
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.uniform(0, 1, (4, 2)), rng.uniform(-1, 1, (4, 2))], axis=1)
    for i in range(4):
        own = exact.own_payoff(actions, i)
        for alpha, beta in rng.uniform([0, 0], [3, 1], (20, 2)):
            trial = actions.copy()
            trial[i, :2] = alpha, beta
            assert own.value(alpha, beta) == pytest.approx(exact.payoff(trial, i), abs=1e-12)
        lower, upper = np.array([0.5, 0.2]), np.array([1.2, 0.6])
        smallest, largest = own.slope_range(lower, upper)
        grid = [(a, b) for a in np.linspace(0.5, 1.2, 41) for b in np.linspace(0.2, 0.6, 41)]
        step = 1e-6
        slopes = np.array(
            [
                [
                    (own.value(a + step, b) - own.value(a - step, b)) / (2 * step),
                    (own.value(a, b + step) - own.value(a, b - step)) / (2 * step),
                ]
                for a, b in grid
            ]
        )
        assert np.all(slopes.min(axis=0) >= smallest - 1e-7) and np.all(slopes.max(axis=0) <= largest + 1e-7)
        # attained: the extremes lie on the cell's corners or B's vertex, which the 41 x 41 grid nearly hits
        np.testing.assert_allclose(slopes.min(axis=0), smallest, atol=2e-3 * (1 + np.abs(smallest).max()))
        np.testing.assert_allclose(slopes.max(axis=0), largest, atol=2e-3 * (1 + np.abs(largest).max()))


def test_cells_of_the_first_grid_and_a_split():
    low, high = np.array([0.0, 0.0]), np.array([3.0, 1.0])
    boxes = initial_cells(low, high, 4)
    points = np.array([anchored_point(lo, hi, low, high) for lo, hi in boxes])
    expected = np.array([(a, b) for a in np.linspace(0, 3, 4) for b in np.linspace(0, 1, 4)])
    np.testing.assert_allclose(points, expected)  # the first grid is linspace, boundary points included
    areas = [np.prod(hi - lo) for lo, hi in boxes]
    assert sum(areas) == pytest.approx(3.0)  # the cells tile the box
    # a cell with a steep alpha slope and a flat beta one is halved along alpha only
    cell = Cell(np.array([1.0, 0.0]), np.array([2.0, 0.5]), np.array([1.5, 0.0]), 0.0, 0.0, 0, None)
    cell.slopes = (np.array([-1.0, -0.01]), np.array([2.0, 0.0]))
    # up from 1.5 to 2 at slope 2, down from 1.5 to 1 at slope 1 (rise 0.5 either way); beta: rises only downwards,
    # and the point is at the cell's lower beta end
    np.testing.assert_allclose(cell.slope_terms(), [1.0, 0.0])
    assert cell.bound(3.0) == pytest.approx(1.0)
    children = cell.halves(low, high)
    assert [(list(lo), list(hi)) for lo, hi in children] == [([1.0, 0.0], [1.5, 0.5]), ([1.5, 0.0], [2.0, 0.5])]
    cell.slopes = (np.zeros(2), np.zeros(2))
    assert cell.halves(low, high) == []  # nothing a split could lower


@pytest.mark.parametrize("stack", STACKS, ids=[" + ".join(s) or "none" for s in STACKS])
def test_a_cell_bound_covers_the_exact_payoff_over_the_cell(stack):
    """With the exact gain at its point (no noise), a cell's bound is at least the exact payoff anywhere in it,
    for random cells and points anchored anywhere. The slope term is needed (the point alone is not enough) and,
    on small cells where the slope barely moves, nearly all of it (half of it fails)."""
    env = make(stack, n_players=4, lam=[1.0, 0.5, 2.0, 1.0])
    exact = EnvTheory(env)
    rng = np.random.default_rng(1)
    actions = np.concatenate([rng.uniform(0, 1, (4, 2)), np.zeros((4, 2))], axis=1)
    needed = 0
    for i in range(4):
        own = exact.own_payoff(actions, i)
        for _ in range(25):
            lower = rng.uniform([0, 0], [2.5, 0.8])
            upper = lower + rng.uniform([0.05, 0.02], [0.5, 0.2]) * (0.01 if _ % 2 else 1.0)
            point = rng.uniform(lower, upper)
            cell = Cell(lower, upper, point, own.value(*point), 0.0, 0, own.slope_range(lower, upper))
            inside = max(
                own.value(a, b)
                for a in np.linspace(lower[0], upper[0], 21)
                for b in np.linspace(lower[1], upper[1], 21)
            )
            assert cell.bound(0.0) >= inside - 1e-12
            rise = inside - own.value(*point)
            needed += rise > 1e-9
            if _ % 2 and rise > 1e-9:  # small cell: the term is the rise to first order
                assert cell.slope_terms().sum() <= 1.2 * rise
    assert needed >= 50  # most cells hold better points than their own


BOUND_CASES = {
    "Cor. B.1, N = 3": (["bounded_attack:A=1.5"], "cor_b1", 3),
    "noisy response 2x threshold, alpha_max 0.5": (
        [f"noisy_response:C={2 * theory.noisy_response_threshold(3, 1.0)}"],
        "honest",
        3,
    ),
    "balanced payment 2x threshold, N = 4": ([f"side_payment:C={2 / 8},balanced=true"], "honest", 4),
}


@pytest.mark.parametrize("case", list(BOUND_CASES))
def test_the_bound_covers_the_exact_largest_gain_and_exceeds_it_by_what_the_search_reports(case):
    mechanisms, which, n = BOUND_CASES[case]
    env = make(mechanisms, bias_max=0, n_players=n, alpha_max=0.5 if "alpha_max 0.5" in case else 5.0)
    policies = cor_b1(env, 1.5) if which == "cor_b1" else honest(env)
    exact = EnvTheory(env)
    actions = np.stack([policies[a].action for a in env.possible_agents])
    own = exact.own_payoff(actions, 0)
    top = float(env.protocol.action_high[0])
    fine = max(own.value(a, b) for a in np.linspace(0, top, 301) for b in np.linspace(0, 1, 301))
    true_max = fine - exact.payoff(actions, 0)  # the exact best gain over the box (to the fine grid's accuracy)
    for seed in range(3):
        result = GridOracle(points=7, episodes=4_000, max_points=300).best_response(
            env, "player_0", policies, seed=seed, tolerance=TOL
        )
        assert result.upper_bound >= true_max
        # On the event that every point's estimate lies within q se of its mean (q the per-point quantile, the
        # same simultaneous level), each cell's bound is at most its point's true gain + 2 q se + slope term, and
        # a point's true gain is at most the box's best: the allowance is the search's own worst cell.
        allowance = max(2 * result.quantile * c.se + c.slope_terms().sum() for c in result.cells)
        assert result.upper_bound <= true_max + allowance
        largest = result.search["largest_cell"]
        assert largest["bound"] == pytest.approx(result.upper_bound)
        assert result.search["points_evaluated"] == result.budget["grid_points"] <= 300


def test_a_finite_class_has_no_slope_term_and_no_refinement():
    env = make(["side_payment:C=0.3,balanced=true"], bias_max=0, n_players=3)
    oracle = GridOracle(levels={"alpha": [0.0, 1.0], "beta": [0.0, 0.5]}, episodes=2_000)
    result = oracle.best_response(env, "player_0", honest(env), tolerance=TOL)
    assert result.budget["grid_points"] == 4 and result.budget["rounds"] == 1
    assert all(c.slope_terms().sum() == 0 for c in result.cells)
    assert result.upper_bound == pytest.approx(max(c.gain + result.quantile * c.se for c in result.cells))
    with pytest.raises(ValueError, match="levels: no levels for"):
        GridOracle(levels={"alpha": [0.0]})


def _noisy(n, factor, alpha_max):
    return make(
        [f"noisy_response:C={factor * theory.noisy_response_threshold(n, 1.0)}"],
        bias_max=0,
        n_players=n,
        lam=1.0,
        alpha_max=alpha_max,
    )


VERDICT_CASES = {
    "Thm B.2 balanced, C 2x threshold": (
        lambda: make(["side_payment:C=0.25,balanced=true"], n_players=4, alpha_max=3, dim=2, bias_max=0),
        "honest",
        "consistent",
    ),
    "Thm B.2 balanced, C 0.5x threshold": (
        lambda: make(["side_payment:C=0.0625,balanced=true"], n_players=4, alpha_max=3, dim=2, bias_max=0),
        "honest",
        "refuted",
    ),
    "Thm D.1 plain, C 2x threshold": (
        lambda: make([f"side_payment:C={2 / 9}"], n_players=4, bias_max=0),
        "honest",
        "consistent",
    ),
    "Thm D.1 plain, C 0.5x threshold": (
        lambda: make([f"side_payment:C={0.5 / 9}"], n_players=4, bias_max=0),
        "honest",
        "refuted",
    ),
    "Cor. B.1, A = 1.5": (lambda: make(["bounded_attack:A=1.5"], n_players=4, bias_max=0), "cor_b1", "consistent"),
    "Thm 5.1, C 2x threshold, alpha_max 0.5": (lambda: _noisy(4, 2.0, 0.5), "honest", "consistent"),
    "Thm 5.1, C 0.2x threshold, alpha_max 0.5": (lambda: _noisy(4, 0.2, 0.5), "honest", "refuted"),
    "Thm 5.1, C 2x threshold, alpha_max 5 (joint deviation)": (lambda: _noisy(4, 2.0, 5.0), "honest", "refuted"),
}


@pytest.mark.parametrize("case", list(VERDICT_CASES))
def test_default_grid_check_verdicts(case):
    """Issue 15's "what it must show", with the default budgets (one player per type: the profiles are
    symmetric)."""
    build, which, expected = VERDICT_CASES[case]
    env = build()
    policies = cor_b1(env, 1.5) if which == "cor_b1" else honest(env)
    report = nash_check(env, policies, GridOracle(), players="symmetric", tolerance=TOL, seed=0)
    (check,) = report.players
    assert check.verdict == expected
    if expected == "consistent":
        assert check.upper_bound < TOL and check.ci[1] < TOL
    else:
        assert check.ci[0] > TOL


def test_cli_quick_check_certifies_the_balanced_payment_with_a_relative_tolerance(tmp_path):
    """Issue 15's example at C = 2x Thm B.2's threshold, ``--quick`` and ``--tolerance 1%``: consistent; the
    report states the tolerance in reward units and as the share of the reward scale (the candidate's MSE,
    ``nu / N`` at honesty, measured on 4096 episodes: an exponential-like error with d = 2, so 4 standard errors
    are 4 / sqrt(4096) of it)."""
    from fedgames.cli import main

    argv = ["check", "mean_estimation_v0", "-e", "n_players=4", "-e", "alpha_max=3", "-e", "dim=2", "-e", "bias_max=0"]
    argv += ["-m", "side_payment:C=0.25,balanced=true", "--profile", "honest", "--oracle", "grid", "--quick"]
    assert main([*argv, "--tolerance", "1%", "--quiet", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    nu = 1.0 / 10 + 0.5**2  # sigma^2 / n + sigma_star^2 with the defaults: sigma 1, n 10, sigma_star 0.5
    assert data["reward_scale"] == pytest.approx(nu / 4, rel=4 / np.sqrt(4096))
    assert data["tolerance_relative"] == pytest.approx(0.01)
    assert data["tolerance"] == pytest.approx(0.01 * data["reward_scale"])
    (player,) = data["players"]
    assert data["verdict"] == player["verdict"] == "consistent" and player["upper_bound"] < data["tolerance"]
    text = (tmp_path / "report.md").read_text()
    assert "given as 1%" in text and "largest cell bound" in text


@pytest.mark.parametrize("bad", ["abc", "-1%", "-0.1", "1%%"])
def test_bad_tolerances_name_the_parameter(bad):
    with pytest.raises(ValueError, match="tolerance"):
        parse_tolerance(bad)
    assert parse_tolerance("1%") == (0.01, True) and parse_tolerance(0.005) == (0.005, False)


def test_a_grid_beyond_a_million_points_is_refused_before_any_work():
    """Audit of issue 17: ``--grid-points 100000`` over (alpha, beta) asked for a first grid of 1e10 points and
    filled 12 GB building its cells before playing any; a grid (or a refinement budget) past
    ``MAX_GRID_POINTS`` is refused when the oracle is made."""
    from fedgames.train.oracles import MAX_GRID_POINTS

    assert GridOracle(components=("alpha", "beta"), points=1000).max_points == MAX_GRID_POINTS == 1_000_000
    with pytest.raises(ValueError, match=r"points=100000 over 2 component\(s\) makes a first grid of 1e\+10 points"):
        GridOracle(components=("alpha", "beta"), points=100_000)
    with pytest.raises(ValueError, match=r"\(max_points=1000001\); at most 1,000,000 points"):
        GridOracle(components=("alpha",), points=10, max_points=MAX_GRID_POINTS + 1)
