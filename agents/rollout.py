"""Monte Carlo play of fedgames games with fixed policies: batched (any game :func:`~fedgames.envs.batch.episode_batch`
knows, one-round or multi-round), and the plain PettingZoo loop (one-round games)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv
from tqdm.auto import tqdm

from fedgames.envs.batch import EpisodeBatch, episode_batch, resolve_batch_size
from fedgames.envs.health import Health
from fedgames.envs.policy import Policy


@dataclass(frozen=True)
class Episodes:
    """Per-episode results, arrays ``(episodes, N)``: ``rewards`` are the episode returns (the sum over its steps),
    ``payments`` the sum of what the mechanisms charged (``None`` when none charges), ``sq_error`` the
    mean-estimation game's ``||theta_i - mu||^2`` (``None`` for games without one) and ``health`` which episodes
    diverged (:mod:`~fedgames.envs.health`: their rewards and payments are 0; ``None``: none did)."""

    rewards: np.ndarray
    sq_error: np.ndarray | None
    payments: np.ndarray | None
    health: Health | None = None

    @property
    def kept(self) -> np.ndarray:
        """``(episodes,)`` bool: the episodes that did not diverge, those the means are taken over."""
        return np.ones(self.rewards.shape[0], dtype=bool) if self.health is None else ~self.health.diverged

    @property
    def diverged(self) -> int:
        """How many episodes diverged."""
        return 0 if self.health is None else self.health.count

    def mean_and_se(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-player sample mean and standard error of ``rewards``, ``sq_error`` or ``payments`` over the episodes
        that did not diverge (:attr:`kept`; NaN with fewer than 2 of them)."""
        values = getattr(self, field)
        if values is None:
            raise ValueError(f"no {field} were recorded")
        values = values[self.kept]
        if values.shape[0] < 2:
            nan = np.full(values.shape[1:], np.nan)
            return nan, nan.copy()
        return values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])


@dataclass(frozen=True)
class Rollout:
    """A batch of episodes played to the end: ``returns`` ``(size, N)``, ``payments`` summed over the steps (or
    ``None``), the last step's game record ``outcome``, when recorded every step's ``actions``
    ``(steps, size, N, k)``, and which episodes diverged (``health``, ``None`` for a batch that does not say)."""

    returns: np.ndarray
    payments: np.ndarray | None
    outcome: Any
    actions: np.ndarray | None
    health: Health | None = None


def rollout(
    batch: EpisodeBatch,
    policies: Mapping[str, Policy],
    agents: list[str],
    rng: np.random.Generator,
    record_actions: bool = False,
) -> Rollout:
    """Play ``batch`` from reset to its end, each agent's policy acting on its own observations with ``rng``."""
    observations = batch.reset()
    returns, payments, steps = None, None, []
    while True:
        actions = np.empty(observations.shape[:2] + (len(batch.protocol.action_names),))
        for i, agent in enumerate(agents):
            actions[:, i] = policies[agent].act(observations[:, i], rng)
        step = batch.step(actions)
        returns = step.rewards if returns is None else returns + step.rewards
        if step.payments is not None:
            payments = step.payments if payments is None else payments + step.payments
        if record_actions:
            steps.append(actions)
        if step.done:
            actions_played = np.stack(steps) if record_actions else None
            return Rollout(returns, payments, step.outcome, actions_played, step.health)
        observations = step.observations


def episode_batches(
    env: ParallelEnv, episodes: int, batch_size: int, rng: np.random.Generator
) -> Iterator[EpisodeBatch]:
    """``episodes`` episodes of ``env`` as consecutive batches of ``batch_size`` (the last one smaller), each made
    when the iteration reaches it, all drawing from ``rng``."""
    for start in range(0, episodes, batch_size):
        yield episode_batch(env, min(batch_size, episodes - start), rng)


def recorded_play(
    env: ParallelEnv,
    policies: Mapping[str, Policy],
    episodes: int,
    batch_size: int,
    rng: np.random.Generator,
    policy_rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, Health]:
    """Every step's actions ``(steps, episodes, N, k)``, the returns ``(episodes, N)`` and which episodes diverged
    (:class:`~fedgames.envs.health.Health`) of ``episodes`` episodes played ``batch_size`` at a time
    (:func:`episode_batches` from ``rng``, the policies acting with ``policy_rng``)."""
    played = [
        rollout(batch, policies, list(env.possible_agents), policy_rng, record_actions=True)
        for batch in episode_batches(env, episodes, batch_size, rng)
    ]
    return (
        np.concatenate([p.actions for p in played], axis=1),
        np.concatenate([p.returns for p in played]),
        _joined_health(played),
    )


