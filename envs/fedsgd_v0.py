"""PettingZoo-style module of the FedSGD game: ``env()``, ``parallel_env()``, ``raw_env()``."""

from __future__ import annotations

from typing import Any

from pettingzoo.utils.conversions import parallel_to_aec

from fedgames.envs.base import rounds_from_max_cycles
from fedgames.envs.fedsgd.fedsgd import FedSGDEnv


def parallel_env(max_cycles: int | None = None, **config: Any) -> FedSGDEnv:
    """The native parallel environment (one step = one FedSGD round; ``max_cycles``, PettingZoo's name for the
    episode's steps, sets ``rounds``). An unknown config key is a ``ValueError`` naming the close matches
    (:meth:`~fedgames.envs.config.GameConfig.from_kwargs`)."""
    return FedSGDEnv(**rounds_from_max_cycles("fedsgd_v0", config, max_cycles))


def raw_env(max_cycles: int | None = None, **config: Any):
    """The AEC view of the parallel environment (PettingZoo's ``parallel_to_aec``)."""
    return parallel_to_aec(parallel_env(max_cycles, **config))


env = raw_env

__all__ = ["FedSGDEnv", "env", "parallel_env", "raw_env"]
