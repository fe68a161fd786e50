"""Calibration of the Nash check's verdicts (issue 15): on profiles of exactly known regret (honesty under the
balanced side payment with ``C`` set for the regret, :func:`fedgames.eval.calibration.balanced_payment_case`), the
grid check's false refutations (true regret 0 or exactly tau) and false confirmations (regret tau) stay within
``1 - level`` up to binomial error, and it refutes a regret of ``2 tau`` more often than a regret of ``tau``.

Small episodes keep it cheap (about 0.2 s a check); ``bench/nash_calibration.py`` runs it at a larger size."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from fedgames.envs.mean_estimation.theory import EnvTheory
from fedgames.eval.calibration import balanced_payment_case, calibrate, clopper_pearson
from fedgames.train.multi_agent import honest_policies
from fedgames.train.oracles import GridOracle

TAU, LEVEL, REPS, EPISODES = 0.01, 0.95, 50, 1_000
# The most verdicts of one kind that a rate of 1 - level gives in REPS checks, but for a chance of 0.001: 8 of 50.
WITHIN = int(binom.ppf(0.999, REPS, 1 - LEVEL))


def _run(regret):
    env = balanced_payment_case(regret)
    policies = honest_policies(env)
    exact = EnvTheory(env)
    actions = np.stack([policies[a].action for a in env.possible_agents])
    reply = actions.copy()
    reply[0] = exact.best_response(actions, 0)
    assert exact.payoff(reply, 0) - exact.payoff(actions, 0) == pytest.approx(regret, abs=1e-12)
    oracle = GridOracle(points=5, episodes=EPISODES, max_points=60, level=LEVEL)
    return calibrate(f"regret {regret}", env, policies, regret, oracle, REPS, TAU, EPISODES, level=LEVEL)


@pytest.fixture(scope="module")
def runs():
    return {name: _run(regret) for name, regret in (("equilibrium", 0.0), ("tau", TAU), ("2 tau", 2 * TAU))}


def test_false_refutations_and_confirmations_within_binomial_error(runs):
    assert WITHIN == 8
    assert runs["equilibrium"].repetitions == REPS >= 50
    assert runs["equilibrium"].counts["refuted"] <= WITHIN
    assert runs["tau"].counts["refuted"] <= WITHIN  # a regret of exactly tau is not above it
    assert runs["tau"].counts["consistent"] <= WITHIN  # nor below: the grid's bound must not certify it


def test_power_at_twice_the_tolerance_is_reported_and_exceeds_the_size(runs):
    power, size = runs["2 tau"], runs["tau"]
    assert power.counts["consistent"] <= WITHIN
    assert power.counts["refuted"] > size.counts["refuted"] + 5
    assert "| regret 0.02 | 0.02 | 50 |" in power.row()


def test_clopper_pearson():
    assert clopper_pearson(0, 60)[0] == 0.0 and clopper_pearson(60, 60)[1] == 1.0
    low, high = clopper_pearson(3, 60)
    assert low == pytest.approx(0.01045, abs=1e-4) and high == pytest.approx(0.13923, abs=1e-4)
