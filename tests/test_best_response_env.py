"""The single-agent best-response views (SPEC §5 step 2): ``BestResponseEnv`` (gymnasium) and
``BestResponseVecEnv`` (batched SB3 ``VecEnv``), the action scaling between SB3's ``[-1, 1]^k`` and the player's
bounds, and ``SB3Policy``. No learning here; the whole file runs in a few seconds.
"""

from __future__ import annotations

import copy
import re
import warnings

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

import fedgames
from fedgames.agents import FixedPolicy, HonestPolicy, RandomPolicy, SB3Policy
from fedgames.agents.action_scaling import ActionScaler
from fedgames.train.best_response_env import BestResponseEnv, BestResponseVecEnv, others_from_profile

PLAYER = "player_0"
STACK = ["side_payment:C=0.4,balanced=true", "noisy_response:C=0.5"]

# gymnasium's checker warns about the observation Box's infinite bounds (the sample mean is unbounded, by design)
# and that it cannot try other render modes without a registry spec; nothing else should be reported.
KNOWN_WARNINGS = re.compile(r"infinity|not having a spec")


def make_env(mechanisms=(), **config):
    return fedgames.make("mean_estimation_v0", mechanisms=list(mechanisms), **config)


def fixed_others(env, alpha=1.0, beta=0.3, bias=0.2):
    """Non-trivial fixed strategies for everyone but PLAYER (different per player, so the views must route them)."""
    dim = env.unwrapped.game.dim
    top = env.protocol.action_high
    bound, alpha_top = float(top[env.protocol.action_index("b_1")]), float(top[env.protocol.action_index("alpha")])
    return {
        a: FixedPolicy(min(alpha * (1 + 0.5 * k), alpha_top), beta, np.full(dim, min(bias, bound)))
        for k, a in enumerate(env.possible_agents)
        if a != PLAYER
    }


def random_others(env):
    return {a: RandomPolicy(env.action_space(a)) for a in env.possible_agents if a != PLAYER}


# ---------------------------------------------------------------------------------------------------- checkers


@pytest.mark.parametrize("mechanisms", [[], STACK, ["bounded_attack:A=1.5"]], ids=["plain", "stack", "bounded"])
@pytest.mark.parametrize("others", ["fixed", "random"])
def test_env_checkers_pass(mechanisms, others):
    env = make_env(mechanisms)
    policies = fixed_others(env) if others == "fixed" else random_others(env)  # random: seeding of others' rng
    view = BestResponseEnv(env, PLAYER, policies)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(view)
        sb3_check_env(view, warn=True)
    unexpected = [str(w.message) for w in caught if not KNOWN_WARNINGS.search(str(w.message))]
    assert unexpected == []


def test_env_spaces_and_episode():
    env = make_env(STACK)
    view = BestResponseEnv(env, PLAYER, fixed_others(env))
    assert view.action_space == spaces.Box(-1.0, 1.0, shape=(env.unwrapped.game.dim + 2,), dtype=np.float32)
    assert view.observation_space is env.observation_space(PLAYER)
    obs, info = view.reset(seed=5)
    assert obs.dtype == np.float32 and view.observation_space.contains(obs)
    assert info == {}
    obs, reward, terminated, truncated, info = view.step(np.zeros(view.action_space.shape, dtype=np.float32))
    assert isinstance(reward, float) and terminated is True and truncated is False
    assert {"message", "estimate", "sq_error", "server_estimate", "payment"} <= set(info)
    # the player's own action reached the game, mapped from [-1, 1] onto its bounds: a -1 everywhere is honesty
    view.reset(seed=6)
    _, _, _, _, info = view.step(-np.ones(view.action_space.shape, dtype=np.float32))
    bias_low = env.protocol.action_low[2:]
    xbar = env.unwrapped._world.xbar[0, 0]
    np.testing.assert_allclose(info["message"], xbar + bias_low, atol=1e-5)


