"""The mean-estimation PettingZoo env, alone and wrapped in mechanisms: API conformance, spaces, determinism,
infos, composition of wrappers, rendering and the PettingZoo registry."""

from __future__ import annotations

import pickle
import re
import warnings

import numpy as np
import pettingzoo
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test
from pettingzoo.utils.conversions import parallel_to_aec

import fedgames
from fedgames.envs import mean_estimation_v0
from fedgames.envs.mean_estimation.mean_estimation import MeanEstimationEnv
from fedgames.mechanisms import BoundedAttack, NoisyResponse, RobustAggregation, SidePayment

CONFIGS = [pytest.param(dict(n_players=n, dim=d), id=f"N{n}-d{d}") for n in (2, 3, 7) for d in (1, 4)]

SINGLE_MECHANISMS = [
    pytest.param([], id="plain"),
    pytest.param(["side_payment:C=0.4"], id="side_payment"),
    pytest.param(["side_payment:C=0.4,balanced=true"], id="side_payment_balanced"),
    pytest.param(["noisy_response:C=0.5"], id="noisy_response"),
    pytest.param(["bounded_attack:A=1.5"], id="bounded_attack"),
    pytest.param(["robust_aggregation:rule=median"], id="median"),
    pytest.param(["robust_aggregation:rule=geometric_median"], id="geometric_median"),
    pytest.param(["robust_aggregation:rule=trimmed_mean,fraction=0.2"], id="trimmed_mean"),
]

STACK = [
    "bounded_attack:A=1.5",
    "robust_aggregation:rule=krum,f=1",
    "side_payment:C=0.4,balanced=true",
    "noisy_response:C=0.5",
]

INFO_KEYS = {"message", "estimate", "sq_error", "server_estimate", "diverged"}


def make(mechanisms=(), **config):
    return fedgames.make("mean_estimation_v0", mechanisms=list(mechanisms), **config)


def random_actions(env, rng):
    """Uniform actions inside every live agent's action space, drawn from ``rng`` (not the spaces' own RNG)."""
    out = {}
    for agent in env.agents:
        space = env.action_space(agent)
        out[agent] = rng.uniform(space.low, space.high).astype(np.float32)
    return out


def quiet_api_test(env, num_cycles):
    # api_test warns (UserWarning) that the observation Box is unbounded; that is by design here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*observation space value is .*infinity", category=UserWarning)
        api_test(env, num_cycles=num_cycles)


# ---------------------------------------------------------------------------------------------------------------
# PettingZoo API tests
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("mechanisms", SINGLE_MECHANISMS)
def test_parallel_api(config, mechanisms):
    parallel_api_test(make(mechanisms, **config), num_cycles=20)


@pytest.mark.parametrize("dim", [1, 4])
def test_parallel_api_stack(dim):
    parallel_api_test(make(STACK, n_players=5, dim=dim), num_cycles=20)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize(
    "mechanisms",
    [
        pytest.param([], id="plain"),
        pytest.param(["bounded_attack:A=1.5", "side_payment:C=0.4", "noisy_response:C=0.5"], id="stack"),
    ],
)
def test_aec_api_via_parallel_to_aec(config, mechanisms):
    quiet_api_test(parallel_to_aec(make(mechanisms, **config)), num_cycles=20)


def test_aec_api_full_stack():
    quiet_api_test(parallel_to_aec(make(STACK, n_players=5, dim=4)), num_cycles=20)


@pytest.mark.parametrize("factory", [mean_estimation_v0.env, mean_estimation_v0.raw_env])
@pytest.mark.parametrize("config", [{}, dict(n_players=2, dim=1), dict(n_players=7, dim=4, n_samples=1)])
def test_module_env_and_raw_env(factory, config):
    quiet_api_test(factory(**config), num_cycles=20)


@pytest.mark.parametrize("mechanisms", [pytest.param([], id="plain"), pytest.param(STACK, id="stack")])
def test_parallel_seed_test(mechanisms):
    parallel_seed_test(lambda: make(mechanisms, n_players=5, dim=3), num_cycles=20)


