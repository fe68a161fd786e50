"""The policy interface every fedgames player is played with, and the constant policy any game's scripted profiles
use. It sits beside the game contract (:mod:`fedgames.envs.contract`) so that a game's folder can define its own
scripted agents; :mod:`fedgames.agents` re-exports both and adds the learned and random policies."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


class Policy(ABC):
    """A strategy for one player: observations to actions, batched over any leading axes.

    ``act(obs, rng)`` maps ``(..., obs_dim)`` observations to ``(..., act_dim)`` actions; the batched Monte Carlo
    paths call it once for thousands of episodes. ``predict`` mirrors Stable-Baselines3's signature so scripted
    and learned policies are interchangeable.
    """

    @abstractmethod
    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Actions for a batch of observations."""

    def seed(self, seed: int | None = None) -> None:
        """Seed the generator :meth:`predict` draws from (Gymnasium's ``space.seed``): unseeded, each policy draws
        from fresh OS entropy."""
        self._predict_rng = np.random.default_rng(seed)

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """SB3-style ``(action, state)``. A scripted policy is its own distribution, so ``deterministic`` does not
        change it: a stochastic one draws from its generator (:meth:`seed`). Learned policies
        (:class:`~fedgames.agents.SB3Policy`) pass ``deterministic`` on to their model."""
        if not hasattr(self, "_predict_rng"):
            self.seed()
        return self.act(np.asarray(observation), self._predict_rng), state


class ConstantPolicy(Policy):
    """Always play the same action vector, whatever the observation (any game)."""

    def __init__(self, action: npt.ArrayLike) -> None:
        self.action = np.asarray(action, dtype=float).reshape(-1)

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.broadcast_to(self.action, observations.shape[:-1] + self.action.shape).copy()

    def __repr__(self) -> str:
        return f"ConstantPolicy({self.action.tolist()})"


def constant_policies(actions: np.ndarray, agents: Sequence[str]) -> dict[str, Policy]:
    """One :class:`ConstantPolicy` per agent, agent ``i`` playing row ``i`` of ``actions`` ``(N, k)``."""
    return {agent: ConstantPolicy(row) for agent, row in zip(agents, np.asarray(actions, dtype=float))}


__all__ = ["ConstantPolicy", "Policy", "constant_policies"]
