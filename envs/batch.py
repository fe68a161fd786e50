"""Batches of independent episodes of a fedgames env, advanced together one env step at a time (SPEC §4: the fast
paths run the stages the PettingZoo env runs).

An :class:`EpisodeBatch` is what the batched tools — Monte Carlo play, the best-response and self-play vectorised
envs, the oracles — drive, whatever the game's length: ``reset()`` starts ``size`` episodes and returns every player's
observation, ``step(actions)`` plays one env step in all of them. Every episode of a batch has the same number of
steps (the game's ``horizon``), so the batch ends as a whole.

- Every game supplies its batch through the contract's ``episode_batch(protocol, size, rng)``
  (:class:`~fedgames.envs.contract.GameEnv`) and says its horizon in ``rounds`` (``fedsgd_v0``: one step = one
  FedSGD round).
- A one-round game with ``sample_world / observe / play`` stages (the mean-estimation game) returns a
  :class:`OneRoundBatch`, a batch whose first step ends it.

How many episodes the tools hold in memory at once is their ``batch_size`` (:func:`resolve_batch_size`): by default
the game's ``default_batch_size`` (``fedsgd_v0``: from its model's size; :data:`BATCH_SIZE` by default).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedgames.envs.health import Health
from fedgames.envs.protocol import Protocol
from fedgames.validation import integer

if TYPE_CHECKING:  # annotations only: the batched games run without PettingZoo
    from pettingzoo import ParallelEnv

BATCH_SIZE = 65_536
"""Episodes played at once when neither the caller nor the env says otherwise (a one-round game's episode is a few
numbers per player: 65,536 of them take megabytes)."""


@dataclass(frozen=True)
class BatchStep:
    """One env step of a batch.

    Attributes:
        observations: ``(size, N, obs_dim)`` after the step (the terminal ones when ``done``).
        rewards: ``(size, N)`` this step's rewards.
        done: whether the step ended the batch's episodes.
        outcome: the game's own record of the step (the mean-estimation ``Outcome``), where it has one.
        payments: ``(size, N)`` what the mechanisms charged in this step, ``None`` without a payment stage.
        health: which episodes have diverged so far (:class:`~fedgames.envs.health.Health`; their rewards and
            payments are 0 from the round that went bad).
    """

    observations: np.ndarray
    rewards: np.ndarray
    done: bool
    outcome: Any = None
    payments: np.ndarray | None = None
    health: Health | None = None


class EpisodeBatch(ABC):
    """``size`` independent episodes of one game under one protocol, advanced together.

    Args:
        protocol: the stages played (the outermost mechanism wrapper's).
        size: episodes.
        rng: the batch's source of randomness (drawn from as the episodes need it).
    """

    def __init__(self, protocol: Protocol, size: int, rng: np.random.Generator) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.protocol, self.size, self.rng = protocol, size, rng

    @abstractmethod
    def reset(self) -> np.ndarray:
        """Start the episodes; every player's first observation ``(size, N, obs_dim)``."""

    @abstractmethod
    def step(self, actions: np.ndarray) -> BatchStep:
        """Play one env step with ``actions`` ``(size, N, k)`` in the env's units."""


class OneRoundBatch(EpisodeBatch):
    """A one-round game's batch: ``reset`` draws the worlds, ``step`` plays them (and ends the episodes).

    Draws from ``rng`` exactly as the earlier batched paths did (``sample_world`` at reset, ``play`` at step), so
    seeded results are unchanged.
    """

    def __init__(self, game: Any, protocol: Protocol, size: int, rng: np.random.Generator) -> None:
        super().__init__(protocol, size, rng)
        self.game = game
        self._world: Any = None

    def reset(self) -> np.ndarray:
        self._world = self.game.sample_world(self.rng, self.size)
        return self.game.observe(self._world)

    def step(self, actions: np.ndarray) -> BatchStep:
        if self._world is None:
            raise RuntimeError("call reset() before step()")
        outcome = self.game.play(self.protocol, self._world, actions, self.rng)
        return BatchStep(
            self.game.observe(self._world), outcome.rewards, True, outcome, outcome.payments, outcome.health
        )


def episode_batch(env: ParallelEnv, size: int, rng: np.random.Generator) -> EpisodeBatch:
    """A batch of ``size`` episodes of ``env`` (mechanism wrappers included: the outermost protocol is played)."""
    from fedgames.envs.contract import game_of

    return game_of(env).episode_batch(env.protocol, size, rng)


class BatchSize(int):
    """A batch size that :func:`resolve_batch_size` has checked against the memory budget. Passed on (to
    :func:`~fedgames.agents.rollout.simulate`, an oracle ...), it is used as it is, not checked again: a second
    reading of the free memory, a little lower, could refuse the default that the first reading allowed."""


def resolve_batch_size(env: ParallelEnv, batch_size: int | None, name: str = "batch_size") -> BatchSize:
    """Episodes to play at once: ``batch_size`` checked (an integer >= 1, else a ``ValueError`` naming ``name``),
    or for ``None`` the game's ``default_batch_size`` (:class:`~fedgames.envs.contract.GameEnv`: :data:`BATCH_SIZE`
    unless the game says otherwise).

    Either is checked against the machine's memory (:func:`fedgames.memory.memory_budget`, from the game's
    ``episode_bytes``) before anything is allocated: the default is lowered to what fits (the episodes are then
    played in more batches), a given ``batch_size`` that does not fit is a ``ValueError`` with the estimate and the
    largest batch that fits, and so is a game of which not even one episode fits. A :class:`BatchSize` (what this
    returns) is returned unchanged."""
    from fedgames.envs.contract import game_of
    from fedgames.memory import check_fits, memory_budget, size_text

    if isinstance(batch_size, BatchSize):
        return batch_size
    game = game_of(env)
    per_episode = game.episode_bytes
    check_fits(f"one episode of {game.metadata['name']}", per_episode)
    budget = memory_budget()
    if budget is None:  # memory unknown: nothing refused
        return BatchSize(game.default_batch_size if batch_size is None else integer(name, batch_size, 1))
    fitting = max(1, budget // per_episode)
    if batch_size is None:
        return BatchSize(min(game.default_batch_size, fitting))
    batch_size = integer(name, batch_size, 1)
    if batch_size > fitting:
        raise ValueError(
            f"{name}={batch_size} needs about {size_text(batch_size * per_episode)} "
            f"({size_text(per_episode)} an episode), more than the memory budget of {size_text(budget)}: "
            f"use {name} <= {fitting}"
        )
    return BatchSize(batch_size)


def learner_games(env: ParallelEnv, n_envs: int | None, default: int, name: str = "n_envs") -> int:
    """Games per vectorised learning step: ``n_envs`` checked (an integer >= 1 whose games fit in memory, else a
    ``ValueError`` naming ``name`` with the estimate, :func:`resolve_batch_size`), or for ``None`` the trainer's
    ``default`` capped at the env's default batch (unchanged for the quadratic and mean estimation, 3 for the
    FEMNIST CNN)."""
    if n_envs is None:
        return min(default, resolve_batch_size(env, None))
    return int(resolve_batch_size(env, n_envs, name))


def horizon(env: ParallelEnv) -> int:
    """Steps per episode: the game's ``rounds`` (1 for a one-round game)."""
    from fedgames.envs.contract import game_of

    return int(game_of(env).rounds)


__all__ = [
    "BATCH_SIZE",
    "BatchSize",
    "BatchStep",
    "EpisodeBatch",
    "OneRoundBatch",
    "episode_batch",
    "horizon",
    "learner_games",
    "resolve_batch_size",
]