# ---------------------------------------------------------------------------------------------------------------
# Multi-step determinism (parallel_seed_test in 1.27.0 compares only the first step)
# ---------------------------------------------------------------------------------------------------------------


def run_episodes(env, seed, episodes, action_seed):
    rng = np.random.default_rng(action_seed)
    trace = []
    obs, infos = env.reset(seed=seed)
    for _ in range(episodes):
        trace.append(("reset", obs, infos))
        actions = random_actions(env, rng)
        out = env.step(actions)
        trace.append(("step", actions) + out)
        obs, infos = env.reset()  # no seed in between: the env's own RNG carries on
    return trace


def assert_traces_equal(t1, t2):
    assert len(t1) == len(t2)
    for a, b in zip(t1, t2):
        assert _equal(a, b)


def _equal(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


DETERMINISM_CASES = [
    pytest.param([], dict(n_players=3, dim=2), id="plain"),
    pytest.param(["noisy_response:C=0.5"], dict(n_players=4, dim=3), id="noisy"),
    pytest.param(STACK, dict(n_players=5, dim=2, sigma_cv=0.5), id="stack-heterogeneous"),
]


@pytest.mark.parametrize("mechanisms, config", DETERMINISM_CASES)
def test_multi_step_determinism(mechanisms, config):
    t1 = run_episodes(make(mechanisms, **config), seed=123, episodes=40, action_seed=7)
    t2 = run_episodes(make(mechanisms, **config), seed=123, episodes=40, action_seed=7)
    assert_traces_equal(t1, t2)
    # a different env seed (same actions' RNG) changes observations, rewards and infos
    t3 = run_episodes(make(mechanisms, **config), seed=124, episodes=40, action_seed=7)
    first_obs_1, first_obs_3 = t1[0][1], t3[0][1]
    assert not np.array_equal(first_obs_1["player_0"], first_obs_3["player_0"])
    later = [i for i in range(2, len(t1), 2)]  # later resets, not only the first one
    assert all(not _equal(t1[i][1], t3[i][1]) for i in later)
    steps = [i for i in range(1, len(t1), 2)]
    assert all(not _equal(t1[i][3], t3[i][3]) for i in steps)  # rewards
    assert all(not _equal(t1[i][6], t3[i][6]) for i in steps)  # infos


def test_reseeding_same_env_replays_and_is_independent_of_other_envs():
    env, other = make(STACK, n_players=5, dim=2), make(STACK, n_players=5, dim=2)
    t1 = run_episodes(env, seed=5, episodes=10, action_seed=1)
    other.reset(seed=99)
    other.step(random_actions(other, np.random.default_rng(0)))
    # sampling from the action spaces must not touch the env's RNG either
    for agent in env.possible_agents:
        env.action_space(agent).sample()
    t2 = run_episodes(env, seed=5, episodes=10, action_seed=1)
    assert_traces_equal(t1, t2)


# ---------------------------------------------------------------------------------------------------------------
# Spaces
# ---------------------------------------------------------------------------------------------------------------

SPACE_WRAPPINGS = [
    pytest.param([], id="plain"),
    pytest.param(["bounded_attack:A=1.5"], id="bounded"),
    pytest.param(["side_payment:C=1", "bounded_attack:A=1.5"], id="payment-then-bounded"),
    pytest.param(["bounded_attack:A=1.5", "side_payment:C=1"], id="bounded-then-payment"),
    pytest.param(STACK, id="stack"),
]


@pytest.mark.parametrize("mechanisms", SPACE_WRAPPINGS)
def test_spaces_are_the_same_object_every_call(mechanisms):
    env = make(mechanisms, n_players=5, dim=3)
    first_obs = {a: env.observation_space(a) for a in env.possible_agents}
    first_act = {a: env.action_space(a) for a in env.possible_agents}
    env.reset(seed=0)
    env.step(random_actions(env, np.random.default_rng(0)))
    env.reset()
    for a in env.possible_agents:
        assert env.observation_space(a) is first_obs[a]
        assert env.action_space(a) is first_act[a]
    # the AEC view hands out the same objects too
    aec = parallel_to_aec(env)
    for a in env.possible_agents:
        assert aec.action_space(a) is first_act[a]
        assert aec.observation_space(a) is first_obs[a]


@pytest.mark.parametrize("dim", [1, 4])
def test_action_layout_and_bounds(dim):
    env = make(n_players=3, dim=dim, alpha_max=3.0, bias_max=0.7)
    assert env.protocol.action_names == ("alpha", "beta") + tuple(f"b_{k}" for k in range(1, dim + 1))
    for a in env.possible_agents:
        space = env.action_space(a)
        assert space.shape == (dim + 2,)
        assert space.dtype == np.float32
        np.testing.assert_array_equal(space.low, np.array([0.0, 0.0] + [-0.7] * dim, dtype=np.float32))
        np.testing.assert_array_equal(space.high, np.array([3.0, 1.0] + [0.7] * dim, dtype=np.float32))
        obs_space = env.observation_space(a)
        assert obs_space.shape == (dim + 1,)
        assert obs_space.dtype == np.float32
        assert obs_space.low[-1] == 0.0  # the sample variance


def test_bounded_attack_shrinks_alpha_only_and_leaves_inner_env_alone():
    inner = make(n_players=3, dim=2, alpha_max=5.0)
    inner_space = inner.action_space("player_0")
    wrapped = BoundedAttack(inner, A=1.5)
    space = wrapped.action_space("player_0")
    assert space.high[0] == np.float32(1.5)
    np.testing.assert_array_equal(space.high[1:], inner_space.high[1:])
    np.testing.assert_array_equal(space.low, inner_space.low)
    assert inner.action_space("player_0") is inner_space
    assert inner.action_space("player_0").high[0] == np.float32(5.0)
    assert wrapped.action_space("player_0") is space


def test_observations_lie_in_space_and_hold_sample_mean_and_variance():
    env = make(n_players=4, dim=3, n_samples=1)
    obs, _ = env.reset(seed=3)
    for a, o in obs.items():
        assert env.observation_space(a).contains(o)
        assert o[-1] == 0.0  # one sample: the sample variance is 0 by definition
    env = make(n_players=4, dim=3, n_samples=10)
    obs, _ = env.reset(seed=3)
    assert all(o[-1] > 0 for o in obs.values())


# ---------------------------------------------------------------------------------------------------------------
# Infos and consistency with the game's stages
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mechanisms, has_payment",
    [
        ([], False),
        (["noisy_response:C=0.5"], False),
        (["robust_aggregation:rule=median"], False),
        (["bounded_attack:A=1"], False),
        (["side_payment:C=0.3"], True),
        (["side_payment:C=0.3,balanced=true"], True),
        (["noisy_response:C=0.5", "side_payment:C=0.3", "bounded_attack:A=1"], True),
    ],
)
def test_info_keys(mechanisms, has_payment):
    env = make(mechanisms, n_players=4, dim=3)
    env.reset(seed=0)
    _, rewards, _, _, infos = env.step(random_actions(env, np.random.default_rng(1)))
    for a in env.possible_agents:
        expected = INFO_KEYS | ({"payment"} if has_payment else set())
        assert set(infos[a]) == expected
        assert infos[a]["message"].shape == (3,)
        assert infos[a]["estimate"].shape == (3,)
        assert infos[a]["server_estimate"].shape == (3,)
        assert isinstance(infos[a]["sq_error"], float) and infos[a]["sq_error"] >= 0
        assert isinstance(rewards[a], float)
        if has_payment:
            assert isinstance(infos[a]["payment"], float)


