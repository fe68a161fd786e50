"""Mapping between SB3's symmetric ``[-1, 1]^k`` actions and a player's bounded action ``Box``."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces


class ActionScaler:
    """Affine map between SB3's ``[-1, 1]^k`` and a bounded ``Box``."""

    def __init__(self, box: spaces.Box) -> None:
        if not box.is_bounded():
            raise ValueError("the best-response view needs a bounded Box action space")
        self.low = box.low.astype(np.float64)
        self.high = box.high.astype(np.float64)
        self.normalized = spaces.Box(-1.0, 1.0, shape=box.shape, dtype=np.float32)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        """``[-1, 1]^k`` (clipped) -> the env's bounds."""
        unit = (np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) + 1.0) / 2.0
        return self.low + unit * (self.high - self.low)

    def to_normalized(self, action: np.ndarray) -> np.ndarray:
        """The env's bounds -> ``[-1, 1]^k`` (a zero-width range maps to 0)."""
        wide = self.high > self.low
        width = np.where(wide, self.high - self.low, 1.0)
        return np.where(wide, 2.0 * (np.asarray(action, dtype=np.float64) - self.low) / width - 1.0, 0.0)
