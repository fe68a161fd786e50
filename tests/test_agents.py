"""Scripted agents, the theory's best response and the Monte Carlo evaluators."""

from __future__ import annotations

import numpy as np
import pytest

import fedgames
from fedgames.agents import FixedPolicy, HonestPolicy, Policy, RandomPolicy, profile_policies, theory_best_response
from fedgames.envs.batch import episode_batch
from fedgames.envs.mean_estimation.theory import Profile, bounded_equilibrium
from fedgames.eval import Episodes, simulate, simulate_loop


def make(mechanisms=(), **config):
    return fedgames.make("mean_estimation_v0", mechanisms=list(mechanisms), **config)


BATCH_SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4)]


# ---------------------------------------------------------------------------------------------------------------
# Scripted policies
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 4])
@pytest.mark.parametrize("lead", BATCH_SHAPES)
def test_honest_policy_shapes(dim, lead):
    policy = HonestPolicy(dim)
    assert isinstance(policy, Policy)
    obs = np.random.default_rng(0).normal(size=lead + (dim + 1,))
    act = policy.act(obs, np.random.default_rng(0))
    assert act.shape == lead + (dim + 2,)
    assert not act.any()


@pytest.mark.parametrize("lead", BATCH_SHAPES)
def test_fixed_policy_shapes_and_values(lead):
    policy = FixedPolicy(1.5, 0.25, [0.1, -0.2, 0.3])
    obs = np.zeros(lead + (4,))
    act = policy.act(obs, np.random.default_rng(0))
    assert act.shape == lead + (5,)
    np.testing.assert_array_equal(act.reshape(-1, 5), np.tile([1.5, 0.25, 0.1, -0.2, 0.3], (act.size // 5, 1)))
    # a fresh writable array each call: mutating it does not change the policy
    act[...] = -1.0
    np.testing.assert_array_equal(policy.act(np.zeros(4), np.random.default_rng(0)), [1.5, 0.25, 0.1, -0.2, 0.3])


@pytest.mark.parametrize("mechanisms", [[], ["bounded_attack:A=0.5"], ["bounded_attack:A=2", "side_payment:C=1"]])
@pytest.mark.parametrize("lead", BATCH_SHAPES)
def test_random_policy_shapes_and_bounds(mechanisms, lead):
    env = make(mechanisms, n_players=3, dim=2, bias_max=0.3)
    space = env.action_space("player_0")
    policy = RandomPolicy(space)
    act = policy.act(np.zeros(lead + (3,)), np.random.default_rng(1))
    assert act.shape == lead + (4,)
    flat = act.reshape(-1, 4)
    assert np.all(flat >= space.low) and np.all(flat <= space.high)
    for a in flat:
        assert space.contains(a.astype(np.float32))


@pytest.mark.parametrize("mechanisms", [[], ["bounded_attack:A=0.5", "noisy_response:C=0.3"]])
def test_random_policy_actions_accepted_by_env(mechanisms):
    env = make(mechanisms, n_players=4, dim=3)
    policies = {a: RandomPolicy(env.action_space(a)) for a in env.possible_agents}
    rng = np.random.default_rng(5)
    for seed in range(30):
        obs, _ = env.reset(seed=seed)
        actions = {a: policies[a].act(obs[a].astype(float), rng).astype(np.float32) for a in env.agents}
        _, rewards, terms, _, _ = env.step(actions)  # float32 rounding at the bounds must be accepted
        assert all(terms.values()) and len(rewards) == 4
        # unrounded float64 actions too
        env.reset(seed=seed)
        env.step({a: policies[a].act(obs[a], rng) for a in env.agents})


def test_random_policy_rejects_unbounded_space():
    env = make()
    with pytest.raises(ValueError, match="bounded"):
        RandomPolicy(env.observation_space("player_0"))


def test_random_policy_is_uniform_over_the_box():
    env = make(n_players=2, dim=1, alpha_max=4.0, bias_max=2.0)
    n = 20_000
    act = RandomPolicy(env.action_space("player_0")).act(np.zeros((n, 2)), np.random.default_rng(2))
    width = np.array([4.0, 1.0, 4.0])  # alpha in [0, 4], beta in [0, 1], b in [-2, 2]
    variance = width**2 / 12
    # 4 standard errors: of the mean, sqrt(var / n); of the sample variance, sqrt((mu_4 - var^2) / n), mu_4 = w^4/80
    np.testing.assert_array_less(np.abs(act.mean(axis=0) - [2.0, 0.5, 0.0]), 4 * np.sqrt(variance / n))
    np.testing.assert_array_less(np.abs(act.var(axis=0) - variance), 4 * np.sqrt((width**4 / 80 - variance**2) / n))


@pytest.mark.parametrize(
    "policy", [HonestPolicy(2), FixedPolicy(1.0, 0.5, [0.1, 0.2]), RandomPolicy(make(dim=2).action_space("player_0"))]
)
def test_predict_returns_action_and_state(policy):
    obs = np.zeros(3, dtype=np.float32)
    state = object()
    action, out_state = policy.predict(obs, state=state, episode_start=np.array([True]), deterministic=True)
    assert out_state is state
    assert action.shape == (4,)
    action, out_state = policy.predict(np.zeros((6, 3)))
    assert out_state is None and action.shape == (6, 4)


def test_predict_of_random_policy_is_reproducible_by_seed():
    """As Gymnasium's ``space.sample``: unseeded instances draw from OS entropy, seeded ones reproduce."""
    space = make(dim=2).action_space("player_0")
    unseeded = [RandomPolicy(space).predict(np.zeros(3))[0] for _ in range(2)]
    assert not np.array_equal(unseeded[0], unseeded[1])
    seeded = []
    for _ in range(2):
        p = RandomPolicy(space)
        p.seed(4)
        seeded.append([p.predict(np.zeros(3))[0] for _ in range(2)])
    np.testing.assert_array_equal(seeded[0], seeded[1])
    assert not np.array_equal(*seeded[0])  # a stream, not a constant


def test_profile_policies():
    profile = Profile.symmetric(3, 2, alpha=0.5, beta=0.1)
    policies = profile_policies(profile, ["player_0", "player_1", "player_2"])
    assert set(policies) == {"player_0", "player_1", "player_2"}
    np.testing.assert_array_equal(policies["player_1"].action, [0.5, 0.1, 0.0, 0.0])


# ---------------------------------------------------------------------------------------------------------------
# Theory best response
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_players, dim", [(2, 1), (3, 2), (6, 4)])
def test_theory_best_response_bounded_attack(n_players, dim):
    A = 1.5
    env = make([f"bounded_attack:A={A}"], n_players=n_players, dim=dim)
    nu = float(env.unwrapped.game.nu[0])
    profile, _ = bounded_equilibrium(A, nu, n_players, dim)
    expected_beta = A**2 / (nu * n_players + A**2)
    np.testing.assert_allclose(profile.beta, expected_beta)
    for i in range(n_players):
        br = theory_best_response(env, profile, i)
        assert isinstance(br, FixedPolicy)
        assert br.alpha == pytest.approx(A)
        assert br.beta == pytest.approx(expected_beta, rel=1e-12)
        assert np.all(np.abs(br.bias) <= env.unwrapped.game.bias_max)
        # and the policy's actions are valid in the wrapped env
        assert env.action_space(env.possible_agents[i]).contains(br.action.astype(np.float32))


def test_theory_best_response_bounded_attack_without_bias_is_cor_b1():
    """With the bias range closed (bias_max = 0) the Cor. B.1 profile is a fixed point of the best response."""
    A, n, d = 1.5, 4, 2
    env = make([f"bounded_attack:A={A}"], n_players=n, dim=d, bias_max=0.0)
    nu = float(env.unwrapped.game.nu[0])
    profile, _ = bounded_equilibrium(A, nu, n, d)
    for i in range(n):
        br = theory_best_response(env, profile, i)
        np.testing.assert_allclose(br.action, profile.actions()[i], rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(theory_best_response(env, profile, env.possible_agents[i]).action, br.action)
    with pytest.raises(ValueError, match=r"player must be an index or one of \['player_0'"):
        theory_best_response(env, profile, "player_9")


@pytest.mark.parametrize("alpha_max", [0.7, 5.0, 12.0])
def test_theory_best_response_no_mechanism_is_alpha_max(alpha_max):
    env = make(n_players=3, dim=2, alpha_max=alpha_max)
    nu = float(env.unwrapped.game.nu[0])
    for profile in (
        Profile.symmetric(3, 2),
        bounded_equilibrium(1.0, nu, 3, 2)[0],
        Profile.symmetric(3, 2, alpha=alpha_max, beta=0.3),
    ):
        for i in range(3):
            assert theory_best_response(env, profile, i).alpha == alpha_max


def test_theory_best_response_under_strong_payment_is_honest_attack():
    # Thm D.1: plain side payments with C > 1/(N-1)^2 make alpha = 0 the best response to honesty
    n = 3
    env = make([f"side_payment:C={2 / (n - 1) ** 2}"], n_players=n, dim=2)
    br = theory_best_response(env, Profile.symmetric(n, 2), 0)
    assert br.alpha == 0.0
    assert br.beta == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Monte Carlo: batched vs PettingZoo loop, reproducibility
# ---------------------------------------------------------------------------------------------------------------


def fixed_profile_policies(env):
    """Fixed actions that float32 holds exactly (the PettingZoo loop sends float32 actions, the batch float64)."""
    d = env.unwrapped.game.dim
    return {
        "player_0": FixedPolicy(1.0, 0.25, np.full(d, 0.375)),
        "player_1": HonestPolicy(d),
        "player_2": FixedPolicy(0.5, 0.625, np.linspace(-0.5, 0.5, d)),
    }


REPLAYED_STACKS = [
    [],
    ["noisy_response:C=0.5", "side_payment:C=0.3"],
    ["robust_aggregation:rule=median", "noisy_response:C=0.25", "side_payment:C=0.3,balanced=true"],
]


@pytest.mark.parametrize("mechanisms", REPLAYED_STACKS)
def test_simulate_loop_replays_the_batched_stages_exactly(mechanisms):
    """The PettingZoo loop seeded with ``s`` and the batched stages drawing, one episode per batch, from
    ``default_rng(s)`` (what ``reset(seed=s)`` gives the env) play the same episodes: rewards, squared errors and
    payments agree to the last bit."""
    env = make(mechanisms, n_players=3, dim=2)
    policies, agents, episodes, seed = fixed_profile_policies(env), env.possible_agents, 300, 7
    slow = simulate_loop(env, policies, episodes=episodes, seed=seed)
    rng, rewards, sq_error, payments = np.random.default_rng(seed), [], [], []
    for _ in range(episodes):
        batch = episode_batch(env, 1, rng)
        observations = batch.reset()
        step = batch.step(np.stack([policies[a].act(observations[:, i], rng) for i, a in enumerate(agents)], axis=1))
        rewards.append(step.rewards[0])
        sq_error.append(step.outcome.sq_error[0])
        payments.append(None if step.payments is None else step.payments[0])
    np.testing.assert_array_equal(slow.rewards, np.array(rewards))
    np.testing.assert_array_equal(slow.sq_error, np.array(sq_error))
    if payments[0] is None:
        assert slow.payments is None
    else:
        np.testing.assert_array_equal(slow.payments, np.array(payments))
    assert np.unique(slow.rewards[:, 0]).size == episodes  # the episodes differ: a replay of one would not do


@pytest.mark.parametrize("mechanisms", REPLAYED_STACKS)
def test_simulate_rewards_are_eq_2_of_its_own_errors_and_payments(mechanisms):
    """Every episode ``simulate`` returns, in several batches, satisfies [H] eq. (2) exactly:
    ``R_i = (1/(N-1)) sum_{j != i} ||theta_j - mu||^2 - lambda_i ||theta_i - mu||^2 - p_i``."""
    lam = np.array([1.0, 0.5, 2.0])
    env = make(mechanisms, n_players=3, dim=2, lam=lam.tolist())
    fast = simulate(env, fixed_profile_policies(env), episodes=5000, seed=1, batch_size=1024)
    assert isinstance(fast, Episodes) and fast.rewards.shape == fast.sq_error.shape == (5000, 3)
    paid = 0.0 if fast.payments is None else fast.payments
    others = (fast.sq_error.sum(axis=1, keepdims=True) - fast.sq_error) / 2
    np.testing.assert_allclose(fast.rewards, others - lam * fast.sq_error - paid, rtol=1e-12, atol=1e-12)
    assert (fast.payments is not None) == any("side_payment" in m for m in mechanisms)
    if fast.payments is not None:
        assert np.all(fast.payments.std(axis=0) > 0)
    else:
        with pytest.raises(ValueError, match="payments"):
            fast.mean_and_se("payments")


def test_simulate_matches_closed_form_mse():
    from fedgames.envs.mean_estimation.theory import expected_mse

    env = make(n_players=3, dim=2)
    policies = fixed_profile_policies(env)
    profile = Profile(*(np.array([getattr(p, name) for p in policies.values()]) for name in ("alpha", "beta", "bias")))
    result = simulate(env, policies, episodes=40000, seed=4)
    mean, se = result.mean_and_se("sq_error")
    expected = expected_mse(profile, env.unwrapped.game.nu)
    assert np.all(np.abs(mean - expected) < 4 * se), (mean, expected, se)


def test_simulate_reproducible_by_seed():
    env = make(["noisy_response:C=0.5", "side_payment:C=0.3,balanced=true"], n_players=3, dim=2)
    policies = fixed_profile_policies(env) | {"player_1": RandomPolicy(env.action_space("player_1"))}
    a = simulate(env, policies, episodes=3000, seed=11)
    b = simulate(env, policies, episodes=3000, seed=11)
    c = simulate(env, policies, episodes=3000, seed=12)
    for field in ("rewards", "sq_error", "payments"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert not np.array_equal(getattr(a, field), getattr(c, field))
    np.testing.assert_allclose(a.payments.sum(axis=1), 0.0, atol=1e-12)  # balanced


def test_simulate_loop_reproducible_by_seed():
    env = make(["noisy_response:C=0.5"], n_players=3, dim=2)
    policies = {a: RandomPolicy(env.action_space(a)) for a in env.possible_agents}
    a = simulate_loop(env, policies, episodes=50, seed=3)
    b = simulate_loop(env, policies, episodes=50, seed=3)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    np.testing.assert_array_equal(a.sq_error, b.sq_error)
    assert a.payments is None


def test_simulate_rejects_missing_policies_and_too_few_episodes():
    env = make(n_players=3, dim=2)
    policies = fixed_profile_policies(env)
    del policies["player_2"]
    with pytest.raises(ValueError, match="player_2"):
        simulate(env, policies, episodes=10)
    with pytest.raises(ValueError, match="player_2"):
        simulate_loop(env, policies, episodes=10)
    with pytest.raises(ValueError, match="episodes"):
        simulate(env, fixed_profile_policies(env), episodes=1)