def test_env_seeded_reset_is_reproducible_with_random_others():
    env = make_env(STACK)
    view = BestResponseEnv(env, PLAYER, random_others(env))
    action = np.full(view.action_space.shape, 0.3, dtype=np.float32)

    def play(seed):
        view.reset(seed=seed)
        rewards = [view.step(action)[1]]
        for _ in range(4):
            view.reset()
            rewards.append(view.step(action)[1])
        return rewards

    assert play(11) == play(11)
    assert play(11) != play(12)


# ---------------------------------------------------------------------------------------------------- VecEnv


@pytest.fixture
def venv():
    env = make_env(STACK)
    return BestResponseVecEnv(
        env, PLAYER, {**fixed_others(env), "player_2": RandomPolicy(env.action_space("player_2"))}, n_envs=64, seed=0
    )


def test_vecenv_is_an_sb3_vecenv(venv):
    assert isinstance(venv, VecEnv)
    assert venv.num_envs == 64
    assert venv.action_space == spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
    assert venv.observation_space.shape == (3,)
    assert venv.env_is_wrapped(object) == [False] * 64
    assert venv.get_attr("player") == [PLAYER] * 64
    assert len(venv.get_attr("player", indices=[0, 3])) == 2


def test_vecenv_step_contract(venv):
    obs = venv.reset()
    assert obs.shape == (64, 3) and obs.dtype == np.float32
    assert np.all(obs[:, -1] >= 0)  # sample variance
    actions = np.random.default_rng(0).uniform(-1, 1, (64, 4)).astype(np.float32)
    for _ in range(3):
        new_obs, rewards, dones, infos = venv.step(actions)
        assert new_obs.shape == (64, 3) and new_obs.dtype == np.float32
        assert rewards.shape == (64,) and rewards.dtype == np.float32 and np.all(np.isfinite(rewards))
        assert dones.shape == (64,) and dones.dtype == bool and dones.all()
        assert isinstance(infos, (list, tuple)) and len(infos) == 64
        for k, info in enumerate(infos):
            assert info["TimeLimit.truncated"] is False
            np.testing.assert_array_equal(info["terminal_observation"], obs[k])  # the episode just finished
        assert not np.array_equal(new_obs, obs)  # the returned observations start fresh episodes
        obs = new_obs


def test_vecenv_step_before_reset_is_an_error():
    env = make_env()
    fresh = BestResponseVecEnv(env, PLAYER, fixed_others(env), n_envs=4, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        fresh.step(np.zeros((4, 4), dtype=np.float32))


def test_vecenv_seed_reproducibility(venv):
    actions = np.random.default_rng(1).uniform(-1, 1, (64, 4)).astype(np.float32)

    def rollout(seed):
        venv.seed(seed)
        first = venv.reset()
        rewards = [venv.step(actions)[1] for _ in range(3)]
        return first, np.concatenate(rewards)

    obs_a, rewards_a = rollout(3)
    obs_b, rewards_b = rollout(3)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rewards_a, rewards_b)
    obs_c, rewards_c = rollout(4)
    assert not np.array_equal(obs_a, obs_c)
    assert not np.allclose(rewards_a, rewards_c)
    # the constructor's seed is the same stream as seed() before reset(), and reset() without seed() goes on
    env = make_env(STACK)
    same = BestResponseVecEnv(
        env, PLAYER, {**fixed_others(env), "player_2": RandomPolicy(env.action_space("player_2"))}, n_envs=64, seed=3
    )
    np.testing.assert_array_equal(same.reset(), obs_a)
    np.testing.assert_array_equal(np.concatenate([same.step(actions)[1] for _ in range(3)]), rewards_a)
    assert not np.array_equal(venv.reset(), obs_a)


