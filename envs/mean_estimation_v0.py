"""PettingZoo-style module of the mean-estimation game: ``env()``, ``parallel_env()``, ``raw_env()``."""

from __future__ import annotations

from typing import Any

from pettingzoo.utils.conversions import parallel_to_aec

from fedgames.envs.mean_estimation.mean_estimation import MeanEstimationEnv


def parallel_env(**config: Any) -> MeanEstimationEnv:
    """The native parallel environment (the game is simultaneous-move)."""
    return MeanEstimationEnv(**config)


def raw_env(**config: Any):
    """The AEC view of the parallel environment (PettingZoo's ``parallel_to_aec``)."""
    return parallel_to_aec(parallel_env(**config))


env = raw_env

__all__ = ["MeanEstimationEnv", "env", "parallel_env", "raw_env"]
