"""fedgames' registry: ids, mechanisms given in every accepted form, user registration and entry-point plugins."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pettingzoo
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.test import parallel_api_test

import fedgames
import fedgames.registry as registry
from fedgames.envs.mean_estimation.mean_estimation import MeanEstimationEnv
from fedgames.mechanisms import BoundedAttack, NoisyResponse, RobustAggregation, SidePayment


@pytest.fixture
def clean_registries(monkeypatch):
    """Undo every registration a test makes (PettingZoo's registries and fedgames' list)."""
    parallel = dict(pettingzoo.parallel_registry)
    aec = dict(pettingzoo.aec_registry)
    monkeypatch.setattr(registry, "_registered", list(registry._registered))
    yield
    pettingzoo.parallel_registry.clear()
    pettingzoo.parallel_registry.update(parallel)
    pettingzoo.aec_registry.clear()
    pettingzoo.aec_registry.update(aec)


def test_list_envs_contains_mean_estimation():
    envs = fedgames.list_envs()
    assert "fedgames/mean_estimation-v0" in envs
    assert all(isinstance(e, str) for e in envs)
    assert len(envs) == len(set(envs))


@pytest.mark.parametrize(
    "env_id", ["mean_estimation_v0", "fedgames/mean_estimation-v0", "mean_estimation-v0", "fedgames/mean_estimation_v0"]
)
def test_make_accepts_both_id_forms(env_id):
    env = fedgames.make(env_id, n_players=4, dim=2)
    assert isinstance(env, MeanEstimationEnv)
    assert len(env.possible_agents) == 4
    assert env.action_space("player_0").shape == (4,)


def test_canonical_id():
    assert registry.canonical_id("mean_estimation_v0") == "fedgames/mean_estimation-v0"
    assert registry.canonical_id("fedgames/mean_estimation-v0") == "fedgames/mean_estimation-v0"
    assert registry.canonical_id("other_ns/game_v3") == "other_ns/game-v3"


def test_make_mechanisms_as_strings_pairs_and_callables():
    env = fedgames.make(
        "mean_estimation_v0",
        mechanisms=[
            "bounded_attack:A=1.5",
            ("side_payment", {"C": 0.4, "balanced": True}),
            lambda e: NoisyResponse(e, C=0.25),
            ("robust_aggregation", {"rule": "median"}),
        ],
        n_players=5,
        dim=2,
    )
    # the first mechanism is innermost
    assert isinstance(env, RobustAggregation)
    assert isinstance(env.env, NoisyResponse) and env.env.C == 0.25
    assert isinstance(env.env.env, SidePayment) and env.env.env.C == 0.4 and env.env.env.balanced
    assert isinstance(env.env.env.env, BoundedAttack) and env.env.env.env.A == 1.5
    assert isinstance(env.unwrapped, MeanEstimationEnv)
    assert [m.id for m in env.protocol.mechanisms] == [
        "bounded_attack",
        "side_payment",
        "noisy_response",
        "robust_aggregation",
    ]
    assert env.action_space("player_0").high[0] == np.float32(1.5)
    parallel_api_test(env, num_cycles=5)


def test_string_and_pair_specs_are_equivalent():
    a = fedgames.make("mean_estimation_v0", ["side_payment:C=0.4,balanced=true"], n_players=3)
    b = fedgames.make("mean_estimation_v0", [("side_payment", {"C": 0.4, "balanced": True})], n_players=3)
    assert a.params() == b.params() == {"C": 0.4, "balanced": True}
    actions = {p: np.array([1.0, 0.2, 0.1, -0.1], np.float32) for p in a.possible_agents}
    a.reset(seed=3)
    b.reset(seed=3)
    assert a.step(actions)[1] == b.step(actions)[1]


def test_make_without_mechanisms_returns_plain_env():
    env = fedgames.make("mean_estimation_v0")
    assert type(env) is MeanEstimationEnv
    assert env.protocol.mechanisms == ()


def test_make_passes_config_and_pettingzoo_make_agrees():
    a = fedgames.make("mean_estimation_v0", n_players=6, dim=3, n_samples=4, lam=0.5)
    b = pettingzoo.make("parallel", "fedgames/mean_estimation-v0", n_players=6, dim=3, n_samples=4, lam=0.5)
    for env in (a, b):
        assert len(env.possible_agents) == 6
        assert env.game.dim == 3 and env.game.n_samples == 4
        np.testing.assert_array_equal(env.game.lam, 0.5)
    oa, _ = a.reset(seed=1)
    ob, _ = b.reset(seed=1)
    for p in a.possible_agents:
        np.testing.assert_array_equal(oa[p], ob[p])


# ---------------------------------------------------------------------------------------------------------------
# User registration
# ---------------------------------------------------------------------------------------------------------------


class ToyEnv(ParallelEnv):
    """A tiny two-player one-step game that is not a fedgames game (no protocol)."""

    metadata = {"name": "toy_v0", "render_modes": []}

    def __init__(self, payoff: float = 1.0, render_mode: str | None = None) -> None:
        self.payoff = payoff
        self.render_mode = render_mode
        self.possible_agents = ["player_0", "player_1"]
        self.agents: list[str] = []
        self._obs = {a: spaces.Box(0.0, 1.0, (1,), np.float32) for a in self.possible_agents}
        self._act = {a: spaces.Discrete(2) for a in self.possible_agents}

    def observation_space(self, agent):
        return self._obs[agent]

    def action_space(self, agent):
        return self._act[agent]

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        return {a: np.zeros(1, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        agents, self.agents = self.agents, []
        coop = float(all(actions[a] == 1 for a in agents))
        return (
            {a: np.ones(1, np.float32) for a in agents},
            {a: self.payoff * coop for a in agents},
            {a: True for a in agents},
            {a: False for a in agents},
            {a: {} for a in agents},
        )


def test_register_user_parallel_env(clean_registries):
    full_id = fedgames.register("my_ns/toy-v0", entry_point=ToyEnv, kwargs={"payoff": 3.0})
    assert full_id == "my_ns/toy-v0"
    assert "my_ns/toy-v0" in fedgames.list_envs()
    for env in (
        fedgames.make("my_ns/toy-v0"),
        pettingzoo.make("parallel", "my_ns/toy-v0"),
        fedgames.make("my_ns/toy_v0"),
    ):
        assert isinstance(env, ToyEnv) and env.payoff == 3.0
        parallel_api_test(env, num_cycles=5)
    assert fedgames.make("my_ns/toy-v0", payoff=5.0).payoff == 5.0
    # mechanisms need a fedgames protocol: a clear error, not an AttributeError deep inside
    with pytest.raises(TypeError, match="fedgames games only"):
        fedgames.make("my_ns/toy-v0", mechanisms=["side_payment:C=1"])


def test_register_mean_estimation_variant_with_aec(clean_registries):
    full_id = fedgames.register(
        "my_ns/small_me-v1",
        entry_point="fedgames.envs.mean_estimation_v0:parallel_env",
        aec_entry_point="fedgames.envs.mean_estimation_v0:raw_env",
        kwargs={"n_players": 2, "dim": 5},
    )
    assert full_id == "my_ns/small_me-v1"
    env = fedgames.make(full_id, mechanisms=["side_payment:C=2"])
    assert isinstance(env, SidePayment)
    assert env.possible_agents == ["player_0", "player_1"] and env.unwrapped.game.dim == 5
    assert len(pettingzoo.make("parallel", full_id).possible_agents) == 2
    aec = pettingzoo.make("aec", full_id)
    assert isinstance(aec, pettingzoo.AECEnv) and len(aec.possible_agents) == 2
    # the defaults can be overridden at make time
    assert len(fedgames.make(full_id, n_players=3).possible_agents) == 3


def test_register_without_namespace_goes_under_fedgames(clean_registries):
    full_id = fedgames.register("toy_game_v2", entry_point=ToyEnv)
    assert full_id == "fedgames/toy_game-v2"
    assert full_id in fedgames.list_envs()
    assert isinstance(pettingzoo.make("parallel", "fedgames/toy_game-v2"), ToyEnv)
    assert isinstance(fedgames.make("toy_game_v2"), ToyEnv)
    # registering again does not duplicate the id in list_envs
    with pytest.warns(UserWarning, match="Overriding"):
        fedgames.register("toy_game_v2", entry_point=ToyEnv)
    assert fedgames.list_envs().count(full_id) == 1


@pytest.mark.parametrize("point", [42, "module_without_colon"])
def test_register_refuses_an_entry_point_that_is_neither_a_path_nor_callable(clean_registries, point):
    with pytest.raises(ValueError, match="entry_point must be 'module:function' or a callable"):
        fedgames.register("broken_v0", entry_point=point)
    with pytest.raises(ValueError, match="aec_entry_point must be"):
        fedgames.register("broken_v0", entry_point=ToyEnv, aec_entry_point=point)
    assert "fedgames/broken-v0" not in fedgames.list_envs()


# ---------------------------------------------------------------------------------------------------------------
# Entry-point plugins (group "fedgames.envs")
# ---------------------------------------------------------------------------------------------------------------


class FakeEntryPoint:
    def __init__(self, name, loader):
        self.name = name
        self.group = registry.ENTRY_POINT_GROUP
        self._loader = loader

    def load(self):
        return self._loader()


class PluginList(list):
    """The fake entry points, plus the groups the registry asked ``entry_points`` for."""

    def __init__(self):
        super().__init__()
        self.groups_asked: list[str] = []


@pytest.fixture
def fake_plugins(monkeypatch, clean_registries):
    """Install fake entry points for the ``fedgames.envs`` group; return the list to fill."""
    plugins = PluginList()
    groups_asked = plugins.groups_asked

    def fake_entry_points(*, group=None, **_):
        groups_asked.append(group)
        return list(plugins) if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    return plugins


def test_plugin_register_function_called_on_next_list_envs(fake_plugins):
    calls = []

    def register_envs():
        calls.append(1)
        fedgames.register("plugin_ns/plug-v0", entry_point=ToyEnv, kwargs={"payoff": 7.0})

    fake_plugins.append(FakeEntryPoint("plug", lambda: register_envs))
    envs = fedgames.list_envs()
    assert calls == [1]
    assert fake_plugins.groups_asked == ["fedgames.envs"]
    assert "plugin_ns/plug-v0" in envs and "fedgames/mean_estimation-v0" in envs
    fedgames.list_envs()
    fedgames.make("mean_estimation_v0")
    assert calls == [1]  # loaded once
    assert fedgames.make("plugin_ns/plug-v0").payoff == 7.0
    assert pettingzoo.make("parallel", "plugin_ns/plug-v0").payoff == 7.0


def test_plugins_load_on_first_make(fake_plugins):
    fake_plugins.append(
        FakeEntryPoint("plug", lambda: lambda: fedgames.register("plugin_ns/plug-v3", entry_point=ToyEnv))
    )
    assert isinstance(fedgames.make("plugin_ns/plug-v3"), ToyEnv)


def test_plugin_whose_load_raises_only_logs_a_warning(fake_plugins, caplog):
    def broken():
        raise ImportError("no module named 'missing_dep'")

    fake_plugins.append(FakeEntryPoint("broken_plugin", broken))
    fake_plugins.append(
        FakeEntryPoint("good_plugin", lambda: lambda: fedgames.register("plugin_ns/good-v0", entry_point=ToyEnv))
    )
    with caplog.at_level(logging.WARNING, logger="fedgames.registry"):
        envs = fedgames.list_envs()
    assert "plugin_ns/good-v0" in envs  # the broken plugin does not stop the others
    assert "fedgames/mean_estimation-v0" in envs
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "broken_plugin" in warnings[0].getMessage()
    assert "missing_dep" in warnings[0].getMessage()
    assert isinstance(fedgames.make("mean_estimation_v0"), MeanEstimationEnv)


def test_plugin_load_returning_non_callable_is_ignored(fake_plugins):
    fake_plugins.append(FakeEntryPoint("not_callable", lambda: 42))
    assert "fedgames/mean_estimation-v0" in fedgames.list_envs()


def test_cli_list_shows_both_env_names_and_whole_mechanism_summaries(capsys):
    from fedgames.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for short, full in [("mean_estimation_v0", "fedgames/mean_estimation-v0"), ("fedsgd_v0", "fedgames/fedsgd-v0")]:
        assert any(line.split() == [short, full] for line in out.splitlines())
    assert "geometric_median)." in out  # the first paragraph, not its first line
    assert "``" not in out and max(len(line) for line in out.splitlines()) <= 110  # console text, wrapped
