"""PettingZoo-style module of the participation game: ``env()``, ``parallel_env()``, ``raw_env()``."""

from __future__ import annotations

from typing import Any

from pettingzoo.utils.conversions import parallel_to_aec

from fedgames.envs.base import rounds_from_max_cycles
from fedgames.envs.participation.participation import ParticipationEnv


def parallel_env(max_cycles: int | None = None, **config: Any) -> ParticipationEnv:
    """The native parallel environment (simultaneous moves each round, one step = one round; ``max_cycles``,
    PettingZoo's name for the episode's steps, sets ``rounds``)."""
    return ParticipationEnv(**rounds_from_max_cycles("participation_v0", config, max_cycles))


def raw_env(max_cycles: int | None = None, **config: Any):
    """The AEC view of the parallel environment (PettingZoo's ``parallel_to_aec``)."""
    return parallel_to_aec(parallel_env(max_cycles, **config))


env = raw_env

__all__ = ["ParticipationEnv", "env", "parallel_env", "raw_env"]
