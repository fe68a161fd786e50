"""Learned policies: a Stable-Baselines3 model seen through the :class:`~fedgames.agents.Policy` interface."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from fedgames.agents.action_scaling import ActionScaler
from fedgames.agents.policy import Policy


class SB3Policy(Policy):
    """An SB3 model trained on the normalised ``[-1, 1]^k`` actions of a best-response view, mapped back onto the
    player's action bounds.

    Args:
        model: a trained SB3 algorithm (anything with ``predict``).
        action_space: the player's ``Box`` action space in the game's own units.
        deterministic: use the policy's mean action (the default for evaluation).
    """

    def __init__(self, model: Any, action_space: spaces.Box, deterministic: bool = True) -> None:
        self.model = model
        self.scaler = ActionScaler(action_space)
        self.deterministic = deterministic

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        flat = np.asarray(observations, dtype=np.float32).reshape(-1, observations.shape[-1])
        normalized, _ = self.model.predict(flat, deterministic=self.deterministic)
        return self.scaler.to_env(normalized).reshape(observations.shape[:-1] + self.scaler.low.shape)

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """The model's own ``predict`` (``deterministic``, recurrent ``state`` and all), in the game's units."""
        normalized, state = self.model.predict(
            np.asarray(observation, dtype=np.float32),
            state=state,
            episode_start=episode_start,
            deterministic=deterministic,
        )
        return self.scaler.to_env(normalized), state
