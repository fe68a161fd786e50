"""Rounds per second of the participation game with N = 1000 clients: PettingZoo loop vs batched episodes.

Both play the same random actions through the same stages and mechanisms (the batched path runs the very stage
functions the env runs, on ``B`` episodes at once); a batched step is ``B`` episode-rounds. The loop also runs the
env's server-side monitor (SPEC §9, in ``infos``), which the batched path leaves to its caller. Each rate is the
best of three timings, the ratio measured in one run.
Usage: python bench/participation_throughput.py [--n-players 1000] [--loop-rounds 200] [--batch 256]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from datetime import date

import numpy as np

import fedgames
from fedgames.envs.batch import episode_batch

CASES = {
    "plain": [],
    "challenges + risk audits": ["challenge_mixing:pi=0.3", "audit:k=50,p_detect=0.5,S=1,policy=risk"],
    "median metric + side payment": ["robust_aggregation:rule=median", "side_payment:C=0.4"],
}


def make(n: int, rounds: int, mechanisms: list[str]):  # noqa: ANN201
    """``participation_v0`` with ``n`` players."""
    return fedgames.make("participation_v0", mechanisms=mechanisms, n_players=n, rounds=rounds)


def best_time(run: Callable[[], None], repeats: int = 3) -> float:
    """The shortest of ``repeats`` timed runs (after one warm-up run), in seconds."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def loop_rate(env, rounds: int, actions: np.ndarray) -> float:  # noqa: ANN001
    """Rounds per second of the PettingZoo loop (one episode of ``rounds`` rounds)."""
    agents = env.possible_agents

    def run() -> None:
        env.reset(seed=0)
        for t in range(rounds):
            env.step({a: actions[t, i] for i, a in enumerate(agents)})

    return rounds / best_time(run)


def batch_rate(env, size: int, rounds: int, actions: np.ndarray) -> float:  # noqa: ANN001
    """Episode-rounds per second of ``size`` batched episodes (``rounds`` rounds each)."""
    batch = episode_batch(env, size, np.random.default_rng(0))
    stacked = np.broadcast_to(actions[:, None], (rounds, size) + actions.shape[1:])

    def run() -> None:
        batch.reset()
        for t in range(rounds):
            batch.step(stacked[t])

    return size * rounds / best_time(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-players", type=int, default=1000)
    parser.add_argument("--loop-rounds", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batch-rounds", type=int, default=20)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, python {platform.python_version()}, "
        f"{date.today()}, N={args.n_players}, random actions, batch of {args.batch} episodes"
    )
    print(f"{'mechanisms':32s} {'loop rounds/s':>14s} {'batched rounds/s':>17s} {'ratio':>8s}")
    rng = np.random.default_rng(0)
    rounds = max(args.loop_rounds, args.batch_rounds)
    actions = rng.random((rounds, args.n_players, 2)).astype(np.float32)
    for name, mechanisms in CASES.items():
        loop = loop_rate(make(args.n_players, args.loop_rounds, mechanisms), args.loop_rounds, actions)
        env = make(args.n_players, args.batch_rounds, mechanisms)
        batched = batch_rate(env, args.batch, args.batch_rounds, actions[: args.batch_rounds].astype(float))
        print(f"{name:32s} {loop:14,.0f} {batched:17,.0f} {batched / loop:7.0f}x")


if __name__ == "__main__":
    main()
