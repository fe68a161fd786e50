"""PettingZoo-style module of the participation game: ``env()``, ``parallel_env()``, ``raw_env()``."""

from __future__ import annotations

from typing import Any

from pettingzoo.utils.conversions import parallel_to_aec

from fedgames.envs.participation.participation import ParticipationEnv


def parallel_env(**config: Any) -> ParticipationEnv:
    """The native parallel environment (simultaneous moves each round)."""
    return ParticipationEnv(**config)


def raw_env(**config: Any):
    """The AEC view of the parallel environment (PettingZoo's ``parallel_to_aec``)."""
    return parallel_to_aec(parallel_env(**config))


env = raw_env

__all__ = ["ParticipationEnv", "env", "parallel_env", "raw_env"]