def test_views_agree_statistically():
    """For one fixed normalised action, the PettingZoo view's and the batched view's mean rewards agree within
    4 combined standard errors (the same stages, two code paths)."""
    env = make_env(STACK)
    others = fixed_others(env)
    action = np.array([0.2, -0.3, 0.5, -0.8], dtype=np.float32)
    view = BestResponseEnv(env, PLAYER, others)
    view.reset(seed=0)
    loop = []
    for _ in range(4_000):
        loop.append(view.step(action)[1])
        view.reset()
    venv = BestResponseVecEnv(make_env(STACK), PLAYER, others, n_envs=4_000, seed=1)
    venv.reset()
    batched = np.concatenate([venv.step(np.tile(action, (4_000, 1)))[1] for _ in range(5)]).astype(float)
    loop = np.array(loop)
    se = np.sqrt(loop.var(ddof=1) / loop.size + batched.var(ddof=1) / batched.size)
    assert abs(loop.mean() - batched.mean()) <= 4 * se
    # and the comparison has power: a different action moves the mean by many standard errors
    other = np.concatenate([venv.step(np.tile(-action, (4_000, 1)))[1] for _ in range(5)]).astype(float)
    assert abs(other.mean() - batched.mean()) > 10 * se


# ---------------------------------------------------------------------------------------------------- scaling


def test_action_scaler_round_trip_and_clipping():
    box = spaces.Box(np.array([0.0, 0.0, -2.0], dtype=np.float32), np.array([5.0, 1.0, 2.0], dtype=np.float32))
    scaler = ActionScaler(box)
    assert scaler.normalized == spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    unit = np.random.default_rng(0).uniform(-1, 1, (100, 3))
    np.testing.assert_allclose(scaler.to_normalized(scaler.to_env(unit)), unit, atol=1e-12)
    inside = np.random.default_rng(1).uniform(box.low, box.high, (100, 3))
    np.testing.assert_allclose(scaler.to_env(scaler.to_normalized(inside)), inside, atol=1e-12)
    np.testing.assert_allclose(scaler.to_env(np.array([-1.0, -1.0, -1.0])), box.low)
    np.testing.assert_allclose(scaler.to_env(np.array([1.0, 1.0, 1.0])), box.high)
    np.testing.assert_allclose(scaler.to_env(np.array([0.0, 0.0, 0.0])), [2.5, 0.5, 0.0])
    # clipping: anything outside [-1, 1] lands on the bounds
    np.testing.assert_allclose(scaler.to_env(np.array([-7.0, 3.0, 1.5])), [0.0, 1.0, 2.0])
    assert scaler.to_env(np.array([np.float32(-1e9)] * 3)).dtype == np.float64


def test_action_scaler_zero_width_range_maps_into_the_bound():
    box = make_env(bias_max=0).action_space(PLAYER)  # b in [0, 0]
    scaler = ActionScaler(box)
    np.testing.assert_allclose(scaler.to_env(np.array([0.4, 0.4, -1.0, 1.0]))[2:], [0.0, 0.0])


def test_action_scaler_zero_width_range_normalises_to_zero():
    scaler = ActionScaler(make_env(bias_max=0).action_space(PLAYER))
    np.testing.assert_allclose(scaler.to_normalized(np.zeros(4))[2:], [0.0, 0.0])


def test_action_scaler_needs_bounded_box():
    with pytest.raises(ValueError, match="bounded"):
        ActionScaler(spaces.Box(-np.inf, np.inf, shape=(2,)))


# ---------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("view", [BestResponseEnv, BestResponseVecEnv])
def test_unknown_player_is_a_value_error(view):
    env = make_env()
    with pytest.raises(ValueError, match="player_9.*not an agent"):
        view(env, "player_9", fixed_others(env))


@pytest.mark.parametrize("view", [BestResponseEnv, BestResponseVecEnv])
def test_missing_policy_is_a_value_error(view):
    env = make_env()
    others = fixed_others(env)
    del others["player_2"]
    with pytest.raises(ValueError, match="no policy for.*player_2"):
        view(env, PLAYER, others)


def test_others_from_profile_drops_the_player():
    env = make_env()
    profile = {a: HonestPolicy(2) for a in env.possible_agents}
    assert sorted(others_from_profile(profile, PLAYER)) == ["player_1", "player_2"]


