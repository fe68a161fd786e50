"""Scripted agents of the mean-estimation game: fixed ``[alpha, beta, b]`` strategies, honesty and the closed form's
exact best response ([H] Lemma C.2 and the attack of :func:`~fedgames.envs.mean_estimation.theory.best_response`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pettingzoo import ParallelEnv

from fedgames.envs.mean_estimation.theory import Profile, Setting, best_response
from fedgames.envs.policy import ConstantPolicy


class FixedPolicy(ConstantPolicy):
    """Always play ``[alpha, beta, b_1 .. b_d]`` in the mean-estimation game."""

    def __init__(self, alpha: float, beta: float, bias: npt.ArrayLike) -> None:
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.bias = np.asarray(bias, dtype=float).reshape(-1)
        super().__init__(np.concatenate([[self.alpha, self.beta], self.bias]))

    def __repr__(self) -> str:
        return f"FixedPolicy(alpha={self.alpha:g}, beta={self.beta:g}, bias={self.bias.tolist()})"


class HonestPolicy(FixedPolicy):
    """``alpha = beta = b = 0``: send the sample mean, trust the server."""

    def __init__(self, dim: int) -> None:
        super().__init__(0.0, 0.0, np.zeros(dim))


def profile_policies(profile: Profile, agents: Sequence[str]) -> dict[str, FixedPolicy]:
    """One :class:`FixedPolicy` per agent playing ``profile``."""
    return {a: FixedPolicy(profile.alpha[i], profile.beta[i], profile.bias[i]) for i, a in enumerate(agents)}


def theory_best_response(env: ParallelEnv, profile: Profile, player: int | str) -> FixedPolicy:
    """Player ``player``'s (an index or an agent name) exact best response to the others in ``profile`` under
    ``env``'s mechanisms.

    The defence is Lemma C.2's ``beta`` (Thm 5.1's under the noisy response), the attack the one the closed form
    prescribes (:func:`fedgames.envs.mean_estimation.theory.best_response`), within the env's action bounds.
    """
    if isinstance(player, str):
        agents = list(env.possible_agents)
        if player not in agents:
            raise ValueError(f"player must be an index or one of {agents}, got {player!r}")
        player = agents.index(player)
    protocol = env.protocol
    alpha_max = float(protocol.action_high[protocol.action_index("alpha")])
    bias_max = float(protocol.action_high[protocol.action_index("b_1")])
    response = best_response(profile, Setting.from_env(env), player, alpha_max, bias_max)
    return FixedPolicy(response.alpha[player], response.beta[player], response.bias[player])


__all__ = ["FixedPolicy", "HonestPolicy", "profile_policies", "theory_best_response"]
