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

from typing import Any

import numpy as np
from gymnasium import spaces

from fedgames.envs.base import ProtocolEnv, stack_actions
from fedgames.envs.mean_estimation.game import MeanEstimationGame, Outcome, World
from fedgames.envs.protocol import Protocol
from fedgames.envs.spaces import action_box
from fedgames.validation import check_call


class MeanEstimationEnv(ProtocolEnv):
    """PettingZoo parallel env of the mean-estimation game; config as :class:`MeanEstimationGame`."""

    metadata = {"name": "mean_estimation_v0", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(self, render_mode: str | None = None, **config: Any) -> None:
        self.set_render_mode(render_mode)
        check_call("mean_estimation_v0", MeanEstimationGame.__init__, config)
        self.game = MeanEstimationGame(**config)
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

    def _observation_box(self) -> spaces.Box:
        low = np.full(self.game.obs_dim, -np.inf, dtype=np.float32)
        low[-1] = 0.0
        return spaces.Box(low, np.full(self.game.obs_dim, np.inf, dtype=np.float32), dtype=np.float32)

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._world = self.game.sample_world(self._rng, 1)
        self._last = None
        obs = self.game.observe(self._world)[0].astype(np.float32)
        return {a: obs[i] for i, a in enumerate(self.agents)}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        self.check_running(self._world is not None)
        protocol = self.active_protocol
        batch = stack_actions(actions, self.agents, len(protocol.action_names))
        outcome = self.game.play(protocol, self._world, batch, self._rng)
        self._last = outcome
        obs = self.game.observe(self._world)[0].astype(np.float32)
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

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._last is None:
            return "mean_estimation_v0: no step played yet"
        rows = [f"server estimate {np.array2string(self._last.aggregate[0], precision=3)}"]
        for i, agent in enumerate(self.possible_agents):
            rows.append(f"{agent}: sq_error {self._last.sq_error[0, i]:.4f}  reward {self._last.rewards[0, i]:+.4f}")
        return "\n".join(rows)

    def close(self) -> None:
        pass
