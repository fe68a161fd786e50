"""The policy interface every fedgames agent implements (scripted now, learned ones later)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Policy(ABC):
    """A strategy for one player: observations to actions, batched over any leading axes.

    ``act(obs, rng)`` maps ``(..., obs_dim)`` observations to ``(..., act_dim)`` actions; the batched Monte Carlo
    paths call it once for thousands of episodes. ``predict`` mirrors Stable-Baselines3's signature so scripted
    and learned policies are interchangeable.
    """

    @abstractmethod
    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Actions for a batch of observations."""

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """SB3-style ``(action, state)``; stochastic policies draw from a generator seeded at construction."""
        if not hasattr(self, "_predict_rng"):
            self._predict_rng = np.random.default_rng(0)
        return self.act(np.asarray(observation), self._predict_rng), state