# ---------------------------------------------------------------------------------------------------- SB3Policy


class StubModel:
    """An SB3-like model whose ``predict`` returns fixed normalised actions, some outside [-1, 1]."""

    def __init__(self, output):
        self.output = np.asarray(output, dtype=np.float32)
        self.seen = []

    def predict(self, observation, deterministic=True):
        self.seen.append((observation.shape, observation.dtype, deterministic))
        return np.tile(self.output, (observation.shape[0], 1)), None


def test_sb3_policy_maps_model_outputs_into_bounds():
    env = make_env(["bounded_attack:A=1.5"], bias_max=0.5)
    space = env.action_space(PLAYER)
    model = StubModel([3.0, 0.0, -5.0, 0.5])
    policy = SB3Policy(model, space)
    observations = np.random.default_rng(0).normal(size=(7, 5, 3))
    actions = policy.act(observations, np.random.default_rng(0))
    assert actions.shape == (7, 5, 4)
    np.testing.assert_allclose(actions[0, 0], [1.5, 0.5, -0.5, 0.25], rtol=1e-6)
    assert np.all(actions >= space.low - 1e-6) and np.all(actions <= space.high + 1e-6)
    assert model.seen[-1] == ((35, 3), np.float32, True)
    single = policy.act(observations[0, 0], np.random.default_rng(0))
    assert single.shape == (4,)


def test_sb3_policy_with_a_real_model_stays_in_bounds():
    env = make_env(STACK, bias_max=0.5)
    venv = BestResponseVecEnv(env, PLAYER, fixed_others(env), n_envs=8, seed=0)
    model = PPO("MlpPolicy", venv, seed=0, n_steps=8, batch_size=64, device="cpu")
    space = env.action_space(PLAYER)
    observations = env.unwrapped.game.observe(env.unwrapped.game.sample_world(np.random.default_rng(0), 500))[:, 0]
    for deterministic in (True, False):
        actions = SB3Policy(model, space, deterministic=deterministic).act(observations, np.random.default_rng(0))
        assert actions.shape == (500, 4)
        assert np.all(actions >= space.low - 1e-6) and np.all(actions <= space.high + 1e-6)
    # predict as SB3's: deterministic=False samples (the model's torch generator), True gives the mean action
    policy = SB3Policy(model, space)
    draws = [policy.predict(observations[:3], deterministic=False)[0] for _ in range(2)]
    assert draws[0].shape == (3, 4) and not np.array_equal(draws[0], draws[1])
    np.testing.assert_array_equal(policy.predict(observations[:3])[0], policy.act(observations[:3], None))


def test_views_sharing_one_env_are_refused_and_copies_work():
    """SB3's usual factory idiom with one shared env would play each view in the other's episode: refused at the
    first step after the second reset; with a copy of the env per view it runs."""
    env = make_env()
    others = fixed_others(env)
    shared = DummyVecEnv([lambda: BestResponseEnv(env, PLAYER, others)] * 2)
    shared.reset()
    with pytest.raises(RuntimeError, match="another view of the same env reset it"):
        shared.step(np.zeros((2, 4), dtype=np.float32))
    copies = DummyVecEnv([lambda: BestResponseEnv(copy.deepcopy(env), PLAYER, others)] * 2)
    copies.reset()
    assert copies.step(np.zeros((2, 4), dtype=np.float32))[0].shape == (2, 3)


def test_env_method_runs_once_on_the_shared_batch():
    """Every sub-env is a slice of one batch: ``env_method("reset")`` starts it over once, not once per index."""
    env = make_env()
    venv = BestResponseVecEnv(env, PLAYER, fixed_others(env), n_envs=4, seed=0)
    calls = []
    original = venv.reset
    venv.reset = lambda: calls.append(1) or original()
    results = venv.env_method("reset")
    assert len(calls) == 1 and len(results) == 4 and all(r is results[0] for r in results)
