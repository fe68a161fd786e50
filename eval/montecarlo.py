"""Monte Carlo play of one-round fedgames games with fixed policies: batched, and the plain PettingZoo loop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pettingzoo import ParallelEnv
from tqdm.auto import tqdm

from fedgames.agents.policy import Policy


@dataclass(frozen=True)
class Episodes:
    """Per-episode results, arrays ``(episodes, N)``; ``payments`` is ``None`` when no mechanism charges."""

    rewards: np.ndarray
    sq_error: np.ndarray
    payments: np.ndarray | None

    def mean_and_se(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-player sample mean and standard error of ``rewards``, ``sq_error`` or ``payments``."""
        values = getattr(self, field)
        if values is None:
            raise ValueError(f"no {field} were recorded")
        return values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])


def simulate(
    env: ParallelEnv,
    policies: Mapping[str, Policy],
    episodes: int,
    seed: int = 0,
    batch_size: int = 65_536,
    progress: bool = False,
) -> Episodes:
    """Play ``episodes`` independent episodes through the env's batched stages (the vectorised path).

    Runs exactly the stages the PettingZoo env runs (``env.unwrapped.game.play`` with the outermost wrapper's
    protocol), ``batch_size`` episodes at a time. Reproducible by ``seed``.
    """
    if episodes < 2:
        raise ValueError(f"episodes must be >= 2, got {episodes}")
    game, protocol = env.unwrapped.game, env.protocol  # type: ignore[attr-defined]
    agents = env.possible_agents
    _check_policies(policies, agents)
    rng, policy_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    chunks = []
    for start in tqdm(range(0, episodes, batch_size), desc="episodes", unit="batch", disable=not progress):
        size = min(batch_size, episodes - start)
        world = game.sample_world(rng, size)
        observations = game.observe(world)
        actions = np.empty((size, len(agents), len(protocol.action_names)))
        for i, agent in enumerate(agents):
            actions[:, i] = policies[agent].act(observations[:, i], policy_rng)
        chunks.append(game.play(protocol, world, actions, rng))
    payments = None if chunks[0].payments is None else np.concatenate([c.payments for c in chunks])
    return Episodes(
        rewards=np.concatenate([c.rewards for c in chunks]),
        sq_error=np.concatenate([c.sq_error for c in chunks]),
        payments=payments,
    )


def simulate_loop(env: ParallelEnv, policies: Mapping[str, Policy], episodes: int, seed: int = 0) -> Episodes:
    """The same through the PettingZoo API, one ``reset``/``step`` per episode (the reference, and the slow path)."""
    agents = env.possible_agents
    _check_policies(policies, agents)
    rng = np.random.default_rng(seed)
    rewards, sq_error, payments = [], [], []
    observations, _ = env.reset(seed=seed)
    for _ in range(episodes):
        actions = {a: policies[a].act(observations[a][None].astype(float), rng)[0].astype(np.float32) for a in agents}
        _, reward, _, _, infos = env.step(actions)
        rewards.append([reward[a] for a in agents])
        sq_error.append([infos[a]["sq_error"] for a in agents])
        payments.append([infos[a].get("payment", np.nan) for a in agents])
        observations, _ = env.reset()
    paid = np.array(payments)
    return Episodes(np.array(rewards), np.array(sq_error), None if np.isnan(paid).all() else paid)


def _check_policies(policies: Mapping[str, Policy], agents: list[str]) -> None:
    missing = [a for a in agents if a not in policies]
    if missing:
        raise ValueError(f"policies missing for agents {missing}")
