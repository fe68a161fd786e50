"""Scripted Byzantine clients in the FedSGD game (envs/fedsgd/byzantine.py ``ByzantineClients``, ``FedSGDGame``'s
and ``fedsgd_v0``'s ``byzantine``): an attacker's message is its attack applied to the round's honest gradients,
robust aggregation limits a sign-flip attacker's damage, attackers are environment (not agents), config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pettingzoo.test import parallel_api_test

import fedgames
from fedgames.envs.fedsgd.batch import OBSERVATION_SIZE
from fedgames.envs.fedsgd.byzantine import ATTACKS, alie_default_z
from fedgames.envs.fedsgd.game import ClientData, FedSGDGame
from fedgames.envs.fedsgd.models import Quadratic
from fedgames.envs.protocol import mean_aggregate


def quadratic_game(n_clients: int = 6, active: int | None = None, byzantine=None) -> FedSGDGame:
    model = Quadratic(eigenvalues=(1.0, 2.0, 3.0), theta_star=(1.0, -1.0, 0.5), noise=1.0)
    z, y = model.sample(n_clients * 5, torch.Generator().manual_seed(0))
    clients = ClientData.from_arrays(z, y, torch.arange(n_clients).repeat_interleave(5), n_clients)
    return FedSGDGame(model, clients, active=active, lr_value=0.1, noise_norm="global", byzantine=byzantine)


def recorded_round(game: FedSGDGame, alpha: torch.Tensor, seed: int):
    """Play one round of fresh runs; return the messages the server aggregated, the active clients and the
    generator (in its state after the round)."""
    seen = {}

    def recording_mean(messages, weights):
        seen["messages"] = messages
        return mean_aggregate(messages, weights)

    protocol = game.protocol().with_stage(None, aggregate=recording_mean)
    generator = torch.Generator().manual_seed(seed)
    state = game.start(alpha.shape[0], generator)
    active = game.play_round(state, alpha, generator, protocol)
    return seen["messages"], active, generator


CASES = [  # config, and per attack: its clients, byzantine.py function and parameters
    pytest.param(
        {1: "sign_flip:scale=2.5", 4: "sign_flip:scale=2.5"}, [((1, 4), "sign_flip", {"scale": 2.5})], id="sign_flip"
    ),
    pytest.param({1: ("gaussian", {"sigma": 0.3})}, [((1,), "gaussian", {"sigma": 0.3})], id="gaussian"),
    pytest.param(
        {1: "alie:tau=-1.5", 4: "little_is_enough:tau=-1.5"}, [((1, 4), "little_is_enough", {"tau": -1.5})], id="alie"
    ),
    pytest.param(
        {2: "ipm:tau=0.5", 5: "ipm:tau=0.5"}, [((2, 5), "inner_product_manipulation", {"tau": 0.5})], id="ipm"
    ),
    pytest.param(
        {1: "sign_flip", 2: "alie:tau=-1", 3: "ipm:tau=2"},
        [
            ((1,), "sign_flip", {}),
            ((2,), "little_is_enough", {"tau": -1.0}),
            ((3,), "inner_product_manipulation", {"tau": 2.0}),
        ],
        id="mixed",
    ),
]


@pytest.mark.parametrize("active", [None, 4])
@pytest.mark.parametrize("config, attacks", CASES)
def test_attacker_message_is_the_attack_of_the_rounds_honest_gradients(config, attacks, active):
    """Same seed, same round: the attacked game's messages are the honest game's (every alpha 0, so the honest
    messages are the honest gradients) with each attacker's row replaced by byzantine.py's function of those
    gradients, the honest set excluding every attacker; the attackers' own alpha (here 5) is ignored."""
    runs, n = 5, 6
    attacked = quadratic_game(n, active, byzantine=config)
    alpha = torch.zeros(runs, n)
    alpha[:, list(config)] = 5.0
    messages, chosen, _ = recorded_round(attacked, alpha, seed=3)
    honest, chosen_clean, generator = recorded_round(quadratic_game(n, active), torch.zeros(runs, n), seed=3)
    assert torch.equal(chosen, chosen_clean)
    is_attacker = torch.zeros(n, dtype=torch.bool)
    is_attacker[list(config)] = True
    attackers = is_attacker[chosen]
    assert attackers.any() and (~attackers).any()
    torch.testing.assert_close(messages[~attackers], honest[~attackers], rtol=0, atol=0)
    for clients, name, params in attacks:
        members = torch.zeros(n, dtype=torch.bool)
        members[list(clients)] = True
        rows = members[chosen]
        extra = {"generator": generator} if name == "gaussian" else {}  # the game's generator, after the batches
        expected = ATTACKS[name](honest, attackers, **params, **extra)
        torch.testing.assert_close(messages[rows], expected[rows], rtol=1e-6, atol=1e-6)


