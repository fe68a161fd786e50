"""Describing a strategy in the game's own terms (mean alpha, beta, bias norm, ...)."""

from __future__ import annotations

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.agents.policy import Policy


def summarize_actions(action_names: tuple[str, ...], actions: np.ndarray) -> dict[str, float]:
    """Mean of each named component of ``actions`` ``(..., k)``, plus ``bias_norm`` (the mean Euclidean norm of
    the ``b_*`` components) when the game has a bias."""
    flat = np.asarray(actions, dtype=float).reshape(-1, len(action_names))
    summary = {name: float(flat[:, k].mean()) for k, name in enumerate(action_names)}
    bias = [k for k, name in enumerate(action_names) if name.startswith("b_")]
    if bias:
        summary["bias_norm"] = float(np.linalg.norm(flat[:, bias], axis=1).mean())
    return summary


def summarize_policy(env: ParallelEnv, player: str, policy: Policy, episodes: int = 4096,
                     seed: int = 0) -> dict[str, float]:
    """:func:`summarize_actions` of ``policy``'s actions on ``episodes`` freshly drawn observations of ``player``."""
    game = env.unwrapped.game  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    observations = game.observe(game.sample_world(rng, episodes))[:, env.possible_agents.index(player)]
    return summarize_actions(env.protocol.action_names, policy.act(observations, rng))  # type: ignore[attr-defined]
