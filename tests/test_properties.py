"""Property-based tests (issue 17.5): every registered env, with random configurations (in range and at the
extremes: 0, 1e-300, 1e300, inf, nan, negatives, strings, lists, None) and random actions (in the action space, at
its bounds, out of range, NaN, wrong shapes), either refuses the input with a ``ValueError``/``TypeError`` whose
message names the parameter, or plays an episode whose rewards are all finite, or ends it with ``diverged`` set
and the ``divergence`` named (:mod:`fedgames.envs.health`). Every registered env with a random stack of mechanisms
passes PettingZoo's ``parallel_api_test``.

The field names come from each game's config dataclass (``dataclasses.fields``) and each mechanism's signature
(``inspect.signature``), so the suite follows renames. The Hypothesis profiles are in ``tests/conftest.py``: ``ci``
(the default) runs the same derandomized examples on every run, ``--hypothesis-profile thorough`` new ones, 20x as
many (docs/testing.md)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pettingzoo.test import parallel_api_test

import fedgames
from fedgames.mechanisms import MECHANISMS as REGISTERED

SMALL = {
    "mean_estimation_v0": {},
    "fedsgd_v0": {"objective": "quadratic", "rounds": 3},
    "participation_v0": {"rounds": 3},
}
"""A small base configuration of each registered env; the strategies change one or more fields of it."""

ENVS = sorted(SMALL)

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


def plausible_value_for(field: dataclasses.Field) -> st.SearchStrategy:
    """Values of the default's type near it (numbers from 0 to a few times the default): mostly in range, so the
    episode is played with the field changed (a choice field keeps its default)."""
    default = field.default if field.default is not dataclasses.MISSING else None
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(default // 2, max(2, 2 * default))
    if isinstance(default, float) and math.isfinite(default):
        return st.floats(0.0, max(1.0, 4 * abs(default)))
    return st.just(default)


@st.composite
def configs(draw, name: str) -> dict:
    """One to three fields of the small config changed: half the examples to plausible values (mostly played),
    half to any value (mostly refused)."""
    fields = config_fields(name)
    chosen = draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique_by=lambda f: f.name))
    values = plausible_value_for if draw(st.booleans(), label="plausible") else value_for
    config = dict(SMALL[name])
    for field in chosen:
        config[field.name] = draw(values(field))
    return config


def names_a_parameter(error: Exception, names) -> bool:
    """The message names one of ``names`` as a word (``n`` is not named by ``n_samples``, nor ``C`` by ``Call``)."""
    message = str(error)
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", message) for n in names)


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
                event("played: diverged, flagged")
                return
            assert np.all(np.isfinite(reward)), f"{agent}'s reward {reward} is not finite and not flagged"
    event("played: finite rewards")


def same(a, b) -> bool:
    """``a`` is ``b``'s value and type (``1.0`` is not ``1``, nor ``True``: a changed type may be refused)."""
    return type(a) is type(b) and a == b


def sample_action(env, agent):
    return env.action_space(agent).sample()


@pytest.mark.parametrize("name", ENVS)
@given(data=st.data())
def test_random_configs_refused_by_name_or_play_finite(name, data):
    config = data.draw(configs(name))
    changed = [k for k in config if k not in SMALL[name] or not same(config[k], SMALL[name][k])]
    try:
        env = fedgames.make(name, **config)
    except (ValueError, TypeError) as error:
        assert changed and names_a_parameter(error, changed), f"{config}: {error!r} names none of {changed}"
        event("refused by name")
        return
    env.action_space(env.possible_agents[0]).seed(0)
    play(env, sample_action)


def valid_actions(space) -> st.SearchStrategy:
    """Actions in ``space``: its corners (each component at its low or its high bound), the middle, or uniform."""
    shape = space.shape
    low = np.broadcast_to(space.low, shape).astype(np.float32)
    high = np.broadcast_to(space.high, shape).astype(np.float32)
    corner = st.lists(st.booleans(), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))
    return st.one_of(
        corner.map(lambda top: np.where(np.reshape(top, shape), high, low)),
        st.just((low + high) / 2),
        st.floats(0, 1).map(lambda t: (low + np.float32(t) * (high - low)).astype(np.float32)),
    )


def any_actions(space) -> st.SearchStrategy:
    """Valid actions, or out of range, NaN, infinite, of the wrong shape, dtype or type."""
    shape = space.shape
    fill = st.sampled_from([0.0, 1e-300, 1e300, -1e300, math.inf, -math.inf, math.nan, -1.0, 1.0])
    return st.one_of(
        valid_actions(space),
        fill.map(lambda v: np.full(shape, v)),
        fill.map(lambda v: np.full(shape, v, dtype=np.float32) if math.isfinite(v) and abs(v) < 1e30 else v),
        st.just(np.zeros(shape + (2,))),
        st.just(np.zeros(0)),
        st.sampled_from(["x", None, [0.0] * int(np.prod(shape) or 1), np.zeros(shape, dtype=np.int64)]),
    )


@pytest.mark.parametrize("name", ENVS)
@given(data=st.data())
def test_random_actions_refused_by_name_or_play_finite(name, data):
    """Half the episodes play valid actions only (every round at the space's corners, its middle or uniform: the
    extremes a learner can reach), the other half any action each round."""
    env = fedgames.make(name, **SMALL[name])
    space = env.action_space(env.possible_agents[0])
    strategy = valid_actions(space) if data.draw(st.booleans(), label="valid only") else any_actions(space)

    def draw_action(env, agent):
        return data.draw(strategy)

    try:
        play(env, draw_action, seed=data.draw(st.integers(0, 2**31 - 1)))
    except (ValueError, TypeError) as error:
        names = ["action", *env.possible_agents]
        assert names_a_parameter(error, names), f"{error!r} names neither the actions nor an agent"
        event("refused by name")


