"""Where a game has closed forms, the equilibrium check uses them: predicted best responses, exact payoffs,
Lipschitz constants. One entry per game."""

from __future__ import annotations

from pettingzoo import ParallelEnv

from fedgames.envs.mean_estimation.game import MeanEstimationGame
from fedgames.envs.mean_estimation.theory import EnvTheory, Profile, honest_profile


def closed_form(env: ParallelEnv) -> EnvTheory | None:
    """The closed forms of ``env`` with its mechanisms, or ``None`` where there are none."""
    if isinstance(env.unwrapped.game, MeanEstimationGame):  # type: ignore[attr-defined]
        try:
            return EnvTheory(env)
        except ValueError:
            return None
    return None


def honest_profile_for(env: ParallelEnv) -> Profile:
    """``alpha = b = 0`` with each player's best defence against honest others (``beta = 0``, or ``C/(C+1)``
    under the noisy response); ``beta = 0`` where the mechanisms have no closed form."""
    game = env.unwrapped.game  # type: ignore[attr-defined]
    closed = closed_form(env)
    return honest_profile(closed.setting, game.dim) if closed else Profile.symmetric(game.n_players, game.dim)