def simulate(
    env: ParallelEnv,
    policies: Mapping[str, Policy],
    episodes: int,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> Episodes:
    """Play ``episodes`` independent episodes through the env's batched stages (the vectorised path).

    Runs exactly the stages the PettingZoo env runs (an :class:`~fedgames.envs.batch.EpisodeBatch` with the
    outermost wrapper's protocol), ``batch_size`` episodes at a time (an integer >= 1; ``None``: the env's default,
    see :func:`~fedgames.envs.batch.resolve_batch_size`: 65,536 for a one-round game, fewer for ``fedsgd_v0`` with
    a large model). Reproducible by ``seed`` and ``batch_size``: each batch draws its episodes as a whole, so
    another ``batch_size`` plays other (identically distributed) episodes unless both cover ``episodes`` in one
    batch. Episodes that diverge (a non-finite parameter, loss, payment or reward, :mod:`~fedgames.envs.health`)
    are kept, with rewards of 0, and counted in ``health``; :meth:`Episodes.mean_and_se` leaves them out.
    """
    if episodes < 2:
        raise ValueError(f"episodes must be >= 2, got {episodes}")
    batch_size = resolve_batch_size(env, batch_size)
    agents = env.possible_agents
    _check_policies(policies, agents)
    rng, policy_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    batches = episode_batches(env, episodes, batch_size, rng)
    chunks = [
        rollout(batch, policies, agents, policy_rng)
        for batch in tqdm(
            batches, desc="episodes", unit="batch", total=-(-episodes // batch_size), disable=not progress
        )
    ]
    errors: list[np.ndarray | None] = [getattr(c.outcome, "sq_error", None) for c in chunks]
    return Episodes(
        rewards=np.concatenate([c.returns for c in chunks]),
        sq_error=_joined(errors),
        payments=_joined([c.payments for c in chunks]),
        health=_joined_health(chunks),
    )


def simulate_loop(env: ParallelEnv, policies: Mapping[str, Policy], episodes: int, seed: int = 0) -> Episodes:
    """The same through the PettingZoo API, one ``reset``/``step`` per episode (the reference, and the slow path)."""
    agents = env.possible_agents
    _check_policies(policies, agents)
    rng = np.random.default_rng(seed)
    rewards, sq_error, payments = [], [], []
    health = Health.start(episodes)
    observations, _ = env.reset(seed=seed)
    for episode in range(episodes):
        actions = {a: policies[a].act(observations[a][None].astype(float), rng)[0].astype(np.float32) for a in agents}
        _, reward, _, _, infos = env.step(actions)
        rewards.append([reward[a] for a in agents])
        sq_error.append([infos[a]["sq_error"] for a in agents])
        payments.append([infos[a].get("payment", np.nan) for a in agents])
        record = infos[agents[0]].get("divergence")
        if record is not None:
            health.flag(record["round"], record["quantity"], np.arange(episodes) == episode)
        observations, _ = env.reset()
    paid = np.array(payments)
    return Episodes(np.array(rewards), np.array(sq_error), None if np.isnan(paid).all() else paid, health)


def _check_policies(policies: Mapping[str, Policy], agents: list[str]) -> None:
    missing = [a for a in agents if a not in policies]
    if missing:
        raise ValueError(f"policies missing for agents {missing}")


__all__ = ["Episodes", "Rollout", "episode_batches", "recorded_play", "rollout", "simulate", "simulate_loop"]


def _joined(parts: list[np.ndarray | None]) -> np.ndarray | None:
    """The batches' arrays end to end, or ``None`` where the game records none (then no batch has one)."""
    present = [p for p in parts if p is not None]
    return np.concatenate(present) if present else None


def _joined_health(parts: list[Rollout]) -> Health:
    """The batches' :class:`~fedgames.envs.health.Health` end to end (a batch that does not say: all healthy)."""
    return Health.concatenate([p.health if p.health is not None else Health.start(p.returns.shape[0]) for p in parts])
