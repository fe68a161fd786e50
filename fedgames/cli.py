"""The ``fedgames`` command line; each command mirrors a Python call.

    fedgames list                                   # fedgames.list_envs(), fedgames.mechanisms.MECHANISMS
    fedgames simulate mean_estimation_v0 \\
        -m side_payment:C=0.4,balanced=true \\
        -e n_players=4 --profile honest --out DIR   # fedgames.eval.agreement.compare_with_theory(...)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import fedgames
from fedgames.parsing import parse_assignment


def _config(assignments: Sequence[str]) -> dict:
    return dict(parse_assignment(a, "-e/--env-config") for a in assignments)


def _profile(text: str, env):  # noqa: ANN001
    from fedgames.envs.mean_estimation import theory

    game, protocol = env.unwrapped.game, env.protocol
    setting = theory.Setting.from_env(env)
    if text == "honest":
        return theory.honest_profile(setting, game.dim)
    if text == "theory":
        alpha_max = float(protocol.action_high[protocol.action_index("alpha")])
        profile, converged = theory.predicted_equilibrium(setting, game.dim, alpha_max)
        if not converged:
            raise ValueError("best-response iteration did not converge: the theory predicts no equilibrium here")
        return profile
    if text.endswith(".json"):
        data = json.loads(Path(text).read_text())
        n, d = game.n_players, game.dim
        return theory.Profile(np.broadcast_to(data.get("alpha", 0.0), n), np.broadcast_to(data.get("beta", 0.0), n),
                              np.broadcast_to(np.asarray(data.get("bias", 0.0), dtype=float), (n, d)))
    values = dict(parse_assignment(item, "--profile") for item in text.split(";"))
    unknown = set(values) - {"alpha", "beta"}
    if unknown:
        raise ValueError(f"--profile: unknown keys {sorted(unknown)}; use honest, theory, FILE.json or "
                         f"'alpha=A;beta=B' (one value, or one per player separated by commas)")
    n = game.n_players
    return theory.Profile(np.broadcast_to(np.asarray(values.get("alpha", 0.0), dtype=float), n),
                          np.broadcast_to(np.asarray(values.get("beta", 0.0), dtype=float), n),
                          np.zeros((n, game.dim)))


def cmd_list(args: argparse.Namespace) -> int:
    from fedgames.mechanisms import MECHANISMS

    print("environments:")
    for env_id in fedgames.list_envs():
        print(f"  {env_id}")
    print("mechanisms:")
    for name, cls in MECHANISMS.items():
        print(f"  {name:20s} {(cls.__doc__ or '').strip().splitlines()[0]}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from fedgames.eval.agreement import compare_with_theory, plot_reward_vs_alpha, write_atomic

    env = fedgames.make(args.env_id, mechanisms=args.mechanism, **_config(args.env_config))
    profile = _profile(args.profile, env)
    report = compare_with_theory(env, profile, episodes=args.episodes, seed=args.seed, progress=not args.quiet)
    print(report.to_markdown())
    print("all closed forms agree with the simulation" if report.all_agree else
          "SOME closed forms disagree with the simulation (|z| >= 4)")
    if args.out:
        out = Path(args.out)
        write_atomic(out / "report.json", report.to_json())
        write_atomic(out / "report.md", report.to_markdown())
        write_atomic(out / "agreement.csv", report.to_csv())
        if not args.no_plot:
            plot_reward_vs_alpha(env, profile, out / "reward_vs_alpha.png", episodes=args.plot_episodes,
                                 seed=args.seed)
        print(f"wrote {out}/report.json, report.md, agreement.csv" + ("" if args.no_plot else ", reward_vs_alpha.png"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedgames", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list registered environments and mechanisms").set_defaults(run=cmd_list)

    sim = sub.add_parser("simulate", help="simulate a profile and compare it with the closed-form theory")
    sim.add_argument("env_id", help="e.g. mean_estimation_v0")
    sim.add_argument("-m", "--mechanism", action="append", default=[], metavar="SPEC",
                     help="mechanism spec, repeatable, innermost first: side_payment:C=0.4,balanced=true, "
                          "noisy_response:C=0.5, bounded_attack:A=1.5, robust_aggregation:rule=median")
    sim.add_argument("-e", "--env-config", action="append", default=[], metavar="KEY=VALUE",
                     help="env config, repeatable: -e n_players=4 -e lam=1,0.5,2")
    sim.add_argument("--profile", default="honest",
                     help="honest | theory (the predicted equilibrium) | FILE.json | 'alpha=A;beta=B'")
    sim.add_argument("--episodes", type=int, default=200_000)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", help="folder for report.json, report.md, agreement.csv, reward_vs_alpha.png")
    sim.add_argument("--plot-episodes", type=int, default=20_000, help="episodes per point of the plot")
    sim.add_argument("--no-plot", action="store_true")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(run=cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        print(f"fedgames: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