def check_reward_formula(env, rewards, infos, lam):
    agents = env.possible_agents
    n = len(agents)
    sq = np.array([infos[a]["sq_error"] for a in agents])
    pay = np.array([infos[a].get("payment", 0.0) for a in agents])
    expected = (sq.sum() - sq) / (n - 1) - np.asarray(lam) * sq - pay
    np.testing.assert_allclose([rewards[a] for a in agents], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("config", CONFIGS)
def test_honest_profile_server_is_mean_of_sample_means(config):
    env = make(**config)
    dim = config["dim"]
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        actions = {a: np.zeros(dim + 2, dtype=np.float32) for a in env.agents}
        _, rewards, _, _, infos = env.step(actions)
        messages = np.array([infos[a]["message"] for a in env.possible_agents])
        xbar = np.array([obs[a][:dim] for a in env.possible_agents], dtype=np.float64)
        np.testing.assert_allclose(messages, xbar, rtol=1e-6, atol=1e-6)  # obs are float32
        for a in env.possible_agents:
            np.testing.assert_allclose(infos[a]["server_estimate"], messages.mean(axis=0), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(infos[a]["estimate"], messages.mean(axis=0), rtol=1e-12, atol=1e-12)
        # everyone holds the same estimate, so everyone has the same error and reward (lam = 1)
        sq = [infos[a]["sq_error"] for a in env.possible_agents]
        assert np.ptp(sq) < 1e-12
        assert all(abs(r) < 1e-9 for r in rewards.values())


def test_sq_error_against_batched_game_play():
    """The env's outcome equals a batched ``game.play`` on the same world: same stages, same code."""
    env = make(n_players=4, dim=3, lam=[0.5, 1.0, 2.0, 0.0])
    game = env.unwrapped.game
    rng = np.random.default_rng(11)
    for seed in range(5):
        env.reset(seed=seed)
        world = env.unwrapped._world
        # deterministic profile: no attack noise (alpha = 0), so the outcome depends on the world only
        actions = np.zeros((4, 5), dtype=np.float32)
        actions[:, 1] = rng.uniform(0, 1, 4)
        actions[:, 2:] = rng.uniform(-1, 1, (4, 3))
        _, rewards, _, _, infos = env.step({a: actions[i] for i, a in enumerate(env.possible_agents)})
        outcome = game.play(env.protocol, world, actions[None].astype(np.float64), np.random.default_rng(0))
        for i, a in enumerate(env.possible_agents):
            np.testing.assert_allclose(infos[a]["message"], outcome.messages[0, i], rtol=1e-12)
            np.testing.assert_allclose(infos[a]["estimate"], outcome.estimates[0, i], rtol=1e-12)
            assert infos[a]["sq_error"] == pytest.approx(float(outcome.sq_error[0, i]), rel=1e-12)
            assert infos[a]["sq_error"] == pytest.approx(
                float(np.sum((infos[a]["estimate"] - world.mu[0]) ** 2)), rel=1e-12
            )
            assert rewards[a] == pytest.approx(float(outcome.rewards[0, i]), rel=1e-12, abs=1e-12)
        check_reward_formula(env, rewards, infos, [0.5, 1.0, 2.0, 0.0])


@pytest.mark.parametrize("mechanisms", [[], ["robust_aggregation:rule=median"]])
def test_defence_undoes_own_manipulation(mechanisms):
    """theta_i = (1 - beta_i) (r_i - (m_i - xbar_i)/N) + beta_i xbar_i, with r_i the (broadcast) aggregate."""
    n, d = 5, 3
    env = make(mechanisms, n_players=n, dim=d)
    rng = np.random.default_rng(2)
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        actions = random_actions(env, rng)
        _, rewards, _, _, infos = env.step(actions)
        messages = np.array([infos[a]["message"] for a in env.possible_agents])
        server = infos["player_0"]["server_estimate"]
        expected_server = np.median(messages, axis=0) if mechanisms else messages.mean(axis=0)
        np.testing.assert_allclose(server, expected_server, rtol=1e-12, atol=1e-12)
        for a in env.possible_agents:
            np.testing.assert_array_equal(infos[a]["server_estimate"], server)
            xbar = obs[a][:d].astype(np.float64)
            beta = float(actions[a][1])
            expected = (1 - beta) * (server - (infos[a]["message"] - xbar) / n) + beta * xbar
            np.testing.assert_allclose(infos[a]["estimate"], expected, rtol=1e-5, atol=1e-5)
        check_reward_formula(env, rewards, infos, 1.0)


def test_message_is_sample_mean_plus_bias_without_noise():
    d = 2
    env = make(n_players=3, dim=d)
    obs, _ = env.reset(seed=4)
    bias = {a: np.array([0.3 * (i + 1), -0.2], dtype=np.float32) for i, a in enumerate(env.agents)}
    actions = {a: np.concatenate([[0.0, 0.5], bias[a]]).astype(np.float32) for a in env.agents}
    _, _, _, _, infos = env.step(actions)
    for a in env.possible_agents:
        np.testing.assert_allclose(infos[a]["message"], obs[a][:d].astype(np.float64) + bias[a], atol=1e-6)


@pytest.mark.parametrize("balanced", [False, True])
def test_side_payment_values(balanced):
    C, n = 0.4, 4
    env = make([f"side_payment:C={C},balanced={str(balanced).lower()}"], n_players=n, dim=3)
    rng = np.random.default_rng(3)
    for seed in range(5):
        env.reset(seed=seed)
        _, rewards, _, _, infos = env.step(random_actions(env, rng))
        messages = np.array([infos[a]["message"] for a in env.possible_agents])
        server = infos["player_0"]["server_estimate"]
        plain = C * np.sum((messages - server) ** 2, axis=1)
        expected = plain - (plain.sum() - plain) / (n - 1) if balanced else plain
        paid = np.array([infos[a]["payment"] for a in env.possible_agents])
        np.testing.assert_allclose(paid, expected, rtol=1e-12, atol=1e-12)
        if balanced:
            assert abs(paid.sum()) < 1e-12
        check_reward_formula(env, rewards, infos, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Wrapping: the wrapped env is unchanged; mechanism order composes
# ---------------------------------------------------------------------------------------------------------------


def test_wrapping_does_not_change_wrapped_env():
    plain = make(n_players=3, dim=2)
    protocol = plain.protocol
    wrapped = NoisyResponse(SidePayment(plain, C=1.0), C=0.5)
    assert plain.protocol is protocol and plain.protocol.mechanisms == ()
    assert not plain.protocol.charges_payments
    assert [type(m) for m in wrapped.protocol.mechanisms] == [SidePayment, NoisyResponse]

    # step the wrapper (charges), then the plain env (must not charge, nor add server noise)
    wrapped.reset(seed=0)
    _, _, _, _, infos = wrapped.step({a: np.zeros(4, np.float32) for a in wrapped.agents})
    assert all("payment" in i for i in infos.values())
    plain.reset(seed=0)
    _, rewards, _, _, infos = plain.step({a: np.zeros(4, np.float32) for a in plain.agents})
    assert all("payment" not in i for i in infos.values())
    assert all(abs(r) < 1e-9 for r in rewards.values())  # honest, no noise: everyone equal
    assert len({tuple(i["estimate"]) for i in infos.values()}) == 1


def test_rejected_wrapped_step_leaves_plain_env_unwrapped():
    plain = make(n_players=3, dim=2)
    wrapped = SidePayment(plain, C=1.0)
    wrapped.reset(seed=0)
    with pytest.raises(ValueError):
        wrapped.step({a: np.full(4, np.nan, np.float32) for a in wrapped.agents})
    _, _, _, _, infos = plain.step({a: np.zeros(4, np.float32) for a in plain.agents})
    assert all("payment" not in i for i in infos.values())


def test_mechanism_order_composes():
    config = dict(n_players=4, dim=3)
    outer_bound = make(["side_payment:C=0.4", "bounded_attack:A=1.5"], **config)
    inner_bound = make(["bounded_attack:A=1.5", "side_payment:C=0.4"], **config)
    p1, p2 = outer_bound.protocol, inner_bound.protocol
    np.testing.assert_array_equal(p1.action_low, p2.action_low)
    np.testing.assert_array_equal(p1.action_high, p2.action_high)
    assert p1.action_high[0] == 1.5
    for a in outer_bound.possible_agents:
        np.testing.assert_array_equal(outer_bound.action_space(a).high, inner_bound.action_space(a).high)
        np.testing.assert_array_equal(outer_bound.action_space(a).low, inner_bound.action_space(a).low)
    t1 = run_episodes(outer_bound, seed=9, episodes=10, action_seed=2)
    t2 = run_episodes(inner_bound, seed=9, episodes=10, action_seed=2)
    assert_traces_equal(t1, t2)
    # and both reject alpha above A
    for env in (outer_bound, inner_bound):
        env.reset(seed=0)
        actions = {a: np.zeros(5, np.float32) for a in env.agents}
        actions["player_2"][0] = 2.0
        with pytest.raises(ValueError, match="alpha"):
            env.step(actions)


def test_noise_and_aggregation_order_composes():
    config = dict(n_players=5, dim=2)
    a = make(["noisy_response:C=0.5", "robust_aggregation:rule=median", "side_payment:C=0.2"], **config)
    b = make(["side_payment:C=0.2", "robust_aggregation:rule=median", "noisy_response:C=0.5"], **config)
    assert_traces_equal(run_episodes(a, 3, 10, 4), run_episodes(b, 3, 10, 4))


def test_outermost_protocol_in_force_for_middle_wrapper():
    plain = make(n_players=3, dim=2)
    middle = SidePayment(plain, C=1.0)
    outer = RobustAggregation(middle, rule="median")
    middle.reset(seed=0)
    _, _, _, _, infos = middle.step({a: np.zeros(4, np.float32) for a in middle.agents})
    assert all("payment" in i for i in infos.values())
    msgs = np.array([i["message"] for i in infos.values()])
    np.testing.assert_allclose(infos["player_0"]["server_estimate"], msgs.mean(axis=0))  # not the median
    outer.reset(seed=0)
    _, _, _, _, infos = outer.step({a: np.zeros(4, np.float32) for a in outer.agents})
    msgs = np.array([i["message"] for i in infos.values()])
    np.testing.assert_allclose(infos["player_0"]["server_estimate"], np.median(msgs, axis=0))


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanisms", [[], STACK])
def test_render_ansi(mechanisms):
    env = make(mechanisms, n_players=5, dim=2, render_mode="ansi")
    assert env.render_mode == "ansi"
    env.reset(seed=0)
    before = env.render()
    assert isinstance(before, str) and before
    for episode in range(2):  # the second rendering shows the second step, not the first
        if episode:
            env.reset()
            assert env.render() == before  # a new episode has no step to show yet
        _, rewards, _, _, infos = env.step(random_actions(env, np.random.default_rng(episode)))
        after = env.render()
        assert isinstance(after, str)
        lines = after.splitlines()
        for agent in env.possible_agents:  # its squared error and its reward, to the digits printed
            (line,) = [line for line in lines if re.search(rf"\b{agent}\b", line)]
            shown = rendered_numbers(line.split(agent, 1)[1])
            assert any(abs(v - infos[agent]["sq_error"]) <= 5e-5 for v in shown), (line, infos[agent]["sq_error"])
            assert any(abs(v - rewards[agent]) <= 5e-5 for v in shown), (line, rewards[agent])
        shown = rendered_numbers(lines[0])
        for value in infos["player_0"]["server_estimate"]:  # the server's estimate, to 3 decimals
            assert any(abs(v - value) <= 5e-4 for v in shown), (lines[0], value)


def rendered_numbers(text):
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?", text)]


def test_render_none_mode_returns_none():
    env = make(n_players=2, dim=1)
    assert env.render_mode is None
    env.reset(seed=0)
    assert env.render() is None


@pytest.mark.parametrize("mode", ["rgb_array", "ANSI", "HUMAN", ""])
def test_invalid_render_mode(mode):
    with pytest.raises(ValueError, match="render_mode"):
        MeanEstimationEnv(render_mode=mode)
    with pytest.raises(ValueError, match="render_mode"):
        make(render_mode=mode)


# ---------------------------------------------------------------------------------------------------------------
# PettingZoo registry
# ---------------------------------------------------------------------------------------------------------------


def test_pettingzoo_make_parallel():
    env = pettingzoo.make("parallel", "fedgames/mean_estimation-v0", n_players=4, dim=2)
    assert isinstance(env, MeanEstimationEnv)
    assert len(env.possible_agents) == 4
    parallel_api_test(env, num_cycles=5)


def test_pettingzoo_make_aec():
    env = pettingzoo.make("aec", "fedgames/mean_estimation-v0", n_players=3, dim=1)
    assert isinstance(env, pettingzoo.AECEnv)
    assert env.possible_agents == ["player_0", "player_1", "player_2"]
    quiet_api_test(env, num_cycles=5)


@pytest.mark.parametrize(
    "spec",
    [
        "noisy_response:C=0.5",
        "side_payment:C=0.5,balanced=true",
        "robust_aggregation:rule=median",
        "bounded_attack:A=1",
    ],
)
def test_envs_with_each_mechanism_pickle_and_play_as_before(spec):
    """The standard library's pickle (multiprocessing with spawn, joblib, saving an env) handles every mechanism's
    stages, and the copy plays the same seeded episode."""
    env = fedgames.make("mean_estimation_v0", mechanisms=[spec])
    copy = pickle.loads(pickle.dumps(env))
    actions = {a: np.array([0.5, 0.2, 0.1, -0.1], dtype=np.float32) for a in env.possible_agents}
    outcomes = []
    for each in (env, copy):
        each.reset(seed=3)
        outcomes.append(each.step(actions)[1])
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("specs", [[], ["bounded_attack:A=1"], ["bounded_attack:A=1", "side_payment:C=0.5"]])
def test_space_dicts_are_public_and_match_the_space_methods(specs):
    """PettingZoo's ``observation_spaces`` / ``action_spaces`` dicts, through any stack of mechanisms (the bounded
    attack's narrower action space included)."""
    env = fedgames.make("mean_estimation_v0", mechanisms=specs)
    for agent in env.possible_agents:
        assert env.observation_spaces[agent] is env.observation_space(agent)
        assert env.action_spaces[agent] is env.action_space(agent)
    assert env.action_spaces["player_0"].high[0] == (1.0 if specs else env.unwrapped.game.alpha_max)


def test_global_state_holds_the_hidden_mean_and_every_players_data():
    """PettingZoo's ``state()`` for centralised critics: ``[mu, xbar_1..N, sample_var_1..N]`` in ``state_space``,
    through mechanisms: the hidden ``mu`` is what each player's squared error is measured against."""
    env = fedgames.make("mean_estimation_v0", mechanisms=["side_payment:C=0.5"], n_players=3, dim=2)
    with pytest.raises(RuntimeError, match="before reset"):
        env.state()
    obs, _ = env.reset(seed=4)
    state = env.state()
    assert env.state_space.contains(state) and state.shape == (2 + 3 * 2 + 3,)
    for i, agent in enumerate(env.possible_agents):  # each player's observation is its slice of the state
        np.testing.assert_array_equal(state[2 + 2 * i : 4 + 2 * i], obs[agent][:2])
        assert state[8 + i] == obs[agent][2]
    _, _, _, _, infos = env.step({a: np.array([0.5, 0.2, 0.0, 0.0], dtype=np.float32) for a in env.agents})
    for agent in env.possible_agents:
        error = np.sum((infos[agent]["estimate"] - state[:2].astype(np.float64)) ** 2)
        assert error == pytest.approx(infos[agent]["sq_error"], rel=1e-5, abs=1e-6)
