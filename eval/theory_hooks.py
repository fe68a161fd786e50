"""Where a game has closed forms, the equilibrium check uses them: predicted best responses, exact payoffs,
Lipschitz constants. One entry per game."""

from __future__ import annotations

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.agents.policy import Policy
from fedgames.agents.scripted import ConstantPolicy, profile_policies
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


def honest_policies_for(env: ParallelEnv) -> dict[str, Policy]:
    """Honest play as one policy per agent: the mean-estimation game's :func:`honest_profile_for`; in the FedSGD
    game ``alpha = 0`` in every round (send the true gradient); in the participation game taking part with
    ``u = 0`` every round."""
    from fedgames.envs.fedsgd.game import FedSGDGame
    from fedgames.envs.participation.game import ParticipationGame

    game = env.unwrapped.game  # type: ignore[attr-defined]
    if isinstance(game, MeanEstimationGame):
        return dict(profile_policies(honest_profile_for(env), env.possible_agents))
    if isinstance(game, FedSGDGame):
        return {agent: ConstantPolicy(np.zeros(1)) for agent in env.possible_agents}
    if isinstance(game, ParticipationGame):
        return {agent: ConstantPolicy(np.array([1.0, 0.0])) for agent in env.possible_agents}
    raise ValueError(f"no honest profile is known for {type(game).__name__}")
