"""Scripted agents any game can play: the constant policy and the uniform random one. A game's own scripted agents
live in its folder (the mean-estimation game's :mod:`fedgames.envs.mean_estimation.agents`, the participation
game's :mod:`fedgames.envs.participation.agents`); :mod:`fedgames.agents` re-exports them."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from fedgames.envs.policy import ConstantPolicy, Policy


class RandomPolicy(Policy):
    """Uniform over a bounded ``Box`` action space (PettingZoo's ``action_space(agent).sample()``, batched)."""

    def __init__(self, action_space: spaces.Box) -> None:
        if not action_space.is_bounded():
            raise ValueError("RandomPolicy needs a bounded Box action space")
        self.low = action_space.low.astype(float)
        self.high = action_space.high.astype(float)

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=observations.shape[:-1] + self.low.shape)


__all__ = ["ConstantPolicy", "RandomPolicy"]
