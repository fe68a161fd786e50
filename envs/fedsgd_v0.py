"""PettingZoo-style module of the FedSGD game: ``env()``, ``parallel_env()``, ``raw_env()``."""

from __future__ import annotations

from typing import Any

from pettingzoo.utils.conversions import parallel_to_aec

from fedgames.envs.fedsgd.fedsgd import FedSGDEnv
from fedgames.validation import check_call


def parallel_env(**config: Any) -> FedSGDEnv:
    """The native parallel environment (one step = one FedSGD round). An unknown config key is a ``ValueError``
    naming the close matches."""
    check_call("fedsgd_v0", FedSGDEnv.__init__, config)
    return FedSGDEnv(**config)


def raw_env(**config: Any):
    """The AEC view of the parallel environment (PettingZoo's ``parallel_to_aec``)."""
    return parallel_to_aec(parallel_env(**config))


env = raw_env

__all__ = ["FedSGDEnv", "env", "parallel_env", "raw_env"]
