"""``fedsgd_v0``: PettingZoo API, determinism, payments, returns, divergence and input errors."""

from __future__ import annotations

import numpy as np
import pettingzoo
import pytest
import torch
from pettingzoo.test import api_test, parallel_api_test
from pettingzoo.utils.conversions import parallel_to_aec

import fedgames
from fedgames.envs.fedsgd.config import KNOWN_STRONG_CONVEXITY, OBJECTIVES
from fedgames.envs.fedsgd.models import FemnistCNN, Logistic, Quadratic
from fedgames.memory import memory_budget


def make(mechanisms=(), **config):
    return fedgames.make("fedsgd_v0", mechanisms=list(mechanisms), **config)


def play(env, alphas, seed):
    """One episode with fixed per-player alphas; per-step rewards and infos."""
    env.reset(seed=seed)
    steps = []
    while env.agents:
        actions = {a: np.array([alphas[i]], dtype=np.float32) for i, a in enumerate(env.agents)}
        observations, rewards, terminations, truncations, infos = env.step(actions)
        steps.append((observations, rewards, infos))
    return steps


@pytest.mark.parametrize(
    "config",
    [
        dict(objective="quadratic", n_players=3, rounds=5),
        dict(objective="logistic", n_players=4, active=2, rounds=4),
        dict(objective="cnn", n_players=3, rounds=3, samples_per_client=4),
    ],
)
def test_pettingzoo_api(config):
    parallel_api_test(make(**config), num_cycles=12)
    api_test(parallel_to_aec(make(["side_payment:C=0.5,balanced=true"], **config)), num_cycles=12)
    assert pettingzoo.make("parallel", "fedgames/fedsgd-v0", n_players=3, rounds=2).metadata["name"] == "fedsgd_v0"


def test_multi_step_determinism_by_seed():
    env_a, env_b = make(n_players=3, active=2, rounds=6), make(n_players=3, active=2, rounds=6)
    alphas = [0.5, 0.0, 2.0]
    first, second = play(env_a, alphas, seed=7), play(env_b, alphas, seed=7)
    for (obs_a, rew_a, info_a), (obs_b, rew_b, info_b) in zip(first, second):
        assert rew_a == rew_b and info_a == info_b
        assert all(np.array_equal(obs_a[a], obs_b[a]) for a in obs_a)
    third = play(env_a, alphas, seed=8)
    assert any(s[1] != t[1] for s, t in zip(first, third))


def test_unseeded_envs_differ_and_a_bad_seed_changes_nothing():
    """Gymnasium's rule: an env never seeded draws its seed from OS entropy; a refused seed leaves it as it was."""
    alphas = [0.5, 0.0, 2.0]
    first, second = play(make(n_players=3, rounds=3), alphas, None), play(make(n_players=3, rounds=3), alphas, None)
    assert any(s[1] != t[1] for s, t in zip(first, second))
    env = make(n_players=3, rounds=3)
    env.reset(seed=5)
    for bad in (-1, True, 2**64, 3.5, [1, 2]):
        with pytest.raises(ValueError, match="seed must be an integer"):
            env.reset(seed=bad)
    steps = []
    while env.agents:  # the episode continues from seed 5's generators
        steps.append(env.step({a: np.array([alphas[i]], dtype=np.float32) for i, a in enumerate(env.agents)})[1])
    assert steps == [step[1] for step in play(make(n_players=3, rounds=3), alphas, 5)]


def test_balanced_payments_sum_to_zero_every_round_and_return_is_utility_minus_payments():
    env = make(["side_payment:C=0.5,balanced=true"], n_players=4, active=3, rounds=5, utility="shared_damage")
    steps = play(env, [1.0, 0.0, 0.0, 3.0], seed=0)
    for _, rewards, infos in steps[:-1]:
        payments = [infos[a]["payment"] for a in infos]
        assert abs(sum(payments)) <= 1e-5 * (1 + sum(abs(p) for p in payments))
        assert all(rewards[a] == pytest.approx(-infos[a]["payment"]) for a in infos)
    # shared damage: every player's terminal utility is the same f(theta_T)
    _, last_rewards, last_infos = steps[-1]
    utilities = [last_rewards[a] + last_infos[a]["payment"] for a in last_rewards]
    assert np.allclose(utilities, utilities[0])
    assert utilities[0] > 0