def test_sign_flip_message_is_minus_scale_times_the_gradient():
    game = quadratic_game(4, byzantine={0: "sign_flip:scale=3"})
    messages, chosen, _ = recorded_round(game, torch.zeros(2, 4), seed=0)
    honest, _, _ = recorded_round(quadratic_game(4), torch.zeros(2, 4), seed=0)
    rows = chosen == 0
    torch.testing.assert_close(messages[rows], -3.0 * honest[rows], rtol=0, atol=0)


def test_alie_default_tau_is_the_papers_z_max():
    game = quadratic_game(5, byzantine={2: "alie"})
    ((attack, _),) = game.byzantine.groups
    assert dict(attack.params)["tau"] == pytest.approx(-alie_default_z(5, 1))


def test_robust_aggregation_limits_the_damage_of_a_sign_flip_attacker():
    """One of 5 clients flips and scales its gradient by 4: under the plain mean the step nearly cancels (the
    final loss stays high); under the coordinate-wise median it barely matters. Damage = final loss with the
    attacker minus without it, paired by seed (identical batches); the mean's damage exceeds the median's by more
    than 4 standard errors of the paired difference over 300 runs."""
    runs, rounds = 300, 30
    config = dict(n_players=5, rounds=rounds, lr_value=0.1)
    damage = {}
    for rule in ("mean", "median"):
        losses = []
        for byzantine in (None, {"player_0": "sign_flip:scale=4"}):
            env = fedgames.make(
                "fedsgd_v0", mechanisms=[f"robust_aggregation:rule={rule}"], byzantine=byzantine, **config
            )
            game = env.unwrapped.game
            generator = torch.Generator().manual_seed(11)
            state = game.start(runs, generator)
            for _ in range(rounds):
                game.play_round(state, torch.zeros(runs, 5), generator, env.protocol)
            losses.append(game.model.objective({"theta": state.theta}))
        damage[rule] = losses[1] - losses[0]
    difference = damage["mean"] - damage["median"]
    se = difference.std() / math.sqrt(runs)
    assert difference.mean() > 4 * se
    assert damage["median"].mean() < 0.25 * damage["mean"].mean()


def test_attackers_are_environment_not_agents():
    env = fedgames.make(
        "fedsgd_v0",
        mechanisms=["side_payment:C=0.5,balanced=true"],
        n_players=4,
        rounds=3,
        byzantine={"player_2": "sign_flip:scale=5"},
        lam=[1.0, 2.0, 0.5],
    )
    assert env.possible_agents == ["player_0", "player_1", "player_3"]
    observations, _ = env.reset(seed=0)
    assert set(observations) == set(env.possible_agents)
    while env.agents:
        _, rewards, _, _, infos = env.step({a: np.array([0.0], dtype=np.float32) for a in env.agents})
        assert set(rewards) == set(env.possible_agents)
        # balanced payments: the attacker, far from the aggregate, pays; the players together receive
        assert sum(info["payment"] for info in infos.values()) < 0
    parallel_api_test(
        fedgames.make("fedsgd_v0", n_players=3, rounds=4, byzantine={"player_0": "ipm:tau=1"}), num_cycles=8
    )


def test_episode_batch_plays_the_players_only():
    env = fedgames.make("fedsgd_v0", n_players=5, active=3, rounds=2, byzantine={"player_4": "gaussian:sigma=0.5"})
    batch = env.unwrapped.episode_batch(env.protocol, 6, np.random.default_rng(0))
    assert batch.reset().shape == (6, 4, OBSERVATION_SIZE)
    for _ in range(2):
        step = batch.step(np.zeros((6, 4, 1)))
    assert step.done and step.observations.shape == (6, 4, OBSERVATION_SIZE) and step.rewards.shape == (6, 4)
    assert np.isfinite(step.rewards).all()


