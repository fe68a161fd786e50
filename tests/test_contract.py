"""The game contract (:mod:`fedgames.envs.contract`): a third-party game defined here, registered through
``fedgames.register``, runs through ``fedgames simulate``, ``check --oracle grid`` and ``train`` with no change to
the generic code; the config convention validates and names parameters as documented."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pettingzoo
import pytest
from gymnasium import spaces

import fedgames
from fedgames import registry
from fedgames.cli import main
from fedgames.envs.batch import BatchStep, EpisodeBatch
from fedgames.envs.config import GameConfig, at_least, each_player, number, param
from fedgames.envs.contract import GameEnv, TheoryAdapter, game_of
from fedgames.envs.policy import Policy, constant_policies
from fedgames.envs.protocol import Protocol
from fedgames.envs.spaces import action_box


@dataclass(frozen=True)
class TargetConfig(GameConfig):
    """``n_players`` each pick ``alpha in [0, 1]``; reward ``-lam_i (alpha_i - target)^2 + noise N(0, 1)``."""

    game: ClassVar[str] = "target_v0"

    n_players: int = param(2, at_least(2))
    target: float = param(0.3, number(0.0, 1.0))
    lam: Any = param(1.0, each_player(strict=True), per_player=True)
    noise: float = param(0.1, number())


class TargetBatch(EpisodeBatch):
    def __init__(self, config: TargetConfig, protocol: Protocol, size: int, rng: np.random.Generator) -> None:
        super().__init__(protocol, size, rng)
        self.config = config

    def reset(self) -> np.ndarray:
        return np.zeros((self.size, self.config.n_players, 1))

    def step(self, actions: np.ndarray) -> BatchStep:
        alpha = self.protocol.check_actions(actions)[..., 0]
        noise = self.config.noise * self.rng.standard_normal(alpha.shape)
        rewards = -self.config.lam * (alpha - self.config.target) ** 2 + noise
        return BatchStep(np.zeros((self.size, self.config.n_players, 1)), rewards, True)


class TargetTheory(TheoryAdapter):
    def __init__(self, config: TargetConfig, protocol: Protocol) -> None:
        super().__init__(protocol)
        self.config = config

    def payoff(self, actions: np.ndarray, i: int) -> float:
        return float(-self.config.lam[i] * (actions[i, 0] - self.config.target) ** 2)

    def best_response(self, actions: np.ndarray, i: int) -> np.ndarray:
        return np.array([self.config.target])

    def predicted_actions(self) -> np.ndarray:
        return np.full((self.config.n_players, 1), self.config.target)

    def expected(self, actions: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
        rewards = [self.payoff(actions, i) for i in range(self.config.n_players)]
        return {"reward": (np.array(rewards), "rewards")}


class TargetEnv(GameEnv):
    metadata = {"name": "target_v0", "render_modes": [], "is_parallelizable": True}
    profile_names = ("honest", "theory")

    def __init__(self, **config: Any) -> None:
        self.config = TargetConfig.from_kwargs(**config)
        self.render_mode = None
        self.protocol = Protocol(("alpha",), np.zeros(1), np.ones(1))
        self.possible_agents = [f"player_{i}" for i in range(self.config.n_players)]
        self.agents: list[str] = []
        self.observation_spaces = {a: spaces.Box(-1.0, 1.0, (1,), np.float32) for a in self.possible_agents}
        self.action_spaces = {a: action_box(self.protocol) for a in self.possible_agents}
        self._rng = np.random.default_rng()

    def episode_batch(self, protocol: Protocol, size: int, rng: np.random.Generator) -> TargetBatch:
        return TargetBatch(self.config, protocol, size, rng)

    def honest_policies(self, protocol: Protocol) -> dict[str, Policy]:
        return constant_policies(np.zeros((self.config.n_players, 1)), self.possible_agents)

    def named_policies(self, name: str, protocol: Protocol) -> dict[str, Policy]:
        if name == "theory":
            return constant_policies(TargetTheory(self.config, protocol).predicted_actions(), self.possible_agents)
        return super().named_policies(name, protocol)

    def theory(self, protocol: Protocol) -> TheoryAdapter | None:
        return TargetTheory(self.config, protocol) if not protocol.mechanisms else None

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        return {a: np.zeros(1, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        self.check_running(True)
        joint = np.stack([np.asarray(actions[a], dtype=float) for a in self.agents])[None]
        step = self.episode_batch(self.active_protocol, 1, self._rng).step(joint)
        agents, self.agents = self.agents, []
        observations = {a: np.zeros(1, np.float32) for a in agents}
        rewards = {a: float(step.rewards[0, i]) for i, a in enumerate(agents)}
        return observations, rewards, {a: True for a in agents}, {a: False for a in agents}, {a: {} for a in agents}


@pytest.fixture(autouse=True)
def target_registered(monkeypatch):
    """Register the example game for each test and undo it after (other tests list every registered env)."""
    parallel = dict(pettingzoo.parallel_registry)
    monkeypatch.setattr(registry, "_registered", list(registry._registered))
    fedgames.register("target_v0", entry_point=TargetEnv)
    yield
    pettingzoo.parallel_registry.clear()
    pettingzoo.parallel_registry.update(parallel)


def test_config_checks_each_field_and_names_unknown_ones():
    assert TargetConfig(n_players=3).lam.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"n_players must be an integer >= 2, got 1"):
        TargetConfig(n_players=1)
    with pytest.raises(ValueError, match=r"lam must be one number or one per player \(2\), got 3 values"):
        TargetConfig(lam=[1, 2, 3])
    with pytest.raises(ValueError, match=r"target_v0: unknown parameter 'n_player'; did you mean 'n_players'"):
        fedgames.make("target_v0", n_player=3)
    assert json.loads(json.dumps(TargetConfig(lam=[1, 2]).to_dict())) == {
        "n_players": 2,
        "target": 0.3,
        "lam": [1.0, 2.0],
        "noise": 0.1,
    }


@pytest.mark.parametrize("env_id", ["mean_estimation_v0", "fedsgd_v0", "participation_v0"])
def test_the_built_in_games_implement_the_contract(env_id):
    game = game_of(fedgames.make(env_id, mechanisms=["side_payment:C=0.1"]))
    assert isinstance(game, GameEnv) and isinstance(game.config, GameConfig)
    assert set(game.honest_policies(game.protocol)) == set(game.possible_agents)


def test_another_spelling_of_the_shared_vocabulary_is_named():
    with pytest.raises(ValueError, match=r"unknown parameter 'n_clients'; did you mean 'n_players'\?"):
        fedgames.make("mean_estimation_v0", n_clients=4)
    with pytest.raises(ValueError, match=r"unknown parameter 'horizon'; did you mean 'rounds'\?"):
        fedgames.make("participation_v0", horizon=4)


def test_the_participation_game_speaks_the_shared_vocabulary():
    env = fedgames.make("participation_v0", n_players=4, outside_option=0.1)
    assert len(env.possible_agents) == 4 and np.all(game_of(env).config.outside_option == 0.1)
    with pytest.raises(ValueError, match=r"unknown parameter 'n_clients'; did you mean 'n_players'\?"):
        fedgames.make("participation_v0", n_clients=4)
    with pytest.raises(ValueError, match=r"unknown parameter 'outside'; did you mean 'outside_option'\?"):
        fedgames.make("participation_v0", outside=0.1)


def test_the_participation_theory_speaks_the_shared_vocabulary():
    """Its ``Setting``, built by hand, names the game's spelling too (not Python's plain unexpected keyword)."""
    from fedgames.envs.participation.theory import Setting

    assert Setting(n_players=4, outside_option=0.1).n_players == 4
    with pytest.raises(TypeError, match=r"^Setting: unknown parameter 'n_clients'; did you mean 'n_players'\?"):
        Setting(n_clients=4)
    with pytest.raises(TypeError, match=r"^Setting: unknown parameter 'outside'; did you mean 'outside_option'\?"):
        Setting(outside=0.1)
    with pytest.raises(TypeError, match=r"^Setting: unknown parameter 'kapa'; did you mean 'kappa'\?"):
        Setting(kapa=1.0)


def test_game_of_refuses_an_env_outside_the_contract():
    class Plain:
        unwrapped = object()

    with pytest.raises(ValueError, match="does not implement fedgames.envs.contract.GameEnv"):
        game_of(Plain())  # type: ignore[arg-type]


def test_simulate_runs_the_third_party_game_against_its_closed_form(tmp_path, capsys):
    out = tmp_path / "sim"
    argv = ["simulate", "target_v0", "--profile", "theory", "--episodes", "4000", "--no-plot", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["all_agree"] and [r["quantity"] for r in report["rows"]] == ["reward", "reward"]
    assert report["profile"] == {"alpha": [0.3, 0.3]} and report["config"]["target"] == 0.3
    assert "all closed forms agree" in capsys.readouterr().out


def test_simulate_sees_a_wrong_closed_form(tmp_path, monkeypatch, capsys):
    """The same run fails when the closed form is off: the agreement above is not a foregone conclusion."""
    monkeypatch.setattr(TargetTheory, "expected", lambda self, a: {"reward": (np.full(2, 0.05), "rewards")})
    assert main(["simulate", "target_v0", "--episodes", "4000", "--no-plot", "--quiet"]) == 0
    assert "SOME closed forms disagree" in capsys.readouterr().out


def test_check_with_the_grid_oracle_finds_the_regret_of_honesty(tmp_path):
    """Under a mechanism (a bound on alpha) the game has no closed form: the grid gives the lower bound alone."""
    out = tmp_path / "check"
    argv = ["check", "target_v0", "-m", "bounded_attack:A=0.5", "--oracle", "grid", "--grid-points", "11"]
    argv += ["--grid-episodes", "2000"]
    assert main([*argv, "--episodes", "4000", "--players", "symmetric", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    (player,) = report["players"]  # the two players are one type: equal lam, equal candidate
    assert player["represents"] == ["player_0", "player_1"]
    # honest alpha = 0 against the best reply 0.3: regret lam * 0.3^2 = 0.09, seen within its interval
    low, high = player["ci"]
    assert low <= 0.09 <= high and player["predicted"] is None


def test_check_with_the_grid_oracle_bounds_the_regret_from_the_closed_form(tmp_path):
    """Without mechanisms the game's closed form bounds the grid's slopes (the contract's default slope ranges
    from its payoff): the report brackets the regret of honesty, lam * 0.3^2 = 0.09, from both sides."""
    out = tmp_path / "check"
    argv = ["check", "target_v0", "--oracle", "grid", "--grid-points", "11", "--grid-episodes", "2000"]
    assert main([*argv, "--episodes", "4000", "--players", "symmetric", "--quiet", "--out", str(out)]) == 0
    (player,) = json.loads((out / "report.json").read_text())["players"]
    assert player["ci"][0] <= 0.09 <= player["upper_bound"] and player["verdict"] == "refuted"
    assert player["predicted"] == {"alpha": pytest.approx(0.3)}


def test_train_runs_independent_learners_on_the_third_party_game(tmp_path):
    out = tmp_path / "train"
    argv = ["train", "target_v0", "--rounds", "1", "--steps", "256", "--n-envs", "64", "--eval-episodes", "128"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    history = json.loads((out / "training.json").read_text())
    assert history["config"]["env"]["game"] == TargetConfig().to_dict()
