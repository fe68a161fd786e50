"""PettingZoo's whole test suite over every registered fedgames env (issue 17.6): the AEC and parallel API tests, the
seed tests, ``render_test`` (it asks for ``render_mode="human"`` first: the env prints its ANSI rendering),
``max_cycles_test`` where a game has rounds (``max_cycles`` is their ``rounds``), and ``state_test`` where a game
has a global state."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
from pettingzoo.test import (
    api_test,
    max_cycles_test,
    parallel_api_test,
    parallel_seed_test,
    render_test,
    seed_test,
    state_test,
)

import fedgames

SMALL = {
    "mean_estimation_v0": {},
    "fedsgd_v0": {"objective": "quadratic", "rounds": 5},
    "participation_v0": {"rounds": 5},
}
"""A small configuration of each registered env (cheap enough for the whole suite)."""
WITH_ROUNDS = ("fedsgd_v0", "participation_v0")


def module_config(name: str) -> dict:
    """The small configuration less ``rounds`` (which ``max_cycles`` sets)."""
    return {k: v for k, v in SMALL[name].items() if k != "rounds"}


def module(name: str):
    """The env's PettingZoo-style module (``parallel_env``, ``env``), bound to its small configuration."""
    mod = importlib.import_module(f"fedgames.envs.{name}")
    config = module_config(name)
    return SimpleNamespace(
        parallel_env=lambda **kw: mod.parallel_env(**config, **kw),
        env=lambda **kw: mod.env(**config, **kw),
    )


def test_every_registered_env_is_covered():
    names = {env_id.split("/", 1)[-1].replace("-", "_") for env_id in fedgames.list_envs()}
    assert names <= set(SMALL), f"add a small configuration for {sorted(names - set(SMALL))}"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_api_and_seed_tests(name):
    mod = importlib.import_module(f"fedgames.envs.{name}")
    config = SMALL[name]
    parallel_api_test(mod.parallel_env(**config), num_cycles=12)
    api_test(mod.env(**config), num_cycles=12)
    parallel_seed_test(lambda: mod.parallel_env(**config), num_cycles=20)
    seed_test(lambda: mod.env(**config), num_cycles=20)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_render_test(name, capsys):
    """``human`` prints what ``ansi`` returns, and returns ``None``."""
    mod = importlib.import_module(f"fedgames.envs.{name}")
    render_test(lambda render_mode=None: mod.env(render_mode=render_mode, **SMALL[name]))
    assert mod.parallel_env(**SMALL[name]).metadata["render_modes"] == ["human", "ansi"]
    capsys.readouterr()
    shown = {}
    for mode in ("ansi", "human"):
        env = mod.parallel_env(render_mode=mode, **SMALL[name])
        env.reset(seed=0)
        env.step({agent: env.action_space(agent).low for agent in env.agents})
        shown[mode] = env.render()
    assert shown["human"] is None and capsys.readouterr().out == shown["ansi"] + "\n"


@pytest.mark.parametrize("name", WITH_ROUNDS)
def test_max_cycles_test(name):
    max_cycles_test(module(name))
    mod = importlib.import_module(f"fedgames.envs.{name}")
    assert mod.parallel_env(max_cycles=3, rounds=3, **module_config(name)).unwrapped.rounds == 3
    with pytest.raises(ValueError, match="max_cycles=3 and rounds=4 disagree"):
        mod.parallel_env(max_cycles=3, rounds=4, **module_config(name))


def test_max_cycles_is_no_parameter_of_a_one_round_game():
    with pytest.raises(ValueError, match="max_cycles"):
        fedgames.make("mean_estimation_v0", max_cycles=4)


@pytest.mark.parametrize("name", ["mean_estimation_v0", "participation_v0"])
def test_state_test(name):
    mod = importlib.import_module(f"fedgames.envs.{name}")
    state_test(mod.env(**SMALL[name]), mod.parallel_env(**SMALL[name]), num_cycles=12)
