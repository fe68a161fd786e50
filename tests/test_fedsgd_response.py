"""The response stage in the FedSGD game (``noisy_response`` on ``fedsgd_v0``): player i receives
``theta_{T+1} + sqrt(C) ||m_T^i - mbar_T|| eps_i`` (``E||eps||^2 = 1``) in place of the server's model, the server's
own trajectory is untouched, and only the final model a player evaluates changes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fedgames
from fedgames.envs.fedsgd.game import ClientData, FedSGDGame
from fedgames.envs.fedsgd.models import Quadratic


def noisy_protocol(C: float):
    """The ``noisy_response`` mechanism's protocol (its stages do not depend on the env it wraps)."""
    return fedgames.make("fedsgd_v0", mechanisms=[f"noisy_response:C={C}"], n_players=2).protocol


def play(game: FedSGDGame, protocol, alpha: torch.Tensor, rounds: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    response_generator = torch.Generator().manual_seed(seed + 1)
    state = game.start(alpha.shape[0], generator)
    for _ in range(rounds):
        game.play_round(state, alpha, generator, protocol, response_generator)
    return state


def test_received_model_is_off_by_sqrt_C_times_the_deviation_in_expectation():
    """Per run and player, ``||theta^i(noisy) - theta^i(plain)||^2 - C ||m_T^i - mbar_T||^2`` has mean 0 (within 4
    standard errors over 4000 runs); the server's model is identical with and without the response noise."""
    C, runs, n = 0.7, 4000, 3
    game = fedgames.make("fedsgd_v0", n_players=n).unwrapped.game
    alpha = torch.tensor([[2.0, 0.0, 0.5]]).repeat(runs, 1)
    plain = play(game, None, alpha, rounds=2, seed=0)
    noisy = play(game, noisy_protocol(C), alpha, rounds=2, seed=0)
    assert torch.equal(plain.theta, noisy.theta)
    active = noisy.last.active
    for player in range(n):
        shift = game.final_parameters(noisy, player) - game.final_parameters(plain, player)
        sq_deviation = (noisy.last.sq_deviation * (active == player)).sum(1)
        assert torch.all(sq_deviation > 0)
        gap = (shift.double() ** 2).sum(1) - C * sq_deviation.double()
        assert abs(gap.mean().item()) < 4 * gap.std().item() / math.sqrt(runs)
        # eps is a fresh direction per run: the shift is not a multiple of one vector
        assert torch.linalg.matrix_rank(shift[:10].double()) == shift.shape[1]


def test_a_client_on_the_aggregate_receives_the_exact_model():
    """Noise-free samples: two honest clients send identical gradients, so their deviation from the (uniform)
    mean is exactly 0 and each receives the server's model unchanged, whatever C."""
    model = Quadratic(noise=0.0)
    z, y = model.sample(10, torch.Generator().manual_seed(0))
    clients = ClientData.from_arrays(z, y, torch.arange(2).repeat_interleave(5), 2)
    game = FedSGDGame(model, clients, lr_value=0.1, noise_norm="global", weighting="uniform")
    state = play(game, noisy_protocol(100.0), torch.zeros(4, 2), rounds=3, seed=0)
    assert torch.all(state.last.sq_deviation == 0)
    for player in range(2):
        assert torch.equal(game.final_parameters(state, player), state.theta)


def test_only_players_active_in_the_last_round_receive_noise():
    C, runs = 2.0, 50
    game = fedgames.make("fedsgd_v0", n_players=5, active=2).unwrapped.game
    alpha = torch.ones(runs, 5)
    state = play(game, noisy_protocol(C), alpha, rounds=3, seed=4)
    plain = play(game, None, alpha, rounds=3, seed=4)
    for player in range(5):
        was_active = (state.last.active == player).any(1)
        moved = (game.final_parameters(state, player) != game.final_parameters(plain, player)).any(1)
        assert torch.equal(moved, was_active)


def episode(mechanisms, utility, seed=5, alphas=(1.0, 0.0, 3.0)):
    env = fedgames.make("fedsgd_v0", mechanisms=mechanisms, n_players=3, rounds=4, utility=utility)
    env.reset(seed=seed)
    while env.agents:
        _, rewards, _, _, _ = env.step({a: np.array([alphas[i]], dtype=np.float32) for i, a in enumerate(env.agents)})
    return rewards


@pytest.mark.parametrize("utility", ["default", "shared_damage"])
def test_env_plays_the_response_stage(utility):
    """With ``C = 0`` the rewards equal the plain env's; ``shared_damage`` (the server's model) ignores the
    response noise; the default utility (each player's received model) changes with ``C > 0``."""
    plain = episode([], utility)
    assert episode(["noisy_response:C=0"], utility) == plain
    noisy = episode(["noisy_response:C=4"], utility)
    if utility == "shared_damage":
        assert noisy == plain
    else:
        assert all(noisy[a] != plain[a] for a in plain)
        assert episode(["noisy_response:C=4"], utility) == noisy  # seeded


def test_noisy_response_composes_with_payments_and_robust_aggregation():
    """Stacked after the median and the noisy response, the balanced side payment only moves money: the players'
    rewards sum to the same total as without it (its payments sum to zero), the noisiest player (alpha = 3) pays
    and the honest one (alpha = 0) is paid."""
    stack = ["robust_aggregation:rule=median", "noisy_response:C=0.5"]
    unpaid = episode(stack, "default")
    paid = episode([*stack, "side_payment:C=0.1,balanced=true"], "default")
    transfer = {a: paid[a] - unpaid[a] for a in paid}
    assert abs(sum(transfer.values())) <= 1e-5 * sum(abs(t) for t in transfer.values())  # float32 rewards
    assert transfer["player_2"] < 0 < transfer["player_1"]


def test_batch_of_one_replays_the_env_with_noisy_response_and_attackers():
    """The batched episodes seed the response stage like the env, so a batch of one run seeded like the env gives
    the env's rewards, with a noisy response and a scripted attacker."""
    env = fedgames.make(
        "fedsgd_v0",
        mechanisms=["noisy_response:C=2", "side_payment:C=0.2,balanced=true"],
        n_players=4,
        active=3,
        rounds=3,
        byzantine={"player_1": "gaussian:sigma=0.5"},
    )
    rng = np.random.default_rng(3)
    seed = int(np.random.default_rng(3).integers(2**63 - 1))  # what the batch seeds its generator with
    batch = env.unwrapped.episode_batch(env.protocol, 1, rng)
    batch.reset()
    env.reset(seed=seed)
    alphas = np.array([1.0, 0.0, 2.0])
    while env.agents:
        step = batch.step(alphas[None, :, None])
        _, rewards, _, _, _ = env.step({a: np.array([alphas[i]], dtype=np.float32) for i, a in enumerate(env.agents)})
        np.testing.assert_allclose(step.rewards[0], [rewards[a] for a in env.possible_agents], rtol=1e-12)
    assert step.done
