"""An exact cross-check of the Nash check with a library no one here wrote (issue 15.4): OpenSpiel.

The mean-estimation game with two players, each restricted to a few ``alpha`` and ``beta`` levels (no bias), is a
matrix game whose payoffs are the closed forms (Thm 4.1 and Thm D.1's payments, ``EnvTheory.payoff``). OpenSpiel
(``pyspiel.create_matrix_game``, ``exploitability.nash_conv`` on its turn-based form) gives a pure profile's exact
NashConv; the check, with the grid restricted to the same levels (a finite class: no slope term), must give a
NashConv interval that covers it, and each player's bracket must cover that player's exact regret.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyspiel
import pytest
from open_spiel.python import policy as policy_lib
from open_spiel.python.algorithms import exploitability

import fedgames
from fedgames.agents import ConstantPolicy
from fedgames.envs.mean_estimation.theory import EnvTheory
from fedgames.eval.nash import nash_check
from fedgames.train.oracles import GridOracle

LEVELS = {"alpha": [0.0, 0.5, 1.0], "beta": [0.0, 0.5]}
ACTIONS = [np.array([a, b, 0.0, 0.0]) for a, b in itertools.product(LEVELS["alpha"], LEVELS["beta"])]


def matrix_game(env):
    """The two players' payoff matrices over ``ACTIONS`` x ``ACTIONS`` (row player 0), from the closed forms."""
    exact = EnvTheory(env)
    payoffs = np.empty((2, len(ACTIONS), len(ACTIONS)))
    for r, c in itertools.product(range(len(ACTIONS)), repeat=2):
        actions = np.stack([ACTIONS[r], ACTIONS[c]])
        payoffs[:, r, c] = exact.payoff(actions, 0), exact.payoff(actions, 1)
    return payoffs


def openspiel_nash_conv(payoffs, row, column):
    """OpenSpiel's NashConv of the pure profile (``row``, ``column``) of the matrix game."""
    game = pyspiel.convert_to_turn_based(pyspiel.create_matrix_game(payoffs[0].tolist(), payoffs[1].tolist()))
    policy = policy_lib.TabularPolicy(game)
    for player, chosen in enumerate((row, column)):
        for state in policy.states_per_player[player]:
            probabilities = policy.action_probability_array[policy.state_lookup[state]]
            probabilities[:] = 0.0
            probabilities[chosen] = 1.0
    return exploitability.nash_conv(game, policy)


CASES = {
    "honesty below Thm D.1's threshold (C = 0.5 < 1)": (0.5, 0, 0, "refuted"),
    "honesty above it (C = 2)": (2.0, 0, 0, "consistent"),
    "asymmetric: player 0 attacks at alpha = 1 with beta = 0.5, C = 0.5": (0.5, 5, 0, "refuted"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_on_the_levels_covers_openspiel_exact_nash_conv(case):
    C, row, column, expected = CASES[case]
    env = fedgames.make("mean_estimation_v0", mechanisms=[f"side_payment:C={C}"], n_players=2, bias_max=0)
    payoffs = matrix_game(env)
    exact = openspiel_nash_conv(payoffs, row, column)
    # OpenSpiel's value is the matrix game's: each player's best deviation within the levels
    regrets = [payoffs[0][:, column].max() - payoffs[0][row, column], payoffs[1][row].max() - payoffs[1][row, column]]
    assert exact == pytest.approx(sum(regrets), abs=1e-12)
    policies = {"player_0": ConstantPolicy(ACTIONS[row]), "player_1": ConstantPolicy(ACTIONS[column])}
    report = nash_check(env, policies, GridOracle(levels=LEVELS, episodes=20_000), episodes=20_000, seed=0)
    low, high = report.nash_conv_interval
    assert low <= exact <= high
    for check, regret in zip(report.players, regrets):
        assert check.ci[0] - 1e-12 <= regret <= check.upper_bound + 1e-12  # the player's bracket
        assert check.search["points_evaluated"] == len(ACTIONS)
    assert report.verdict == expected
