"""Gymnasium spaces derived from a protocol."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from fedgames.envs.protocol import Protocol


def action_box(protocol: Protocol) -> spaces.Box:
    """The float32 action ``Box`` of one player under ``protocol``'s bounds."""
    return spaces.Box(protocol.action_low.astype(np.float32), protocol.action_high.astype(np.float32), dtype=np.float32)