RULES = {
    "mean": st.just({}),
    "median": st.just({}),
    "trimmed_mean": st.one_of(
        st.fixed_dictionaries({"f": st.integers(0, 2)}), st.fixed_dictionaries({"fraction": st.floats(0, 0.45)})
    ),
    "krum": st.fixed_dictionaries({"f": st.integers(0, 2)}),
    "multi_krum": st.fixed_dictionaries({"f": st.integers(0, 2), "m": st.integers(1, 3)}),
    "geometric_median": st.fixed_dictionaries({}, optional={"tol": st.floats(1e-10, 1e-4)}),
}
"""Each aggregation rule's parameters, in range (a game with too few players for ``f`` refuses it by name)."""

IN_RANGE = {
    "side_payment": st.fixed_dictionaries({"C": st.floats(0, 2)}, optional={"balanced": st.booleans()}),
    "noisy_response": st.fixed_dictionaries({"C": st.floats(0, 2)}),
    "bounded_attack": st.fixed_dictionaries(
        {"A": st.floats(0, 1)}, optional={"component": st.sampled_from(["alpha", "u"])}
    ),
    "robust_aggregation": st.tuples(
        st.sampled_from(sorted(RULES)).flatmap(lambda rule: RULES[rule].map(lambda p: {"rule": rule} | p)),
        st.fixed_dictionaries({}, optional={"clip_norm": st.floats(0.1, 10), "mixing_f": st.integers(0, 1)}),
    ).map(lambda pair: pair[0] | pair[1]),
    "audit": st.one_of(
        st.fixed_dictionaries(
            {"k": st.integers(1, 3)},
            optional={
                "p_detect": st.floats(0, 1),
                "S": st.floats(0, 5),
                "policy": st.sampled_from(["uniform", "risk", "test"]),
            },
        ),
        st.fixed_dictionaries(
            {"budget": st.floats(1, 3)}, optional={"costs": st.floats(0.5, 1), "policy": st.sampled_from(["risk"])}
        ),
    ),
    "challenge_mixing": st.fixed_dictionaries(
        {"pi": st.floats(0, 1)}, optional={"mixing": st.sampled_from(["random", "expected"])}
    ),
}
"""In-range parameters of every registered mechanism (:data:`fedgames.mechanisms.MECHANISMS`, ``REGISTERED`` here)."""


def mechanism_stacks(parameters) -> st.SearchStrategy:
    """Stacks of up to three mechanisms, each ``(id, params)`` with params drawn by ``parameters(id)``."""
    return st.lists(st.sampled_from(sorted(REGISTERED)), max_size=3).flatmap(
        lambda ids: st.tuples(*[st.tuples(st.just(i), parameters(i)) for i in ids])
    )


def in_range(mechanism: str) -> st.SearchStrategy:
    return IN_RANGE[mechanism]


def mechanism_parameters(mechanism: str) -> list[str]:
    """The keyword parameters of a mechanism's wrapper (its spec's keys), ``env`` aside."""
    signature = inspect.signature(REGISTERED[mechanism].__init__)
    return [p.name for p in signature.parameters.values() if p.name not in ("self", "env") and p.kind != p.VAR_KEYWORD]


@st.composite
def extreme(draw, mechanism: str) -> dict:
    """In-range parameters with one to three of them (or the rule's) replaced by an extreme or a wrong type."""
    params = dict(draw(in_range(mechanism)))
    names = mechanism_parameters(mechanism) + [k for k in params if k not in mechanism_parameters(mechanism)]
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        params[name] = draw(st.one_of(st.sampled_from(EXTREMES), st.sampled_from(WRONG_TYPES)))
    return params


def test_every_registered_mechanism_has_parameters_here():
    assert set(IN_RANGE) == set(REGISTERED)


def refused_by_name(error: Exception, stack) -> bool:
    """A refused stack's error names one of its mechanisms, one of their parameters, or an action component."""
    names = ["component"] + [n for n, _ in stack] + [k for _, p in stack for k in p]
    return names_a_parameter(error, names)


@pytest.mark.parametrize("name", ENVS)
@settings(max_examples=max(1, settings.default.max_examples // 3))
@given(data=st.data())
def test_random_mechanism_stacks_pass_the_parallel_api_test(name, data):
    stack = data.draw(mechanism_stacks(in_range))
    try:
        env = fedgames.make(name, mechanisms=list(stack), **SMALL[name])
    except (ValueError, TypeError) as error:
        # a mechanism that does not apply to the game, or a rule with too few players for its f, is refused by name
        assert refused_by_name(error, stack), repr(error)
        event("refused by name")
        return
    parallel_api_test(env, num_cycles=4)
    event("passed the API test")


@pytest.mark.parametrize("name", ENVS)
@given(data=st.data())
def test_random_mechanism_parameters_refused_by_name_or_play_finite(name, data):
    """Mechanism stacks with extreme or wrongly typed parameters: refused naming the mechanism or the parameter,
    or an episode of finite rewards (or a flagged divergence)."""
    stack = data.draw(mechanism_stacks(extreme))
    try:
        env = fedgames.make(name, mechanisms=list(stack), **SMALL[name])
    except (ValueError, TypeError) as error:
        assert refused_by_name(error, stack), f"{stack}: {error!r}"
        event("refused by name")
        return
    env.action_space(env.possible_agents[0]).seed(0)
    play(env, sample_action)