def test_robust_aggregation_is_checked_against_the_messages_per_round():
    """Krum with f=1 needs more than 4 messages: 5 clients with one attacker send 5 (4 players), while 6 clients
    with 4 active per round send 4."""
    fedgames.make(
        "fedsgd_v0", mechanisms=["robust_aggregation:rule=krum,f=1"], n_players=5, byzantine={"player_0": "sign_flip"}
    )
    with pytest.raises(ValueError, match=r"krum: f=1 needs n_players > 2\*f \+ 2 = 4, got n_players=4"):
        fedgames.make("fedsgd_v0", mechanisms=["robust_aggregation:rule=krum,f=1"], n_players=6, active=4)


BAD = [
    pytest.param(
        {"player_1": "sign_flp"},
        r"byzantine: client 1: unknown attack 'sign_flp'; did you mean "
        r"'sign_flip'",
        id="unknown-attack",
    ),
    pytest.param({"player_1": "aliee"}, r"did you mean 'alie'", id="unknown-alias"),
    pytest.param(
        {"playr_1": "sign_flip"}, r"byzantine: unknown client 'playr_1'; did you mean 'player_1'", id="unknown-client"
    ),
    pytest.param({"player_7": "sign_flip"}, r"unknown client 'player_7'", id="client-out-of-range"),
    pytest.param(
        {"player_1": "sign_flip:scal=2"},
        r"attack sign_flip has no parameter 'scal'; did you mean "
        r"'scale'",
        id="unknown-parameter",
    ),
    pytest.param({"player_1": "gaussian"}, r"attack gaussian needs parameter\(s\) \['sigma'\]", id="missing-sigma"),
    pytest.param({"player_1": "ipm"}, r"inner_product_manipulation needs parameter\(s\) \['tau'\]", id="missing-tau"),
    pytest.param({"player_1": "gaussian:sigma=-1"}, r"client 1: sigma must be >= 0", id="negative-sigma"),
    pytest.param({"player_1": ("sign_flip", {"scale": math.nan})}, r"client 1: scale must be finite", id="nan-scale"),
    pytest.param({"player_1": "alie:tau=abc"}, r"client 1: tau must be a finite real number", id="text-tau"),
    pytest.param({"player_1": 3}, r"an attack is a string .* got 3", id="spec-type"),
    pytest.param(["player_1"], r"byzantine must be a mapping", id="not-a-mapping"),
    pytest.param(
        {"player_0": "sign_flip", "player_1": "sign_flip", "player_2": "sign_flip"},
        r"byzantine: at most 2 of the 4 clients may be attackers",
        id="too-few-players",
    ),
]


@pytest.mark.parametrize("byzantine, pattern", BAD)
def test_bad_byzantine_config(byzantine, pattern):
    with pytest.raises(ValueError, match=pattern):
        fedgames.make("fedsgd_v0", n_players=4, byzantine=byzantine)


def test_bad_byzantine_config_depending_on_participation():
    with pytest.raises(
        ValueError,
        match=r"little_is_enough needs an honest client in every round, so fewer than "
        r"active=3 clients may be Byzantine, got 3",
    ):
        fedgames.make("fedsgd_v0", n_players=6, active=3, byzantine={f"player_{i}": "alie:tau=-1" for i in range(3)})
    with pytest.raises(ValueError, match=r"little_is_enough has no default tau .* give tau"):
        fedgames.make(
            "fedsgd_v0", n_players=3, utility="shared_damage", byzantine={"player_0": "alie", "player_1": "alie"}
        )  # f = 2 of 3: no supporters
    with pytest.raises(ValueError, match=r"lam must be one number or one per player \(3\)"):
        fedgames.make("fedsgd_v0", n_players=4, lam=[1.0] * 4, byzantine={"player_0": "sign_flip"})
    with pytest.raises(ValueError, match=r"byzantine: client must be an integer in \[0, 3\]"):
        quadratic_game(4, byzantine={4: "sign_flip"})