def test_no_payment_info_without_a_payment_mechanism():
    steps = play(make(n_players=3, rounds=2), [0.0, 0.0, 0.0], seed=0)
    assert all("payment" not in info for _, _, infos in steps for info in infos.values())
    first = steps[0][1]  # a round's reward without payments is +0.0, not -0.0
    assert all(r == 0.0 and np.copysign(1.0, r) == 1.0 for r in first.values())


def test_divergence_ends_the_episode_with_a_flag():
    env = make(n_players=3, rounds=500, lr_value=5.0)  # gamma * max eigenvalue = 10 > 2
    steps = play(env, [0.0, 0.0, 0.0], seed=0)
    assert len(steps) < 500
    assert all(info["diverged"] for info in steps[-1][2].values())
    assert all(np.isfinite(r) for r in steps[-1][1].values())


def test_noise_hurts_the_others_under_the_default_utility():
    """A player that adds noise raises the others' final loss: its default utility beats the honest run's."""
    honest = play(make(n_players=3, rounds=20), [0.0, 0.0, 0.0], seed=3)
    noisy = play(make(n_players=3, rounds=20), [5.0, 0.0, 0.0], seed=3)
    assert noisy[-1][1]["player_0"] > honest[-1][1]["player_0"]


@pytest.mark.parametrize(
    "config, pattern",
    [
        (dict(objective="resnet"), "objective"),
        (dict(n_players=1), r"n_players must be an integer >= 2, got 1"),
        (dict(rounds=0), "rounds"),
        (dict(utility="welfare"), "utility"),
        (dict(lam=[1.0, 2.0], n_players=3), "lam"),
        (dict(noise_norm="per_layer"), "noise_norm"),
        (dict(active=9, n_players=4), "active"),
        (dict(device="tpu"), r"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        (dict(n_player=4), r"unknown parameter 'n_player'; did you mean 'n_players'"),
        pytest.param(
            dict(device="cuda"),
            "CUDA is not available",
            id="cuda-missing",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_bad_config(config, pattern):
    with pytest.raises(ValueError, match=pattern):
        make(**config)


def test_n_players_is_the_shared_name_and_n_clients_gets_a_did_you_mean():
    """The number of participants is ``n_players`` in every game; FedSGD's former spelling names it."""
    env = fedgames.make("fedsgd_v0", n_players=4, rounds=2)
    assert env.possible_agents == [f"player_{i}" for i in range(4)] and env.unwrapped.config.n_players == 4
    with pytest.raises(ValueError, match=r"fedsgd_v0: unknown parameter 'n_clients'; did you mean 'n_players'\?"):
        fedgames.make("fedsgd_v0", n_clients=4)


def test_n_players_counts_the_attackers_slots():
    """With ``byzantine`` attackers, ``n_players`` counts every client slot; the attackers leave the agents, and
    ``lam`` has one value per remaining player."""
    env = make(n_players=5, rounds=2, byzantine={"player_1": "sign_flip", "player_3": "sign_flip"}, lam=[1, 2, 3])
    config = env.unwrapped.config
    assert env.possible_agents == ["player_0", "player_2", "player_4"]
    assert config.n_agents == 3 and config.players.tolist() == [0, 2, 4] and config.lam.tolist() == [1, 2, 3]
    assert env.unwrapped.game.clients.n_clients == 5


def test_the_config_is_checked_before_any_data_is_built(monkeypatch):
    """A bad value is refused by the config, before the (possibly slow) data and model are built."""

    def never(*args, **kwargs):
        raise AssertionError("built the objective before checking the config")

    monkeypatch.setattr("fedgames.envs.fedsgd.fedsgd.build_objective", never)
    for config, pattern in [
        (dict(objective="cnn", lr="decaying"), r"lr='decaying' needs strong_convexity \(m_sc\)"),
        (dict(byzantine={"player_0": "ipm:tau=1", "player_1": "ipm:tau=1"}, n_players=4, active=2), "honest client"),
        (dict(precision="float16"), "precision must be one of"),
        (dict(compile="fast"), "compile must be False, True or one of"),
        (dict(data_seed=-1), "data_seed must be an integer >= 0"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            make(**config)


def test_the_objectives_that_know_their_strong_convexity_are_the_models_that_do():
    """The config refuses ``lr="decaying"`` without ``strong_convexity`` exactly for the models with no ``m_sc``."""
    models = {"quadratic": Quadratic(), "logistic": Logistic(64, 10), "cnn": FemnistCNN()}
    assert set(models) == set(OBJECTIVES)
    known = {name for name, model in models.items() if getattr(model, "strong_convexity", None) is not None}
    assert known == set(KNOWN_STRONG_CONVEXITY)


def test_a_billion_players_is_refused_at_once_with_the_estimate():
    if memory_budget() is None:
        pytest.skip("the machine's memory is unknown")
    with pytest.raises(ValueError, match="fedsgd_v0 with n_players=1000000000 needs about .* TiB"):
        make(n_players=10**9)


def test_the_env_reads_its_rules_without_copies():
    """The horizon, players, lambdas and utility are the config's, through the rules the batches share."""
    env = make(n_players=3, rounds=4, lam=[1.0, 0.5, 2.0], utility="shared_damage").unwrapped
    assert env.rules.config is env.config and env.rules.game is env.game
    assert env.rounds == 4 and env.utility == "shared_damage" and env.lam is env.config.lam
    np.testing.assert_array_equal(env.player_traits(), [[1.0], [0.5], [2.0]])


def test_the_batched_game_plays_without_pettingzoo(run_without_packages):
    """The config, rules and batched episodes of ``fedsgd_v0`` import and play with numpy and torch alone
    (PettingZoo, Gymnasium and SB3 blocked): what a bare GPU machine runs."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from fedgames.envs.fedsgd.batch import FedSGDBatch, FedSGDRules\n"
        "from fedgames.envs.fedsgd.config import FedSGDConfig\n"
        "from fedgames.envs.fedsgd.game import ClientData, FedSGDGame\n"
        "from fedgames.envs.fedsgd.models import Quadratic\n"
        "import torch\n"
        "config = FedSGDConfig.from_kwargs(n_players=3, rounds=2, device='cpu')\n"
        "model = Quadratic()\n"
        "z, y = model.sample(30, torch.Generator().manual_seed(0))\n"
        "clients = ClientData.from_arrays(z, y, torch.arange(3).repeat_interleave(10), 3)\n"
        "game = FedSGDGame(model, clients)\n"
        "batch = FedSGDBatch(FedSGDRules(game, config, None), game.protocol(), 2, np.random.default_rng(0))\n"
        "batch.reset()\n"
        "steps = [batch.step(np.zeros((2, 3, 1))) for _ in range(2)]\n"
        "loaded = sorted(k for k in ('pettingzoo', 'gymnasium') if k in sys.modules)\n"
        "print(steps[-1].done, steps[-1].rewards.shape, loaded)"
    )
    assert run_without_packages(code) == "True (2, 3) []"


def test_bad_actions_and_action_bounds():
    env = make(n_players=3, rounds=3, alpha_max=2.0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"alpha=3 is outside"):
        env.step({a: np.array([3.0], dtype=np.float32) for a in env.agents})
    with pytest.raises(ValueError, match="NaN"):
        env.step({a: np.array([np.nan], dtype=np.float32) for a in env.agents})
    env.step({a: np.array([1.0], dtype=np.float32) for a in env.agents})  # still usable
    bounded = make(["bounded_attack:A=0.5"], n_players=3, rounds=2)
    assert bounded.action_space("player_0").high[0] == np.float32(0.5)


def test_observation_reports_the_broadcast_models_loss_on_the_players_data():
    """With whole-data batches, an active player's last observation entry is its loss at the model the round
    started from (the quadratic starts at 0); inactive players see 0."""
    env = make(n_players=4, active=2, rounds=3, batch_fraction=1.0)
    env.reset(seed=3)
    game = env.unwrapped.game
    start = {"theta": game.model.init(None)["theta"].to(game.clients.x.device)}
    observations, *_ = env.step({a: np.zeros(1, dtype=np.float32) for a in env.agents})
    clients = game.clients
    for i, agent in enumerate(env.possible_agents):
        n = int(clients.count[i])
        ones = torch.ones(n, device=clients.x.device)
        expected = float(game.model.loss(start, clients.x[i, :n], clients.y[i, :n], ones))
        if observations[agent][1] == 1.0:
            assert observations[agent][4] == pytest.approx(expected, rel=1e-6)
        else:
            assert observations[agent][4] == 0.0
