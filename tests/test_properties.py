"""Property-based tests (issue 17.5): every registered env, with random configurations (in range and at the
extremes: 0, 1e-300, 1e300, inf, nan, negatives, strings, lists, None) and random actions (in the action space, at
its bounds, out of range, NaN, wrong shapes), either refuses the input with a ``ValueError``/``TypeError`` whose
message names the parameter, or plays an episode whose rewards are all finite, or ends it with ``diverged`` set
and the ``divergence`` named (:mod:`fedgames.envs.health`). Every registered env with a random stack of mechanisms
passes PettingZoo's ``parallel_api_test``.

The field names come from each game's config dataclass (``dataclasses.fields``), so the suite follows renames.
Examples are derandomized (``derandomize=True``): CI runs the same examples on every run."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pettingzoo.test import parallel_api_test

import fedgames

SMALL = {
    "mean_estimation_v0": {},
    "fedsgd_v0": {"objective": "quadratic", "rounds": 3},
    "participation_v0": {"rounds": 3},
}
"""A small base configuration of each registered env; the strategies change one or more fields of it."""

ENVS = sorted(SMALL)
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

EXTREMES = [0, 1, 2, -1, 0.0, -0.0, 1e-300, -1e-300, 1e300, -1e300, math.inf, -math.inf, math.nan, 0.5, 1e6, 3]
WRONG_TYPES = ["x", "", [1], [], None, {"a": 1}, True]


def config_fields(name: str) -> list[dataclasses.Field]:
    env = fedgames.make(name, **SMALL[name])
    return list(dataclasses.fields(type(env.config)))


def value_for(field: dataclasses.Field) -> st.SearchStrategy:
    """Random values for one config field: its default perturbed, the extremes, or wrong types."""
    default = field.default if field.default is not dataclasses.MISSING else None
    options = [st.sampled_from(EXTREMES), st.sampled_from(WRONG_TYPES)]
    if isinstance(default, bool):
        options.append(st.booleans())
    elif isinstance(default, int):
        options.append(st.integers(min_value=-2, max_value=max(8, 2 * default)))
    elif isinstance(default, float):
        options.append(st.floats(allow_nan=True, allow_infinity=True, width=64))
    elif isinstance(default, str):
        options.append(st.text(max_size=8))
    return st.one_of(*options)


@st.composite
def configs(draw, name: str) -> dict:
    fields = config_fields(name)
    chosen = draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique_by=lambda f: f.name))
    config = dict(SMALL[name])
    for field in chosen:
        config[field.name] = draw(value_for(field))
    return config


def names_a_parameter(error: Exception, names) -> bool:
    message = str(error)
    return any(n in message for n in names)


def play(env, draw_action, seed: int = 0) -> None:
    """One episode; assert the rewards finite or the divergence flagged."""
    env.reset(seed=seed)
    for _ in range(64):
        if not env.agents:
            break
        actions = {agent: draw_action(env, agent) for agent in env.agents}
        _, rewards, terms, truncs, infos = env.step(actions)
        for agent, reward in rewards.items():
            info = infos.get(agent, {})
            if info.get("diverged"):
                assert info.get("divergence"), f"{agent} diverged without the divergence named: {info}"
                return
            assert np.all(np.isfinite(reward)), f"{agent}'s reward {reward} is not finite and not flagged"


def sample_action(env, agent):
    return env.action_space(agent).sample()


@pytest.mark.parametrize("name", ENVS)
@PROPERTY
@given(data=st.data())
def test_random_configs_refused_by_name_or_play_finite(name, data):
    config = data.draw(configs(name))
    changed = [k for k in config if k not in SMALL[name] or config[k] != SMALL[name].get(k)] or list(config)
    try:
        env = fedgames.make(name, **config)
    except (ValueError, TypeError) as error:
        assert names_a_parameter(error, list(config)), f"{config}: {error!r} names no parameter {changed}"
        return
    env.action_space(env.possible_agents[0]).seed(0)
    play(env, sample_action)


def action_strategy(space) -> st.SearchStrategy:
    shape = space.shape
    low = np.broadcast_to(space.low, shape).astype(np.float64)
    high = np.broadcast_to(space.high, shape).astype(np.float64)
    fill = st.sampled_from([0.0, 1e-300, 1e300, -1e300, math.inf, -math.inf, math.nan, -1.0, 1.0])
    return st.one_of(
        st.just(low),
        st.just(high),
        st.just((low + high) / 2),
        st.floats(0, 1).map(lambda t: low + t * (high - low)),
        fill.map(lambda v: np.full(shape, v)),
        fill.map(lambda v: np.full(shape, v, dtype=np.float32) if math.isfinite(v) and abs(v) < 1e30 else v),
        st.just(np.zeros(shape + (2,))),
        st.just(np.zeros(0)),
        st.sampled_from(["x", None, [0.0] * int(np.prod(shape) or 1), np.zeros(shape, dtype=np.int64)]),
    )


@pytest.mark.parametrize("name", ENVS)
@PROPERTY
@given(data=st.data())
def test_random_actions_refused_by_name_or_play_finite(name, data):
    env = fedgames.make(name, **SMALL[name])
    agent0 = env.possible_agents[0]
    strategy = action_strategy(env.action_space(agent0))

    def draw_action(env, agent):
        return data.draw(strategy)

    try:
        play(env, draw_action, seed=data.draw(st.integers(0, 2**31 - 1)))
    except (ValueError, TypeError) as error:
        names = ["action", *env.possible_agents]
        assert names_a_parameter(error, names), f"{error!r} names neither the actions nor an agent"


MECHANISMS = {
    "side_payment": st.fixed_dictionaries({"C": st.floats(0, 2)}, optional={"balanced": st.booleans()}),
    "noisy_response": st.fixed_dictionaries({"C": st.floats(0, 2)}),
    "bounded_attack": st.fixed_dictionaries({"A": st.floats(0, 1)}),
    "robust_aggregation": st.fixed_dictionaries({"rule": st.sampled_from(["mean", "median"])}),
}


@pytest.mark.parametrize("name", ENVS)
@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_mechanism_stacks_pass_the_parallel_api_test(name, data):
    stack = data.draw(
        st.lists(st.sampled_from(sorted(MECHANISMS)), max_size=3).flatmap(
            lambda names: st.tuples(*[st.tuples(st.just(n), MECHANISMS[n]) for n in names])
        )
    )
    try:
        env = fedgames.make(name, mechanisms=list(stack), **SMALL[name])
    except (ValueError, TypeError) as error:
        # a mechanism that does not apply to the game is refused by name
        assert names_a_parameter(error, ["component"] + [n for n, _ in stack] + [k for _, p in stack for k in p]), repr(
            error
        )
        return
    parallel_api_test(env, num_cycles=4)
