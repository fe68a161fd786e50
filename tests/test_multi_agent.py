"""Multi-agent training: the parameter-sharing VecEnv, independent and shared learners, checkpoints and resume."""

from __future__ import annotations

import copy
import json
import os
import pickle

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

import fedgames
from fedgames.agents import FixedPolicy, HonestPolicy, SB3Policy
from fedgames.train import checkpoint, learners
from fedgames.train.checkpoint import read_model_state
from fedgames.train.multi_agent import (
    SelfPlayVecEnv,
    TrainingResult,
    honest_policies,
    strategy_summary,
    train_independent,
    train_shared,
)
from fedgames.train.oracles import make_oracle


def make(mechanisms=(), **config):
    return fedgames.make("mean_estimation_v0", mechanisms=list(mechanisms), **config)


# Tiny budgets for the bookkeeping tests: one PPO rollout (4 steps x 64 games) per player and round.
TINY = {"steps_per_round": 256, "n_envs": 64, "eval_episodes": 256}


class LearnCounter:
    """Counts (and optionally fails) calls of ``PPO.learn``."""

    def __init__(self, monkeypatch, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at
        original = PPO.learn

        def learn(model, *args, **kwargs):
            self.calls += 1
            if self.calls == self.fail_at:
                raise KeyboardInterrupt("simulated crash")
            return original(model, *args, **kwargs)

        monkeypatch.setattr(PPO, "learn", learn)


# ---------------------------------------------------------------------------------------------------------------
# SelfPlayVecEnv
# ---------------------------------------------------------------------------------------------------------------


def test_self_play_vec_env_shapes_dones_infos():
    env = make(n_players=3, dim=2)
    venv = SelfPlayVecEnv(env, n_games=5, seed=0)
    assert isinstance(venv, VecEnv)
    assert venv.num_envs == 15
    assert venv.observation_space == env.observation_space("player_0")
    assert venv.action_space == spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
    obs = venv.reset()
    assert obs.shape == (15, 3) and obs.dtype == np.float32
    assert all(venv.observation_space.contains(o) for o in obs)
    # game-major: sub-env g * N + i is player i of game g
    np.testing.assert_allclose(obs.reshape(5, 3, 3), env.unwrapped.game.observe(venv._batch._world), rtol=1e-6)
    actions = np.stack([venv.action_space.sample() for _ in range(15)])
    new_obs, rewards, dones, infos = venv.step(actions)
    assert new_obs.shape == (15, 3) and rewards.shape == (15,) and rewards.dtype == np.float32
    assert dones.dtype == bool and dones.all()
    assert len(infos) == 15
    for k, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is False
        np.testing.assert_array_equal(info["terminal_observation"], obs[k])
    assert not np.array_equal(new_obs, obs)  # the next games started


def test_self_play_rewards_are_each_players_own():
    env = make(["bounded_attack:A=1.5"], n_players=4, dim=3)
    venv = SelfPlayVecEnv(env, n_games=7, seed=3)
    venv.reset()
    world, rng = venv._batch._world, copy.deepcopy(venv._rng)
    actions = np.random.default_rng(0).uniform(-1.5, 1.5, size=(28, 5))  # out of range: clipped like SB3 would
    _, rewards, _, _ = venv.step(actions)
    played = venv.scaler.to_env(actions).reshape(7, 4, 5)
    assert played[..., 0].max() <= 1.5
    expected = env.unwrapped.game.play(env.protocol, world, played, rng).rewards
    np.testing.assert_allclose(rewards, expected.reshape(-1).astype(np.float32))


def test_self_play_seeding():
    env = make(n_players=3)
    a, b = SelfPlayVecEnv(env, 4, seed=1), SelfPlayVecEnv(env, 4, seed=1)
    np.testing.assert_array_equal(a.reset(), b.reset())
    assert not np.array_equal(SelfPlayVecEnv(env, 4, seed=2).reset(), SelfPlayVecEnv(env, 4, seed=1).reset())
    a.seed(7)
    first = a.reset()
    a.reset()  # a seed applies to the next reset only
    a.seed(7)
    np.testing.assert_array_equal(a.reset(), first)


def test_self_play_vec_env_contract():
    env = make(n_players=2)
    venv = SelfPlayVecEnv(env, n_games=3, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros((6, 4)))
    assert venv.get_attr("n_games") == [3] * 6
    assert venv.get_attr("n_games", indices=[0, 2]) == [3, 3]
    assert venv.env_method("_new_episodes", indices=1)[0].shape == (6, 3)
    assert venv.env_is_wrapped(VecMonitor) == [False] * 6
    venv.set_attr("custom", 5)
    assert venv.get_attr("custom") == [5] * 6
    monitored = VecMonitor(venv)
    monitored.reset()
    _, _, _, infos = monitored.step(np.zeros((6, 4), dtype=np.float32))
    assert all(info["episode"]["l"] == 1 for info in infos)
    model = PPO("MlpPolicy", monitored, n_steps=4, batch_size=24, n_epochs=1, seed=0)
    model.learn(48)
    mean, _ = evaluate_policy(model, monitored, n_eval_episodes=12)
    assert np.isfinite(mean)
    venv.close()


def test_self_play_needs_identical_spaces():
    env = make(n_players=3)
    boxes = {a: env.action_space(a) for a in env.possible_agents}
    boxes["player_1"] = spaces.Box(0.0, 0.5, shape=(4,), dtype=np.float32)
    env.action_space = boxes.__getitem__
    with pytest.raises(ValueError, match="identical action_space.*player_1"):
        SelfPlayVecEnv(env, 2)
    with pytest.raises(ValueError, match="identical action_space"):
        train_shared(env, total_steps=10, n_games=2)
    with pytest.raises(ValueError, match="n_games"):
        SelfPlayVecEnv(make(), 0)


# ---------------------------------------------------------------------------------------------------------------
# Learning towards the theory
# ---------------------------------------------------------------------------------------------------------------


def test_shared_ppo_converges_to_bounded_attack_equilibrium():
    """Cor. B.1: under ``alpha <= A`` and no bias the equilibrium is ``alpha = A``, ``beta = A^2/(nu N + A^2)``.

    ``bias_max=0`` removes the bias from the action set, as Cor. B.1 assumes (a constant bias is another attack;
    with it the others' ``S_i`` and so the best ``beta`` grow). Tolerance: 0.15 of each component's range
    (0.225 for alpha in [0, 1.5], 0.15 for beta in [0, 1]). While learning, the others explore with a Gaussian
    clipped at ``A``, so the ``E alpha^2`` a learner defends against is below ``A^2`` and its best ``beta`` lies
    below the equilibrium value (measured with this budget, seeds 0-5: beta 0.60-0.64, alpha 1.50; after 300k
    steps beta ~0.65; target 0.68); the tolerance covers this lag with a margin of about 2x."""
    A, N = 1.5, 3
    env = make([f"bounded_attack:A={A}"], n_players=N, bias_max=0.0)
    nu = env.unwrapped.game.nu[0]
    result = train_shared(env, total_steps=150_000, n_games=512, checkpoint_every=50_000, seed=0)
    assert isinstance(result, TrainingResult) and result.mode == "shared"
    assert len(result.history) == 3
    final = result.history[-1].players
    for agent in env.possible_agents:
        assert abs(final[agent]["alpha"] - A) < 0.15 * A
        assert abs(final[agent]["beta"] - A**2 / (nu * N + A**2)) < 0.15
        assert final[agent]["bias_norm"] == 0.0
    # one model behind every player
    assert len({id(p.model) for p in result.policies.values()}) == 1


def test_independent_ppo_raises_alpha_without_mechanism():
    """Cor. 4.2: with no mechanism every player's reward grows with its own alpha, so learners that start against
    honest opponents push alpha to the top of its range. An untrained policy's mean action maps to the middle of
    the range (alpha = 2.5 of 5), so "well above 0" is checked as above 80% of alpha_max."""
    env = make(n_players=3)
    alpha_max = env.unwrapped.game.alpha_max
    result = train_independent(env, rounds=1, steps_per_round=30_000, n_envs=512, seed=0)
    assert result.mode == "independent" and len(result.history) == 1
    for agent in env.possible_agents:
        assert result.history[0].players[agent]["alpha"] > 0.8 * alpha_max
        assert isinstance(result.policies[agent], SB3Policy)
    assert len({id(p.model) for p in result.policies.values()}) == 3


def test_independent_rounds_are_simultaneous(monkeypatch):
    """Round 0 plays against ``init``; round r against frozen snapshots of the others' round r-1 policies."""
    seen = []
    original = learners.BestResponseVecEnv

    def recording(env, player, others, *args, **kwargs):
        seen.append((player, dict(others)))
        return original(env, player, others, *args, **kwargs)

    monkeypatch.setattr(learners, "BestResponseVecEnv", recording)
    env = make(n_players=3)
    init = {a: FixedPolicy(0.5, 0.1, [0.0, 0.0]) for a in env.possible_agents}
    result = train_independent(env, rounds=2, init=init, **TINY)
    assert [player for player, _ in seen] == env.possible_agents * 2
    for player, others in seen[:3]:
        assert set(others) == set(env.possible_agents) - {player}
        assert all(others[a] is init[a] for a in others)
    live = {id(p.model) for p in result.policies.values()}
    round_1 = [others for _, others in seen[3:]]
    for others in round_1:
        assert all(isinstance(p, SB3Policy) and id(p.model) not in live for p in others.values())
    # player_2 in round 1 faced player_0 as it was before player_0 trained in round 1
    assert round_1[2]["player_0"] is round_1[1]["player_0"]


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and resume
# ---------------------------------------------------------------------------------------------------------------


def test_resume_trains_only_missing_rounds_and_matches_uninterrupted_run(tmp_path, monkeypatch):
    env = make(n_players=3)
    first = train_independent(env, rounds=2, seed=4, checkpoint_dir=tmp_path, **TINY)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["completed_rounds"] == 2 and len(state["history"]) == 2 and state["seed"] == 4
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [f"player_{i}.round_0002.pt" for i in range(3)]

    counter = LearnCounter(monkeypatch)
    resumed = train_independent(env, rounds=3, seed=4, checkpoint_dir=tmp_path, **TINY)
    assert counter.calls == 3  # round 3 only: one learn call per player
    assert type(resumed) is type(first) and resumed.mode == first.mode
    assert [h.round for h in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == first.history  # read back from state.json
    assert json.loads((tmp_path / "state.json").read_text())["completed_rounds"] == 3

    straight = train_independent(env, rounds=3, seed=4, **TINY)  # PPO resumes exactly
    assert resumed.history == straight.history

    counter.calls = 0
    again = train_independent(env, rounds=3, seed=4, checkpoint_dir=tmp_path, **TINY)
    assert counter.calls == 0 and again.history == resumed.history
    with pytest.raises(ValueError, match="3 rounds, more than rounds=2"):
        train_independent(env, rounds=2, seed=4, checkpoint_dir=tmp_path, **TINY)


def test_crash_mid_round_leaves_loadable_checkpoint(tmp_path, monkeypatch):
    env = make(n_players=3)
    LearnCounter(monkeypatch, fail_at=5)  # round 2, second player
    with pytest.raises(KeyboardInterrupt):
        train_independent(env, rounds=3, seed=1, checkpoint_dir=tmp_path, **TINY)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["completed_rounds"] == 1
    for name in state["models"].values():
        assert read_model_state(tmp_path / name)["counters"]["num_timesteps"] == 256
    monkeypatch.undo()

    counter = LearnCounter(monkeypatch)
    result = train_independent(env, rounds=3, seed=1, checkpoint_dir=tmp_path, **TINY)
    assert counter.calls == 6 and [h.round for h in result.history] == [1, 2, 3]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_crash_while_checkpointing_keeps_previous_state(tmp_path, monkeypatch):
    env = make(n_players=2)
    original = checkpoint.write_atomic

    def failing(path, write):
        if path.name == "state.json" and "round_0002" in "".join(p.name for p in path.parent.glob("*.pt")):
            raise OSError("disk full")
        return original(path, write)

    monkeypatch.setattr(checkpoint, "write_atomic", failing)
    with pytest.raises(OSError, match="disk full"):
        train_independent(env, rounds=2, seed=0, checkpoint_dir=tmp_path, **TINY)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["completed_rounds"] == 1
    assert all((tmp_path / name).exists() for name in state["models"].values())
    monkeypatch.undo()
    result = train_independent(env, rounds=2, seed=0, checkpoint_dir=tmp_path, **TINY)
    assert len(result.history) == 2
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["player_0.round_0002.pt", "player_1.round_0002.pt"]


class Payload:
    """A pickle that runs code when unpickled: it creates the folder ``marker``."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_planted_payload_in_a_checkpoint_does_not_run_on_resume(tmp_path):
    """Issue 17: resuming reads model files with ``torch.load(weights_only=True)``, which builds tensors and plain
    containers only; a file whose pickle would call ``os.mkdir`` (planted as a torch file, as a bare pickle, or as
    an SB3 zip of the older format) is refused with the file named, and the payload never runs."""
    env = make(n_players=2)
    train_independent(env, rounds=1, seed=0, checkpoint_dir=tmp_path, **TINY)
    marker = tmp_path / "payload_ran"
    pickle.loads(pickle.dumps(Payload(marker)))  # the payload works: unpickled the usual way, it runs
    assert marker.is_dir()
    marker.rmdir()
    target = tmp_path / "player_0.round_0001.pt"
    good = target.read_bytes()
    plants = {
        "torch": lambda: torch.save({"format": 1, "parameters": Payload(marker)}, target),
        "pickle": lambda: target.write_bytes(pickle.dumps(Payload(marker))),
    }
    for kind, plant in plants.items():
        plant()
        with pytest.raises(ValueError, match=r"player_0\.round_0001\.pt: not a fedgames model file"):
            train_independent(env, rounds=2, seed=0, checkpoint_dir=tmp_path, **TINY)
        assert not marker.exists(), kind
    target.write_bytes(good)

    # an SB3 zip with a serialized entry, named by a state.json of the old format: not even opened
    state_path = tmp_path / "state.json"
    state = json.loads(state_path.read_text())
    old = PPO("MlpPolicy", "Pendulum-v1", n_steps=8, batch_size=8)
    old.learning_rate = Payload(marker)  # SB3 writes it as a ':serialized:' pickle, which its load runs
    old.save(tmp_path / "player_0.round_0001.zip")
    state_path.write_text(json.dumps(state | {"format": 1, "models": {"player_0": "player_0.round_0001.zip"}}))
    with pytest.raises(ValueError, match="older fedgames.*not read"):
        train_independent(env, rounds=2, seed=0, checkpoint_dir=tmp_path, **TINY)
    assert not marker.exists()
    # and a state naming a file outside the checkpoint's own names is refused before anything is read
    state_path.write_text(
        json.dumps(state | {"models": {"player_0": "../x.pt", "player_1": state["models"]["player_1"]}})
    )
    with pytest.raises(ValueError, match=r"model file '\.\./x\.pt'"):
        train_independent(env, rounds=2, seed=0, checkpoint_dir=tmp_path, **TINY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s | {"variables": []}, "variables must be a mapping of names to tensors"),
        (lambda s: s | {"counters": dict.fromkeys(s["counters"], [1])}, "counters must be a mapping of names to integ"),
        (lambda s: s | {"counters": dict.fromkeys(s["counters"], "x")}, "counters must be a mapping of names to integ"),
        (lambda s: s | {"counters": dict.fromkeys(s["counters"], -(10**30))}, r"integers in \[0, 2\*\*63\)"),
        (lambda s: s | {"format": torch.tensor([1, 1])}, "unknown model format"),
        (lambda s: s | {"parameters": {"policy": []}}, "parameters must be a mapping of state dicts"),
        (
            lambda s: (
                s
                | {
                    "parameters": {
                        k: {n: t * np.nan for n, t in v.items()} if k == "policy" else v
                        for k, v in s["parameters"].items()
                    }
                }
            ),
            r"parameters\['policy'\]\[.*\] holds NaN or inf",
        ),
    ],
)
def test_a_model_file_with_parts_of_the_wrong_type_is_refused_by_name(tmp_path, change, message):
    """Audit of issue 17: a model file whose parts have the wrong types (a list for the variables, lists, strings or
    -1e30 as counters, a tensor as the format, NaN weights) was a traceback, an error not naming the file or
    accepted; each is now a ValueError naming the file and the part."""
    env = make(n_players=2)
    train_independent(env, rounds=1, seed=0, checkpoint_dir=tmp_path, **TINY)
    target = tmp_path / "player_0.round_0001.pt"
    torch.save(change(torch.load(target, weights_only=True)), target)
    with pytest.raises(ValueError, match=r"player_0\.round_0001\.pt: .*" + message):
        train_independent(env, rounds=2, seed=0, checkpoint_dir=tmp_path, **TINY)


def test_resume_errors_name_the_file(tmp_path):
    """A truncated ``state.json`` and a missing model file are ``ValueError`` s naming the file (not a JSON
    traceback, not SB3's ``...zip.zip``)."""
    env = make(n_players=2)
    train_independent(env, rounds=1, seed=0, checkpoint_dir=tmp_path, **TINY)
    state_path = tmp_path / "state.json"
    text = state_path.read_text()
    state_path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"state\.json: unreadable checkpoint state"):
        train_independent(env, rounds=2, seed=0, checkpoint_dir=tmp_path, **TINY)
    state_path.write_text(text)
    (tmp_path / "player_1.round_0001.pt").unlink()
    with pytest.raises(ValueError, match=r"player_1\.round_0001\.pt: model file missing") as error:
        train_independent(env, rounds=2, seed=0, checkpoint_dir=tmp_path, **TINY)
    assert ".zip" not in str(error.value)


def test_config_mismatch_names_the_keys(tmp_path):
    env = make(n_players=2)
    train_independent(env, rounds=1, seed=0, checkpoint_dir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="steps_per_round"):
        train_independent(env, rounds=2, seed=0, checkpoint_dir=tmp_path, **(TINY | {"steps_per_round": 512}))
    with pytest.raises(ValueError, match="differing keys: seed"):
        train_independent(env, rounds=2, seed=1, checkpoint_dir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="algo_kwargs.learning_rate"):
        train_independent(env, rounds=2, checkpoint_dir=tmp_path, algo_kwargs={"learning_rate": 1e-3}, **TINY)
    with pytest.raises(ValueError, match="env.mechanisms"):
        train_independent(make(["bounded_attack:A=1"], n_players=2), rounds=2, checkpoint_dir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="mode"):
        train_shared(env, total_steps=512, n_games=32, checkpoint_dir=tmp_path)
    # what only changes the output resumes: more logging is not another run
    resumed = train_independent(env, rounds=2, seed=0, checkpoint_dir=tmp_path, algo_kwargs={"verbose": 0}, **TINY)
    assert len(resumed.history) == 2
    state_path = tmp_path / "state.json"
    state_path.write_text(json.dumps(json.loads(state_path.read_text()) | {"config": "x"}))
    with pytest.raises(ValueError, match=r"state\.json: its config must be a JSON object, got 'x'"):
        train_independent(env, rounds=2, seed=0, checkpoint_dir=tmp_path, **TINY)


def test_a_misspelt_hyperparameter_gets_a_did_you_mean():
    with pytest.raises(ValueError, match=r"PPO has no parameter 'n_step'; did you mean 'n_steps'"):
        train_independent(make(n_players=2), rounds=1, seed=0, algo_kwargs={"n_step": 8}, **TINY)


def test_shared_checkpoints_and_resume(tmp_path, monkeypatch):
    env = make(["bounded_attack:A=1"], n_players=2)
    options = {"n_games": 32, "checkpoint_every": 512, "eval_episodes": 256, "seed": 2}
    first = train_shared(env, total_steps=1024, checkpoint_dir=tmp_path, **options)
    assert [h.timesteps for h in first.history] == [512, 1024]  # 4 steps x 64 sub-envs = 256 per rollout
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["completed_rounds"] == 2 and state["timesteps"] == 1024
    assert state["models"] == {"shared": "shared.round_0002.pt"}
    counter = LearnCounter(monkeypatch)
    resumed = train_shared(env, total_steps=2048, checkpoint_dir=tmp_path, **options)
    assert counter.calls == 2 and [h.timesteps for h in resumed.history] == [512, 1024, 1536, 2048]
    straight = train_shared(env, total_steps=2048, **options)
    assert resumed.history == straight.history


# ---------------------------------------------------------------------------------------------------------------
# Result, summaries, other algorithms
# ---------------------------------------------------------------------------------------------------------------


def test_result_json_plot_and_summary(tmp_path):
    env = make(n_players=2, dim=3)
    result = train_independent(env, rounds=2, progress=True, **TINY)
    data = json.loads(result.to_json())
    assert data["mode"] == "independent" and data["config"]["algo"] == "ppo" and len(data["history"]) == 2
    summary = data["history"][0]["players"]["player_1"]
    assert set(summary) == {"alpha", "beta", "b_1", "b_2", "b_3", "bias_norm", "reward"}
    assert result.series("player_0", "alpha").shape == (2,)
    assert result.plotted_components() == ["alpha", "beta"]
    path = result.plot(tmp_path / "plots" / "strategies.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the summary: exact for fixed policies, the same batch for the same seed
    policies = {"player_0": FixedPolicy(1.0, 0.25, [0.3, -0.4, 0.0]), "player_1": HonestPolicy(3)}
    fixed, divergence = strategy_summary(env, policies, episodes=64, seed=5)
    assert divergence is None and data["history"][0]["divergence"] is None and data["notes"] == []
    assert fixed["player_0"]["alpha"] == 1.0 and fixed["player_0"]["bias_norm"] == pytest.approx(0.5)
    assert (fixed, None) == strategy_summary(env, policies, episodes=64, seed=5)
    assert fixed["player_1"]["reward"] != fixed["player_0"]["reward"]


def test_honest_default_init():
    policies = honest_policies(make(["noisy_response:C=0.5"], n_players=3))
    action = policies["player_0"].act(np.zeros(3), np.random.default_rng(0))
    np.testing.assert_allclose(action, [0.0, 0.5 / 1.5, 0.0, 0.0])
    assert honest_policies(make(["robust_aggregation:rule=median"]))["player_1"].act(np.zeros(3), None).sum() == 0


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_off_policy_algorithms_learn_and_resume(algo, tmp_path):
    """SAC and TD3 learn the best response to honesty under a bound A = 1 with no payment, which is to attack at
    alpha = A (Cor. B.1: the attack costs the attacker nothing after its own correction): both players' alpha is
    above 0.9 after one round (from 0.5, the middle of the box, where both start). A resumed run keeps round 1's
    record exactly and adds round 2; the episodes trained count every learner's."""
    env = make(["bounded_attack:A=1"], n_players=2)
    independent = train_independent(
        env, algo=algo, rounds=1, steps_per_round=320, n_envs=32, eval_episodes=128, checkpoint_dir=tmp_path / "ind"
    )
    resumed = train_independent(
        env, algo=algo, rounds=2, steps_per_round=320, n_envs=32, eval_episodes=128, checkpoint_dir=tmp_path / "ind"
    )
    assert len(independent.history) == 1 and len(resumed.history) == 2
    assert resumed.history[0] == independent.history[0]
    assert [r.timesteps for r in resumed.history] == [2 * 320, 4 * 320]  # two learners, 320 episodes a round each
    assert all(s["alpha"] > 0.9 for s in independent.history[0].players.values()), independent.history[0]
    rewards = [s["reward"] for s in independent.history[0].players.values()]
    assert rewards[0] == pytest.approx(-rewards[1], abs=1e-9)  # N = 2, lambda = 1: R_0 = -R_1 on each episode
    shared = train_shared(env, algo=algo, total_steps=640, n_games=16, checkpoint_every=320, eval_episodes=128)
    assert [r.timesteps for r in shared.history] == [320, 640]
    for result in (resumed, shared):
        for summary in result.history[-1].players.values():
            assert 0.0 <= summary["alpha"] <= 1.0 and 0.0 <= summary["beta"] <= 1.0


def test_bad_arguments():
    env = make(n_players=2)
    with pytest.raises(ValueError, match="algo"):
        train_independent(env, algo="dqn", rounds=1, **TINY)
    with pytest.raises(ValueError, match="rounds"):
        train_independent(env, rounds=0, **TINY)
    with pytest.raises(ValueError, match="init"):
        train_independent(env, rounds=1, init={"player_0": HonestPolicy(2)}, **TINY)
    with pytest.raises(ValueError, match="total_steps"):
        train_shared(env, total_steps=0)


def test_algo_kwargs_may_set_policy_and_verbose_not_env_or_seed():
    """As in SB3's constructors: ``policy`` and ``verbose`` are overridable through ``algo_kwargs``, in the trainers
    and the oracles alike; ``seed`` and ``env`` are fedgames' to set, and saying so is a ``ValueError``."""
    env = make(["side_payment:C=0.4,balanced=true"], n_players=3)
    honest = {a: HonestPolicy(env.unwrapped.game.dim) for a in env.possible_agents}
    mine = {"policy": "MlpPolicy", "verbose": 0}
    oracle = make_oracle("ppo", timesteps=64, seeds=1, n_envs=16, validation_episodes=64, algo_kwargs=mine)
    assert oracle.best_response(env, "player_0", honest).oracle == "ppo"
    result = train_independent(env, rounds=1, steps_per_round=8, n_envs=1, seed=0, eval_episodes=16, algo_kwargs=mine)
    assert set(result.policies) == set(env.possible_agents)  # n_envs = 1: PPO's minibatch is 2, SB3's smallest
    for bad in ({"seed": 3}, {"env": None}):
        with pytest.raises(ValueError, match="cannot be set there"):
            make_oracle("ppo", timesteps=64, seeds=1, n_envs=16, validation_episodes=64, algo_kwargs=bad).best_response(
                env, "player_0", honest
            )
        with pytest.raises(ValueError, match="cannot be set there"):
            train_independent(env, rounds=1, steps_per_round=8, n_envs=4, seed=0, eval_episodes=16, algo_kwargs=bad)


def test_sb3_callbacks_reach_every_learn_call():
    """SB3's ``callback`` argument: the trainers give it to every model's ``learn()`` in every round, the learned
    oracle beside its own curve recorder; lists and plain functions work as in SB3."""

    class Count(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.models, self.steps = set(), 0

        def _on_step(self) -> bool:
            self.models.add(id(self.model))
            self.steps += 1
            return True

    env = make(n_players=2)
    count = Count()
    train_independent(env, rounds=2, seed=0, callback=count, **TINY)
    assert len(count.models) == 2 and count.steps == 2 * 2 * 4  # 2 players x 2 rounds x one 4-step rollout
    calls = []
    oracle = make_oracle(
        "ppo",
        timesteps=256,
        seeds=1,
        n_envs=64,
        validation_episodes=64,
        callback=[Count(), lambda local, glob: calls.append(1) or True],
    )
    result = oracle.best_response(env, "player_0", honest_policies(env))
    assert calls and result.curves[0]  # the user's function ran, and the oracle still recorded its curve
