"""Describing a strategy in the game's own terms (mean alpha, beta, bias norm, ...)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.agents.policy import Policy
from fedgames.envs.batch import episode_batch, horizon
from fedgames.eval.montecarlo import rollout


def summarize_actions(action_names: tuple[str, ...], actions: np.ndarray) -> dict[str, float]:
    """Mean of each named component of ``actions`` ``(..., k)``, plus ``bias_norm`` (the mean Euclidean norm of
    the ``b_*`` components) when the game has a bias."""
    flat = np.asarray(actions, dtype=float).reshape(-1, len(action_names))
    summary = {name: float(flat[:, k].mean()) for k, name in enumerate(action_names)}
    bias = [k for k, name in enumerate(action_names) if name.startswith("b_")]
    if bias:
        summary["bias_norm"] = float(np.linalg.norm(flat[:, bias], axis=1).mean())
    return summary


def summarize_policy(env: ParallelEnv, player: str, policy: Policy, episodes: int = 4096, seed: int = 0,
                     profile: Mapping[str, Policy] | None = None) -> dict[str, float]:
    """:func:`summarize_actions` of ``policy``'s actions as ``player``.

    One-round games: on ``episodes`` freshly drawn observations of ``player``. Multi-round games: a player's later
    observations depend on everyone's play, so ``episodes`` episodes are played with the others following
    ``profile`` (``player``'s own entry, if any, is replaced by ``policy``); the summary is the mean over all steps,
    plus ``<component>_last``, the mean at the last step.
    """
    rng = np.random.default_rng(seed)
    index = env.possible_agents.index(player)
    names = env.protocol.action_names  # type: ignore[attr-defined]
    batch = episode_batch(env, episodes, rng)
    if horizon(env) == 1:
        return summarize_actions(names, policy.act(batch.reset()[:, index], rng))
    if profile is None:
        raise ValueError("summarize_policy: a multi-round game needs the others' policies (profile)")
    played = rollout(batch, {**profile, player: policy}, list(env.possible_agents), rng, record_actions=True)
    return summarize_steps(names, played.actions[:, :, index])  # type: ignore[index]


def summarize_steps(action_names: tuple[str, ...], actions: np.ndarray) -> dict[str, float]:
    """:func:`summarize_actions` over all steps of ``actions`` ``(steps, ..., k)`` and, for more than one step,
    ``<component>_last``: the mean at the last step (where a multi-round game's terminal utility is decided)."""
    summary = summarize_actions(action_names, actions)
    if len(actions) == 1:
        return summary
    return summary | {f"{name}_last": value for name, value in summarize_actions(action_names, actions[-1]).items()}
