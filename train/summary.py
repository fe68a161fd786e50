"""What training records after each round: every player's mean strategy and reward on a fixed, seeded
evaluation batch, and the seeds that keep rounds, players and that batch apart."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.agents.policy import Policy
from fedgames.agents.rollout import recorded_play
from fedgames.agents.strategy import summarize_steps
from fedgames.envs.batch import resolve_batch_size
from fedgames.envs.contract import game_of

EVAL_KEY = 0x5EED
"""The seed key of the evaluation batch (:func:`sub_seed`), apart from every round's and player's."""


def sub_seed(seed: int, *keys: int) -> int:
    """A 31-bit seed derived from ``seed`` and ``keys`` (independent streams for rounds, players, evaluation)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0] >> 1)


def honest_policies(env: ParallelEnv) -> dict[str, Policy]:
    """The honest profile as policies (the game's :meth:`~fedgames.envs.contract.GameEnv.honest_policies`)."""
    return game_of(env).honest_policies(env.protocol)


def strategy_summary(
    env: ParallelEnv, policies: Mapping[str, Policy], episodes: int = 4096, seed: int = 0, batch_size: int | None = None
) -> tuple[dict[str, dict[str, float]], dict[str, Any] | None]:
    """Per agent: the mean of every action component over ``episodes`` seeded episodes (all their steps, and the
    last step apart in multi-round games, :func:`~fedgames.agents.strategy.summarize_steps`), ``bias_norm`` when the
    game has a bias, and the mean ``reward`` (the episode return; same episodes for every call with the same
    seed), played ``batch_size`` at a time (``None``: the env's default,
    :func:`~fedgames.envs.batch.resolve_batch_size`); and the batch's divergence.

    Episodes that diverged (:mod:`~fedgames.envs.health`) are left out of every mean (NaN when all did); the
    second value is then their :meth:`~fedgames.envs.health.Health.summary` (how many, through which quantity
    first, from which round), ``None`` when none did.
    """
    names = env.protocol.action_names
    rng, policy_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    actions, returns, health = recorded_play(
        env, policies, episodes, resolve_batch_size(env, batch_size), rng, policy_rng
    )
    kept = ~health.diverged
    rewards = returns[kept].mean(axis=0) if kept.any() else np.full(returns.shape[1], np.nan)
    players = {
        agent: summarize_steps(names, actions[:, kept, i]) | {"reward": float(rewards[i])}
        for i, agent in enumerate(env.possible_agents)
    }
    return players, health.summary() if health.count else None


def mean_over_players(players: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The players' mean ``alpha``, ``beta`` and ``reward`` (those every player has), rounded for a progress bar."""
    keys = [k for k in ("alpha", "beta", "reward") if all(k in p for p in players.values())]
    return {k: round(float(np.mean([p[k] for p in players.values()])), 3) + 0.0 for k in keys}  # + 0.0: no "-0"
