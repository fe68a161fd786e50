"""Issue 17.4: the inputs past the first checks — finite extremes, odd types, deep stacks, batches beyond the
machine's memory — are refused with a ValueError naming the parameter and its range (or simply work)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import fedgames
from fedgames.envs.batch import resolve_batch_size
from fedgames.mechanisms.specs import MAX_MECHANISMS
from fedgames.memory import memory_budget


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"lr": "decaying", "strong_convexity": 0}, r"strong_convexity must be a finite number in \[1e-15, 1e\+15\]"),
        ({"lr": "decaying", "strong_convexity": -1.0}, r"strong_convexity must be a finite number in \[1e-15, 1e"),
        ({"lr": "decaying", "strong_convexity": 1e-300}, r"strong_convexity must be a finite number in \[1e-15, 1e"),
        ({"lr_value": 3.4e38}, r"lr_value must be a finite number in \(0, 1e\+15\], got 3.4e\+38"),
        ({"lr": "decaying", "strong_convexity": "big"}, "strong_convexity must be a number"),
        ({"radius": "a"}, "radius must be a number"),
        ({"radius": None}, "radius must be a number"),
        ({"radius": -np.inf}, "radius must be a finite number > 0"),
        ({"radius": 0.0}, "radius must be a finite number > 0"),
    ],
)
def test_fedsgd_step_size_and_radius_are_checked(config, message):
    with pytest.raises(ValueError, match=message):
        fedgames.make("fedsgd_v0", **config)


@pytest.mark.parametrize("config", [{"lr_value": 1e15}, {"lr": "decaying", "strong_convexity": 1e-15, "eta": 1e-300}])
def test_fedsgd_step_sizes_at_their_bounds_diverge_flagged(config):
    """The largest steps the config takes (``lr_value = 1e15``; ``4 / (m_sc (eta + 1))`` with the smallest
    ``m_sc``) overflow the quadratic model in a few rounds: the episode ends with the divergence named, not with a
    float32 overflow of the step itself."""
    env = fedgames.make("fedsgd_v0", objective="quadratic", rounds=5, **config)
    env.reset(seed=0)
    while env.agents:
        *_, infos = env.step({a: np.ones(1, dtype=np.float32) for a in env.agents})
    assert all(info["diverged"] and info["divergence"] for info in infos.values()), infos


def test_fedsgd_infinite_radius_is_no_projection():
    assert fedgames.make("fedsgd_v0", radius=float("inf")).unwrapped.game.radius == float("inf")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sigma_star": 1e200}, r"sigma_star must be a finite number in \[0, 1e\+15\]"),
        ({"sigma": 1e200}, r"sigma must be at most 1e\+15, got 1e\+200"),
        ({"sigma": 1e-200, "sigma_star": 0.0}, "spread of the sample means"),
        ({"sigma_cv": 1e-200}, r"sigma_cv must be 0 or in \[1e-06, 10\]"),
        ({"sigma_cv": 1e3}, r"sigma_cv must be a finite number in \[0, 10\]"),
        ({"prior_std": 1e300}, "prior_std must be a finite number in"),
        ({"prior_std": 1e10}, "prior_std must be at most 1e\\+08 times the spread"),
        ({"alpha_max": 1e300}, "alpha_max must be a finite number in"),
        ({"bias_max": 1e40}, "bias_max must be a finite number in"),
    ],
)
def test_mean_estimation_extremes_are_refused_with_the_range(config, message):
    with pytest.raises(ValueError, match=message):
        fedgames.make("mean_estimation_v0", **config)


def test_mean_estimation_extremes_inside_the_ranges_play_finite():
    """At the edges of the ranges the game still plays finite rewards and float32-finite spaces."""
    for config in ({"sigma": 1e15, "alpha_max": 1e15, "bias_max": 1e15, "prior_std": 1e15}, {"sigma_cv": 1e-6}):
        env = fedgames.make("mean_estimation_v0", **config)
        assert all(np.isfinite(env.action_space(a).high).all() for a in env.possible_agents)
        observations, _ = env.reset(seed=0)
        assert all(np.isfinite(o).all() for o in observations.values())
        _, rewards, _, _, infos = env.step({a: env.action_space(a).high for a in env.agents})
        assert all(np.isfinite(r) for r in rewards.values()) and not infos["player_0"]["diverged"]


@pytest.mark.parametrize("env_id", ["mean_estimation_v0", "participation_v0", "fedsgd_v0"])
def test_negative_seed_is_a_value_error_naming_seed(env_id):
    env = fedgames.make(env_id, **({"rounds": 1} if env_id != "mean_estimation_v0" else {}))
    with pytest.raises(ValueError, match="seed must be an integer"):
        env.reset(seed=-1)


def test_actions_as_lists_are_accepted():
    env = fedgames.make("mean_estimation_v0")
    env.reset(seed=0)
    _, rewards, _, _, _ = env.step({a: [0.0, 0.0, 0.0, 0.0] for a in env.agents})
    assert all(np.isfinite(r) for r in rewards.values())


def test_robust_aggregation_rule_that_is_not_a_string():
    with pytest.raises(ValueError, match=r"robust_aggregation: unknown rule \['median'\]; did you mean 'median'"):
        fedgames.make("mean_estimation_v0", mechanisms=[("robust_aggregation", {"rule": ["median"]})])


def test_deep_mechanism_stacks_are_refused_with_the_limit():
    env = fedgames.make("mean_estimation_v0", mechanisms=["noisy_response:C=0.01"] * MAX_MECHANISMS)
    env.reset(seed=0)
    env.step({a: env.action_space(a).sample() for a in env.agents})  # the deepest allowed stack plays
    with pytest.raises(ValueError, match=f"at most {MAX_MECHANISMS} stacked mechanisms, got 3000"):
        fedgames.make("mean_estimation_v0", mechanisms=["noisy_response:C=0.01"] * 3000)


def test_a_billion_players_is_refused_at_once_with_the_estimate():
    if memory_budget() is None:
        pytest.skip("the machine's memory is unknown")
    start = time.perf_counter()
    for env_id, name in (("mean_estimation_v0", "n_players"), ("participation_v0", "n_players")):
        with pytest.raises(ValueError, match=f"{env_id} with {name}=1000000000 needs about .* TiB"):
            fedgames.make(env_id, **{name: 10**9})
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(("objective", "features"), [("quadratic", 2), ("cnn", 784)])
def test_generated_fedsgd_data_beyond_the_memory_budget_is_refused_at_make(monkeypatch, objective, features):
    """Audit of issue 17: ``samples_per_client=3e8`` (quadratic) was OOM-killed after 60 s and ``1e12`` asked
    torch for 32 TB; the data's size, about ``2 (4 features + 32)`` bytes a sample, is checked when the env is made,
    with the estimate in the message. Data that fits is made."""
    monkeypatch.setattr("fedgames.memory.memory_budget", lambda: 2**20)  # 1 MiB
    fits = 2**20 // (3 * 2 * (4 * features + 32))
    fedgames.make("fedsgd_v0", objective=objective, n_players=3, samples_per_client=fits, rounds=1, lr="constant")
    with pytest.raises(
        ValueError, match=rf"fedsgd_v0's {objective} data \(n_players=3 x samples_per_client=.*needs about"
    ):
        fedgames.make("fedsgd_v0", objective=objective, n_players=3, samples_per_client=fits + 1, lr="constant")


def test_batches_beyond_the_memory_budget_are_split_or_refused(monkeypatch):
    """Issue 17.4: ``n_players=1000`` played 65,536 episodes at once (1.95 GiB in one array, more in all). With a
    budget of 1 GiB the default batch is lowered to what fits, and a given batch_size beyond it is refused with the
    estimate and the largest batch that fits."""
    monkeypatch.setattr("fedgames.memory.memory_budget", lambda: 2**30)
    env = fedgames.make("mean_estimation_v0", n_players=1000)
    per_episode = env.unwrapped.episode_bytes
    fitting = 2**30 // per_episode
    assert 1 <= fitting < 65_536
    assert resolve_batch_size(env, None) == fitting
    assert resolve_batch_size(env, fitting) == fitting
    with pytest.raises(ValueError, match=f"batch_size=65536 needs about .* GiB .* use batch_size <= {fitting}"):
        resolve_batch_size(env, 65_536)
    small = fedgames.make("mean_estimation_v0")
    assert resolve_batch_size(small, None) == 65_536  # small games keep the default
