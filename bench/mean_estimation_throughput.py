"""Episodes per second of the mean-estimation game: PettingZoo loop vs the batched (vectorised) path.

Both play the same scripted agents through the same stages and mechanisms; the ratio is measured in one run, each
rate the best of three timings.
Usage: python bench/mean_estimation_throughput.py [--episodes-loop 5000] [--episodes-batch 2000000]
"""

from __future__ import annotations

import argparse
import platform
import time

import fedgames
from fedgames.agents import RandomPolicy
from fedgames.eval import simulate, simulate_loop

CASES = {
    "plain": [],
    "balanced payment + noisy response": ["side_payment:C=0.4,balanced=true", "noisy_response:C=0.5"],
    "median aggregation": ["robust_aggregation:rule=median"],
}


def rate(run, episodes: int, repeats: int = 3) -> float:
    """Best of ``repeats`` timed runs (after a short warm-up), in episodes per second."""
    run(max(episodes // 100, 2))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(episodes)
        best = min(best, time.perf_counter() - start)
    return episodes / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes-loop", type=int, default=5_000)
    parser.add_argument("--episodes-batch", type=int, default=1_000_000)
    parser.add_argument("--n-players", type=int, default=5)
    parser.add_argument("--dim", type=int, default=4)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, python {platform.python_version()}, "
        f"N={args.n_players}, d={args.dim}, random scripted agents"
    )
    print(f"{'mechanisms':36s} {'loop eps/s':>12s} {'batched eps/s':>14s} {'ratio':>8s}")
    for name, mechanisms in CASES.items():
        env = fedgames.make("mean_estimation_v0", mechanisms=mechanisms, n_players=args.n_players, dim=args.dim)
        policies = {a: RandomPolicy(env.action_space(a)) for a in env.possible_agents}
        loop = rate(lambda n, env=env, policies=policies: simulate_loop(env, policies, n, seed=0), args.episodes_loop)
        batched = rate(lambda n, env=env, policies=policies: simulate(env, policies, n, seed=0), args.episodes_batch)
        print(f"{name:36s} {loop:12,.0f} {batched:14,.0f} {batched / loop:7.0f}x")


if __name__ == "__main__":
    main()
