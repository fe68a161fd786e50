"""Calibration of the Nash check's verdicts at a size of your choosing (issue 15; the CI test is
``tests/test_nash_calibration.py``).

Repeats the grid check of honesty under the balanced side payment with ``C`` set so that the exact regret is 0 (a
strict equilibrium), ``tau`` and ``2 tau`` (:func:`fedgames.eval.calibration.balanced_payment_case`), and prints
each verdict's rate with its Clopper-Pearson 95% interval: false refutations at regret 0 and tau and false
confirmations at tau must stay within ``1 - level``; the refutation rate at ``2 tau`` is the power.
Usage: python bench/nash_calibration.py [--repetitions 200] [--episodes 5000] [--tolerance 0.005]
"""

from __future__ import annotations

import argparse
import platform
import time

from fedgames.eval.calibration import HEADER, balanced_payment_case, calibrate
from fedgames.train.multi_agent import honest_policies
from fedgames.train.oracles import GridOracle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=200)
    parser.add_argument("--episodes", type=int, default=5_000, help="per grid point and per regret estimate")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--points", type=int, default=7, help="first-grid points per component")
    parser.add_argument("--max-points", type=int, default=200, help="at regret tau the search spends all of it")
    parser.add_argument("--n-players", type=int, default=3)
    parser.add_argument("--alpha-max", type=float, default=1.0)
    args = parser.parse_args()
    oracle = GridOracle(points=args.points, episodes=args.episodes, max_points=args.max_points, level=args.level)
    print(f"{platform.processor() or platform.machine()}, {args.repetitions} repetitions, {args.episodes} episodes")
    print(HEADER)
    for regret in (0.0, args.tolerance, 2 * args.tolerance):
        start = time.perf_counter()
        env = balanced_payment_case(regret, args.n_players, args.alpha_max)
        name = "equilibrium" if regret == 0 else f"regret {regret / args.tolerance:g} tau"
        result = calibrate(
            name, env, honest_policies(env), regret, oracle, args.repetitions, args.tolerance, args.episodes, args.level
        )
        print(result.row() + f" <!-- {time.perf_counter() - start:.0f} s -->")


if __name__ == "__main__":
    main()
