"""Describing a strategy in the game's own terms (mean alpha, beta, bias norm, ...)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.agents.rollout import episode_batches, recorded_play
from fedgames.envs.batch import horizon, resolve_batch_size
from fedgames.envs.policy import Policy
from fedgames.validation import integer


def summarize_actions(action_names: tuple[str, ...], actions: np.ndarray) -> dict[str, float]:
    """Mean of each named component of ``actions`` ``(..., k)``, plus ``bias_norm`` (the mean Euclidean norm of
    the ``b_*`` components) when the game has a bias; NaN for each when ``actions`` holds none (every episode
    behind them diverged)."""
    flat = np.asarray(actions, dtype=float).reshape(-1, len(action_names))
    bias = [k for k, name in enumerate(action_names) if name.startswith("b_")]
    if not flat.size:
        return dict.fromkeys(action_names + (("bias_norm",) if bias else ()), float("nan"))
    summary = {name: float(flat[:, k].mean()) for k, name in enumerate(action_names)}
    if bias:
        summary["bias_norm"] = float(np.linalg.norm(flat[:, bias], axis=1).mean())
    return summary


def summarize_policy(
    env: ParallelEnv,
    player: str,
    policy: Policy,
    episodes: int = 4096,
    seed: int = 0,
    profile: Mapping[str, Policy] | None = None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """:func:`summarize_actions` of ``policy``'s actions as ``player``.

    One-round games: on ``episodes`` freshly drawn observations of ``player``. Multi-round games: a player's later
    observations depend on everyone's play, so ``episodes`` episodes are played with the others following
    ``profile`` (``player``'s own entry, if any, is replaced by ``policy``); the summary is the mean over all steps,
    plus ``<component>_last``, the mean at the last step, over the episodes that did not diverge
    (:mod:`~fedgames.envs.health`).

    The episodes are drawn ``batch_size`` at a time (``None``: the env's default, see
    :func:`~fedgames.envs.batch.resolve_batch_size`). Reproducible by ``seed`` and ``batch_size``; as for
    :func:`~fedgames.agents.rollout.simulate`, another ``batch_size`` draws other episodes unless both take all
    ``episodes`` in one batch.
    """
    episodes = integer("episodes", episodes, 1)
    batch_size = resolve_batch_size(env, batch_size)
    rng = np.random.default_rng(seed)
    index = env.possible_agents.index(player)
    names = env.protocol.action_names
    if horizon(env) == 1:
        batches = episode_batches(env, episodes, batch_size, rng)
        chosen = [policy.act(batch.reset()[:, index], rng) for batch in batches]
        return summarize_actions(names, np.concatenate(chosen))
    if profile is None:
        raise ValueError("summarize_policy: a multi-round game needs the others' policies (profile)")
    actions, _, health = recorded_play(env, {**profile, player: policy}, episodes, batch_size, rng, rng)
    return summarize_steps(names, actions[:, ~health.diverged, index])


def summarize_steps(action_names: tuple[str, ...], actions: np.ndarray) -> dict[str, float]:
    """:func:`summarize_actions` over all steps of ``actions`` ``(steps, ..., k)`` and, for more than one step,
    ``<component>_last``: the mean at the last step (where a multi-round game's terminal utility is decided)."""
    summary = summarize_actions(action_names, actions)
    if len(actions) == 1:
        return summary
    return summary | {f"{name}_last": value for name, value in summarize_actions(action_names, actions[-1]).items()}


__all__ = ["summarize_actions", "summarize_policy", "summarize_steps"]
