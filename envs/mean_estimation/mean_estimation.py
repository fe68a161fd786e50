"""``mean_estimation_v0``: the mean-estimation game of [H] §4 as a PettingZoo ``ParallelEnv`` (SPEC §1).

One step per episode. Each player observes its own sample mean and sample variance, then acts with
``[alpha, beta, b_1 .. b_d]``: aggressiveness ``alpha in [0, alpha_max]``, cautiousness ``beta in [0, 1]`` and bias
``b in [-bias_max, bias_max]^d``. Rewards follow eq. (2) minus any payments a mechanism charges.
``infos[agent]`` after the step holds ``message``, ``estimate`` (theta_i), ``sq_error`` (||theta_i - mu||^2),
``server_estimate``, ``diverged`` (a non-finite estimate, error, payment or reward: then ``divergence`` names the
first quantity and the round, and the rewards are 0; :mod:`~fedgames.envs.health`) and, when a mechanism charges
one, ``payment``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from fedgames.envs.base import stack_actions
from fedgames.envs.batch import OneRoundBatch
from fedgames.envs.contract import GameEnv, per_player_values
from fedgames.envs.mean_estimation import theory
from fedgames.envs.mean_estimation.agents import profile_policies
from fedgames.envs.mean_estimation.closed_form import MeanEstimationTheory
from fedgames.envs.mean_estimation.game import MeanEstimationConfig, MeanEstimationGame, Outcome, World
from fedgames.envs.policy import Policy
from fedgames.envs.protocol import Protocol
from fedgames.envs.spaces import action_box
from fedgames.validation import integer


class MeanEstimationEnv(GameEnv):
    """PettingZoo parallel env of the mean-estimation game; config as :class:`MeanEstimationConfig`."""

    metadata = {"name": "mean_estimation_v0", "render_modes": GameEnv.RENDER_MODES, "is_parallelizable": True}
    profile_names = ("honest", "theory")
    profile_keys = ("alpha", "beta")
    grid_components = ("alpha", "beta")

    def __init__(self, render_mode: str | None = None, **config: Any) -> None:
        self.set_render_mode(render_mode)
        self.config = MeanEstimationConfig.from_kwargs(**config)
        self.game = MeanEstimationGame(self.config)
        self.protocol: Protocol = self.game.protocol()
        self.possible_agents = [f"player_{i}" for i in range(self.game.n_players)]
        self.agents: list[str] = []
        self.observation_spaces = {a: self._observation_box() for a in self.possible_agents}
        self.action_spaces = {a: action_box(self.protocol) for a in self.possible_agents}
        n, d = self.game.n_players, self.game.dim
        state_low = np.concatenate([np.full(d + n * d, -np.inf), np.zeros(n)]).astype(np.float32)
        self.state_space = spaces.Box(state_low, np.full(d + n * d + n, np.inf, dtype=np.float32), dtype=np.float32)
        self._rng = np.random.default_rng()
        self._world: World | None = None
        self._last: Outcome | None = None

    def episode_batch(self, protocol: Protocol, size: int, rng: np.random.Generator) -> OneRoundBatch:
        """``size`` one-round episodes under ``protocol`` (:class:`~fedgames.envs.batch.OneRoundBatch`)."""
        return OneRoundBatch(self.game, protocol, size, rng)

    def theory(self, protocol: Protocol) -> MeanEstimationTheory | None:
        """The closed forms under ``protocol`` (``None`` for mechanisms without one, e.g. robust aggregation)."""
        try:
            return MeanEstimationTheory(self.game, protocol)
        except ValueError:
            return None

    def honest_policies(self, protocol: Protocol) -> dict[str, Policy]:
        """``alpha = b = 0`` with each player's best defence against honest others (``beta = 0``, or ``C/(C+1)``
        under the noisy response: Lemma C.2, Thm 5.1); ``beta = 0`` where the mechanisms have no closed form."""
        closed = self.theory(protocol)
        profile = (
            theory.honest_profile(closed.setting, self.game.dim)
            if closed is not None
            else theory.Profile.symmetric(self.game.n_players, self.game.dim)
        )
        return dict(profile_policies(profile, self.possible_agents))

    def named_policies(self, name: str, protocol: Protocol) -> dict[str, Policy]:
        """``honest`` or ``theory``: the equilibrium the closed form predicts (best-response iteration from honesty,
        :func:`~fedgames.envs.mean_estimation.theory.predicted_equilibrium`)."""
        if name != "theory":
            return super().named_policies(name, protocol)
        closed = self.theory(protocol)
        if closed is None:
            raise ValueError("theory: these mechanisms have no closed form; give honest, a file or values")
        return self.policies_from_actions(closed.predicted_actions())

    def policies_from_values(self, values: Mapping[str, Any]) -> dict[str, Policy]:
        """``alpha``, ``beta`` (one value or one per player) and ``bias`` (one vector, or one per player)."""
        n, d = self.game.n_players, self.game.dim
        profile = theory.Profile(
            per_player_values(values, "alpha", (n,)),
            per_player_values(values, "beta", (n,)),
            per_player_values(values, "bias", (n, d)),
        )
        return dict(profile_policies(profile, self.possible_agents))

    def policies_from_actions(self, actions: np.ndarray) -> dict[str, Policy]:
        """One ``FixedPolicy`` per player, from actions ``(N, d + 2)``."""
        return dict(profile_policies(theory.EnvTheory.profile(actions), self.possible_agents))

    def _observation_box(self) -> spaces.Box:
        low = np.full(self.game.obs_dim, -np.inf, dtype=np.float32)
        low[-1] = 0.0
        return spaces.Box(low, np.full(self.game.obs_dim, np.inf, dtype=np.float32), dtype=np.float32)

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(integer("seed", seed, 0))  # Gymnasium: seeds are >= 0
        self.agents = list(self.possible_agents)
        self._world = self.game.sample_world(self._rng, 1)
        self._last = None
        obs = self.game.observe(self._world)[0].astype(np.float32)
        return {a: obs[i] for i, a in enumerate(self.agents)}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        world = self._world
        self.check_running(world is not None)
        assert world is not None  # check_running raised otherwise
        protocol = self.active_protocol
        batch = stack_actions(actions, self.agents, len(protocol.action_names))
        outcome = self.game.play(protocol, world, batch, self._rng)
        self._last = outcome
        obs = self.game.observe(world)[0].astype(np.float32)
        agents = self.agents
        observations = {a: obs[i] for i, a in enumerate(agents)}
        rewards = {a: float(outcome.rewards[0, i]) for i, a in enumerate(agents)}
        terminations = {a: True for a in agents}
        truncations = {a: False for a in agents}
        infos = {a: self._info(outcome, i) for i, a in enumerate(agents)}
        self.agents = []
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """The global state (PettingZoo's ``state()``, for centralised critics): ``[mu, xbar_1 .. xbar_N,
        sample_var_1 .. sample_var_N]``, the episode's hidden mean and every player's private data."""
        if self._world is None:
            raise RuntimeError("state() called before reset()")
        w = self._world
        return np.concatenate([w.mu[0], w.xbar[0].ravel(), w.sample_var[0]]).astype(np.float32)

    @staticmethod
    def _info(outcome: Outcome, i: int) -> dict[str, Any]:
        info: dict[str, Any] = {
            "message": outcome.messages[0, i].copy(),
            "estimate": outcome.estimates[0, i].copy(),
            "sq_error": float(outcome.sq_error[0, i]),
            "server_estimate": outcome.aggregate[0].copy(),
        } | outcome.health.infos(0)
        if outcome.payments is not None:
            info["payment"] = float(outcome.payments[0, i])
        return info

    def render_text(self) -> str:
        if self._last is None:
            return "mean_estimation_v0: no step played yet"
        rows = [f"server estimate {np.array2string(self._last.aggregate[0], precision=3)}"]
        for i, agent in enumerate(self.possible_agents):
            rows.append(f"{agent}: sq_error {self._last.sq_error[0, i]:.4f}  reward {self._last.rewards[0, i]:+.4f}")
        return "\n".join(rows)

    def close(self) -> None:
        pass
