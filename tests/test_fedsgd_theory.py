"""Thm 6.1 on the strongly convex quadratic, with the batched simulator as a grid best-response oracle.

Player 0 plays a constant ``alpha`` on a grid, the others are honest; 400 runs per grid point advance together.
Its reward is the default utility ``U_0 = (1/(N-1)) sum_{j != 0} f(theta^j) - lambda f(theta^0)`` (final models
after the self-correction) minus the balanced side payments (charged by the payment stage at ``C = 1``, then
scaled by ``C``). Without a penalty the reward rises with alpha (noise pays, Cor. 4.2's multi-round analogue); with
a constant penalty ``C`` the best grid alpha stays below Thm 6.1's bound ``8 L L_U N / (C (N-2) m_sc sqrt(T + eta))``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedgames.envs.fedsgd.game import ClientData, FedSGDGame
from fedgames.envs.fedsgd.models import Quadratic
from fedgames.envs.fedsgd.theory import quadratic_thm_6_1_bound
from fedgames.mechanisms.side_payment import DeviationPayment

N, T, ETA, RADIUS, LAM = 4, 50, 10.0, 3.0, 1.0
GRID = (0.0, 1.0, 2.0, 3.0, 4.0)
RUNS = 400


@pytest.fixture(scope="module")
def outcomes():
    """Per grid alpha and run: the default utility of player 0 and its net balanced payment per unit of C."""
    model = Quadratic(eigenvalues=(1.0, 2.0), theta_star=(1.0, -1.0), noise=1.0)
    g = torch.Generator().manual_seed(0)
    z, y = model.sample(N * 5, g)
    clients = ClientData.from_arrays(z.double(), y, torch.arange(N).repeat_interleave(5), N)
    game = FedSGDGame(
        model,
        clients,
        lr="decaying",
        eta=ETA,
        radius=RADIUS,
        noise_norm="global",
        weighting="uniform",
        alpha_max=max(GRID),
    )
    state = game.start(len(GRID) * RUNS, g, dtype=torch.float64)
    alpha = torch.zeros(len(GRID) * RUNS, N, dtype=torch.float64)
    alpha[:, 0] = torch.tensor(GRID, dtype=torch.float64).repeat_interleave(RUNS)
    unit = DeviationPayment(1.0, balanced=True)  # the side_payment mechanism's rule at C = 1 (payments: linear in C)
    protocol = game.protocol().with_stage(unit, payment_rules=(unit,))
    for _ in range(T):
        game.play_round(state, alpha, g, protocol)
    losses = torch.stack([model.objective({"theta": game.final_parameters(state, i)}) for i in range(N)], dim=1)
    utility = (losses.sum(1) - losses[:, 0]) / (N - 1) - LAM * losses[:, 0]
    net = state.payments[:, 0]
    return model, utility.numpy().reshape(len(GRID), RUNS), net.numpy().reshape(len(GRID), RUNS)


def test_without_penalty_noise_pays(outcomes):
    _, utility, _ = outcomes
    gain = utility[-1].mean() - utility[0].mean()
    se = math.sqrt(utility[-1].var(ddof=1) / RUNS + utility[0].var(ddof=1) / RUNS)
    assert gain > 4 * se


def test_with_penalty_best_alpha_is_below_the_bound(outcomes):
    model, utility, net = outcomes
    C = 9.0
    bound = quadratic_thm_6_1_bound(model, C, n_players=N, rounds=T, eta=ETA, radius=RADIUS, lam=LAM)
    assert GRID[0] <= bound < GRID[-1]  # the bound is not vacuous on this grid: the check can fail
    rewards = (utility - C * net).mean(axis=1)
    best = GRID[int(np.argmax(rewards))]
    assert best <= bound
    # and the penalty really bites: the largest alpha is worse than honesty by more than 4 standard errors
    penalised = utility - C * net
    se = math.sqrt(penalised[-1].var(ddof=1) / RUNS + penalised[0].var(ddof=1) / RUNS)
    assert penalised[0].mean() - penalised[-1].mean() > 4 * se


def test_net_payment_matches_its_closed_form(outcomes):
    """``E[net(alpha) - net(0)] = T alpha^2 (N - 2) / N`` per unit of C: player 0's noise moves its deviation by
    ``(1 - 1/N) alpha xi`` (paid) and each other player's by ``alpha xi / N`` (received over ``N - 1``), with
    ``E||xi||^2 = 1`` (global noise norm) and the cross terms of mean zero. A penalty of the wrong size fails."""
    _, _, net = outcomes
    for k, alpha in enumerate(GRID[1:], start=1):
        extra = net[k] - net[0]
        expected = T * alpha**2 * (N - 2) / N
        assert abs(extra.mean() - expected) < 4 * extra.std(ddof=1) / math.sqrt(RUNS)


@pytest.mark.parametrize(("C", "honesty_pays"), [(1e-6, False), (3e-5, True)])
def test_penalty_near_where_honesty_starts_paying(outcomes, C: float, honesty_pays: bool):
    """The largest grid alpha gains about ``4e-3`` in utility and costs ``C T alpha^2 (N-2)/N = 400 C``, so honesty
    starts paying near ``C = 1e-5``: below it (``C = 1e-6``) the noise still pays, above it (``C = 3e-5``) honesty
    does, each by more than 3 standard errors. A penalty off by a factor of about 3 either way fails."""
    _, utility, net = outcomes
    penalised = utility - C * net
    advantage = penalised[0].mean() - penalised[-1].mean()
    se = math.sqrt(penalised[-1].var(ddof=1) / RUNS + penalised[0].var(ddof=1) / RUNS)
    assert (advantage if honesty_pays else -advantage) > 3 * se
