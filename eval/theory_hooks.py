"""Where a game has closed forms, the equilibrium check uses them: predicted best responses, exact payoffs,
Lipschitz constants. One entry per game."""

from __future__ import annotations

from pettingzoo import ParallelEnv

from fedgames.envs.mean_estimation.game import MeanEstimationGame
from fedgames.envs.mean_estimation.theory import EnvTheory


def closed_form(env: ParallelEnv) -> EnvTheory | None:
    """The closed forms of ``env`` with its mechanisms, or ``None`` where there are none."""
    if isinstance(env.unwrapped.game, MeanEstimationGame):  # type: ignore[attr-defined]
        try:
            return EnvTheory(env)
        except ValueError:
            return None
    return None
