"""Gymnasium spaces derived from a protocol."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from fedgames.envs.protocol import Protocol


def action_box(protocol: Protocol) -> spaces.Box:
    """The float32 action ``Box`` of one player under ``protocol``'s bounds (a bound of ``-0.0`` as ``0.0``:
    Gymnasium's sampler refuses a ``[0, -0.0]`` range as ``high - low < 0``)."""
    low, high = (bound.astype(np.float32) + np.float32(0.0) for bound in (protocol.action_low, protocol.action_high))
    return spaces.Box(low, high, dtype=np.float32)
