"""The ``fedgames`` command line; each command mirrors a Python call.

    fedgames list                                   # fedgames.list_envs(), fedgames.mechanisms.MECHANISMS
    fedgames simulate mean_estimation_v0 \\
        -m side_payment:C=0.4,balanced=true \\
        -e n_players=4 --profile honest --out DIR   # fedgames.eval.agreement.compare_with_theory(...)
    fedgames check mean_estimation_v0 -m bounded_attack:A=1.5 \\
        --profile theory --oracle ppo --out DIR      # fedgames.eval.nash.nash_check(...)
    fedgames check fedsgd_v0 -e rounds=10 -e lr=decaying -e radius=3 \\
        -m side_payment:C=16,balanced=true \\
        --profile honest --oracle grid --oracle ppo   # the FedSGD game ([H] Thm 6.1), one step = one round
    fedgames train mean_estimation_v0 --mode independent \\
        --profile honest --out DIR                   # fedgames.train.train_independent(...)
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import fedgames
from fedgames.errors import did_you_mean, first_line
from fedgames.parsing import parse_assignments, unique_keys
from fedgames.registry import module_id
from fedgames.text import shown, strategy_text


def _config(assignments: Sequence[str]) -> dict:
    return parse_assignments(assignments, "-e/--env-config")


def _profile_values(text: str, allowed: tuple[str, ...], usage: str) -> dict:
    """The values of ``FILE.json`` or of ``'key=value;key=value'`` (keys among ``allowed``; ``usage`` lists the
    accepted forms for the error message)."""
    if text.endswith(".json"):
        try:
            values = json.loads(Path(text).read_text(), object_pairs_hook=unique_keys)
        except (OSError, UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError
            raise ValueError(f"--profile {text}: {error}") from None
        if not isinstance(values, dict):
            raise ValueError(
                f"--profile {text}: must hold a JSON object such as {json.dumps(dict.fromkeys(allowed, 0))}, got "
                + ("null" if values is None else type(values).__name__)
            )
    else:
        values = parse_assignments(text.split(";"), "--profile")
    for key in values:
        if key not in allowed:
            raise ValueError(
                f"--profile: unknown key {key!r}{did_you_mean(key, allowed)} (keys: {', '.join(allowed)}); use "
                f"{usage} (one value, or one per player separated by commas)"
            )
    return values


def _policies(text: str, env) -> dict:  # noqa: ANN001
    """The candidate profile as one policy per agent, from the game contract
    (:class:`~fedgames.envs.contract.GameEnv`): one of the game's named profiles (``honest``, and ``theory`` where
    the game has one), ``FILE.json`` or ``'key=value;key=value'`` (the game's ``profile_keys``; one value or one per
    player), played as constant actions in every round."""
    from fedgames.envs.contract import game_of

    game = game_of(env)
    keys = game.profile_keys or tuple(env.protocol.action_names)
    usage = ", ".join(game.profile_names) + ", FILE.json or '" + ";".join(f"{k}={k[0].upper()}" for k in keys) + "'"
    try:
        if "=" not in text and not text.endswith(".json"):
            policies = game.named_policies(text, env.protocol)
        else:
            policies = game.policies_from_values(_profile_values(text, keys, usage))
        _check_constant_actions(policies, env)
        return policies
    except ValueError as error:
        message = str(error)
        raise ValueError(message if message.startswith("--profile") else f"--profile: {message}") from None


def _check_constant_actions(policies: dict, env) -> None:  # noqa: ANN001
    """Constant actions outside the action space are refused now, before any work (the env would refuse them at
    its first step, after the progress bar has started)."""
    from fedgames.agents import ConstantPolicy

    agents = env.possible_agents
    if all(isinstance(policies[agent], ConstantPolicy) for agent in agents):
        env.protocol.check_actions(_constant_profile(policies, env)[None], agents)


def _constant_profile(policies: dict, env) -> np.ndarray:  # noqa: ANN001
    """The ``(N, k)`` actions of constant policies (what the closed forms take)."""
    from fedgames.agents import ConstantPolicy

    if not all(isinstance(policies[agent], ConstantPolicy) for agent in env.possible_agents):
        raise ValueError("--profile: the closed forms need a profile of constant actions")
    return np.stack([policies[agent].action for agent in env.possible_agents])


def _n_envs(args: argparse.Namespace, env) -> int:  # noqa: ANN001
    """``--n-envs``, by default 1024 games for a one-round game and 256 for a multi-round one (each of its
    episodes takes ``rounds`` timesteps, so fewer games keep the number of learning updates up), at most as many
    as the env plays at once by default (:func:`~fedgames.envs.batch.resolve_batch_size`: 3 for the FEMNIST CNN)."""
    from fedgames.envs.batch import horizon, learner_games

    return learner_games(env, args.n_envs, 1024 if horizon(env) == 1 else 256)


def cmd_list(args: argparse.Namespace) -> int:
    from fedgames.mechanisms import MECHANISMS

    print("environments (either name works):")
    for env_id in fedgames.list_envs():
        print(f"  {module_id(env_id):20s} {env_id}")
    print("mechanisms:")
    for name, cls in MECHANISMS.items():
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split()).replace("``", "")
        print(textwrap.fill(summary, width=110, initial_indent=f"  {name:20s} ", subsequent_indent=" " * 23))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from fedgames.envs.batch import resolve_batch_size
    from fedgames.eval.agreement import compare_with_theory
    from fedgames.eval.plots import plot_reward_vs_alpha
    from fedgames.files import write_atomic

    env = fedgames.make(args.env_id, mechanisms=args.mechanism, **_config(args.env_config))
    resolve_batch_size(env, args.batch_size)  # before any work: below 1 or beyond the memory budget is refused
    profile = _constant_profile(_policies(args.profile, env), env)
    report = compare_with_theory(
        env, profile, episodes=args.episodes, seed=args.seed, batch_size=args.batch_size, progress=not args.quiet
    )
    print(report.to_markdown())
    print(report.verdict())
    if args.out:
        out = Path(args.out)
        write_atomic(out / "report.json", report.to_json())
        write_atomic(out / "report.md", report.to_markdown())
        write_atomic(out / "agreement.csv", report.to_csv())
        if not args.no_plot:
            label = " + ".join(m.spec() for m in env.protocol.mechanisms) or "no mechanism"
            plot_reward_vs_alpha(
                [(label, env)],
                profile,
                out / "reward_vs_alpha.png",
                episodes=args.plot_episodes,
                seed=args.seed,
                batch_size=args.batch_size,
            )
        print(f"wrote {out}/report.json, report.md, agreement.csv" + ("" if args.no_plot else ", reward_vs_alpha.png"))
    return 0


QUICK = {
    "timesteps": 50_000,
    "seeds": 2,
    "episodes": 10_000,
    "grid_points": 9,
    "grid_episodes": 2_000,
    "players": "symmetric",
}
"""``--quick``: a few minutes on 2 CPU cores."""


def _strength_variants(args: argparse.Namespace) -> list[tuple[str, object]]:
    """The env at several strengths of its first mechanism with a ``C`` ([H] Fig. 1): C x 0, 0.5, 1, 2."""
    from fedgames.mechanisms import parse_spec

    specs = [parse_spec(m) for m in args.mechanism]
    scaled = next((k for k, (_, params) in enumerate(specs) if "C" in params), None)
    if scaled is None:
        return [
            (
                " + ".join(args.mechanism) or "no mechanism",
                fedgames.make(args.env_id, mechanisms=args.mechanism, **_config(args.env_config)),
            )
        ]
    variants = []
    for factor in (0.0, 0.5, 1.0, 2.0):
        C = specs[scaled][1]["C"] * factor
        mechanisms = [
            (name, params | {"C": C}) if k == scaled else (name, params) for k, (name, params) in enumerate(specs)
        ]
        env = fedgames.make(args.env_id, mechanisms=mechanisms, **_config(args.env_config))
        variants.append((f"{specs[scaled][0]} C={C:g}", env))
    return variants


def _given(value: Any, default: Any) -> Any:
    """An option's value, or ``default`` where it was not given (``None``): a given 0 stays 0, and is checked."""
    return default if value is None else value


def cmd_check(args: argparse.Namespace) -> int:
    from fedgames.envs.contract import closed_form, game_of
    from fedgames.eval.nash import nash_check
    from fedgames.eval.plots import plot_reward_vs_alpha
    from fedgames.train.oracles import make_oracle

    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    env = fedgames.make(args.env_id, mechanisms=args.mechanism, **_config(args.env_config))
    policies = _policies(args.profile, env)
    oracles = []
    for name in _given(args.oracle, ["ppo"]):
        if name == "grid":
            components = list(game_of(env).grid_components or env.protocol.action_names)
            oracles.append(
                make_oracle(
                    "grid",
                    components=components,
                    points=_given(args.grid_points, 11),
                    episodes=_given(args.grid_episodes, 20_000),
                    max_points=args.grid_max_points,
                    lipschitz="theory" if closed_form(env) is not None else None,
                    level=args.level,
                )
            )
        else:
            oracles.append(
                make_oracle(
                    name,
                    timesteps=_given(args.timesteps, 200_000),
                    seeds=_given(args.seeds, 3),
                    n_envs=_n_envs(args, env),
                    tensorboard_log=args.tensorboard,
                    progress=not args.quiet,
                )
            )
    report = nash_check(
        env,
        policies,
        oracles,
        profile_name=args.profile,
        players=_given(args.players, "all"),
        episodes=_given(args.episodes, 20_000),
        level=args.level,
        tolerance=args.tolerance,
        interval=args.interval,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    print(report.to_markdown())
    if args.out:
        written = report.save(args.out)
        if closed_form(env) is not None:
            written.append(
                plot_reward_vs_alpha(
                    _strength_variants(args),
                    _constant_profile(policies, env),
                    Path(args.out) / "payoff_vs_alpha.png",
                    episodes=5_000,
                    seed=args.seed,
                )
            )
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from fedgames.files import write_atomic
    from fedgames.train.multi_agent import train_independent, train_shared

    if args.quick:
        args.rounds = _given(args.rounds, 3)
        args.steps = _given(args.steps, 30_000)
    env = fedgames.make(args.env_id, mechanisms=args.mechanism, **_config(args.env_config))
    out = Path(args.out) if args.out else None
    checkpoints = out / "checkpoints" if out else None
    if args.mode == "independent":
        init = _policies(args.profile, env)
        result = train_independent(
            env,
            algo=args.algo,
            rounds=_given(args.rounds, 10),
            steps_per_round=_given(args.steps, 100_000),
            n_envs=_n_envs(args, env),
            seed=args.seed,
            checkpoint_dir=checkpoints,
            init=init,
            eval_episodes=args.eval_episodes,
            progress=not args.quiet,
        )
    else:
        steps = _given(args.steps, 100_000)
        result = train_shared(
            env,
            algo=args.algo,
            total_steps=steps * _given(args.rounds, 10),
            n_games=_n_envs(args, env),
            seed=args.seed,
            checkpoint_dir=checkpoints,
            checkpoint_every=steps,
            eval_episodes=args.eval_episodes,
            progress=not args.quiet,
        )
    last = result.history[-1]
    print(f"{args.mode} {args.algo}, {len(result.history)} checkpoints; final strategies:")
    for agent, summary in last.players.items():
        print(f"  {agent}: {strategy_text(summary, '.4f')}")
    for note in result.notes:
        print(f"note: {note}")
    if out:
        write_atomic(out / "training.json", result.to_json())
        result.plot(out / "training.png")
        print(f"wrote {out}/training.json, training.png, checkpoints/ (rerun the same command to resume)")
    return 0


def _reproduce_domino(args: argparse.Namespace) -> int:
    from fedgames.eval.domino import reproduce

    results = reproduce(args.out, seed=args.seed, rejoin=not args.permanent_exit)
    print(
        "domino ([G] Thm 7.2): steady states "
        + ", ".join(f"{s['x']:.4f} ({'stable' if s['stable'] else 'unstable'})" for s in results["steady_states"])
        + f"; threshold {results['threshold']:.4f}"
    )
    for run in results["runs"]:
        fired = [f"{name} (round {w['round']})" for name, w in run["warnings"].items() if w is not None]
        print(
            f"  x_0 = {run['start']:.4f} -> {run['final']:.4f} (mean field: {run['predicted']:.4f}); "
            f"warnings: {', '.join(fired) or 'none'}"
        )
    print(f"wrote {args.out}/results.json, paths.csv, retention_map.png")
    return 0


def _print_points(title: str, results: dict, line, out: str, files: str) -> int:  # noqa: ANN001
    """An experiment's title, one ``line(point)`` per point of ``results``, and the files it wrote."""
    print(title)
    for point in results["points"]:
        print("  " + line(point))
    print(f"wrote {out}/{files}")
    return 0


def _reproduce_gaming_design(args: argparse.Namespace) -> int:
    from fedgames.eval.gaming_design import reproduce

    return _print_points(
        "gaming design ([G] Thm 9.2, 9.4): pi, S -> gain from gaming (simulated), PoG (simulated)",
        reproduce(args.out, seed=args.seed, progress=not args.quiet),
        lambda p: (
            f"pi = {p['pi']:.2f}, S = {p['S']:g}: gain {p['gain']:+.4f} ({p['gain_sim']:+.4f} +- "
            f"{p['gain_se']:.4f}), PoG {p['PoG']:.4f} ({p['PoG_sim']:.4f} +- {p['PoG_se']:.4f})"
        ),
        args.out,
        "results.json, design.csv, design.png",
    )


def _reproduce_aggregation_frontier(args: argparse.Namespace) -> int:
    from fedgames.eval.aggregation_frontier import reproduce

    def line(p: dict) -> str:
        rule = p["rule"] + (f" {p['fraction']:g}" if p["rule"] == "trimmed_mean" else "")
        return (
            f"{rule:<16} eps = {p['eps']:.2f}: bias {p['bias']:.5f} ({p['bias_sim']:.5f} +- {p['bias_se']:.5f}), "
            f"sd {p['sd']:.5f} ({p['sd_sim']:.5f} +- {p['sd_se']:.5f})"
        )

    return _print_points(
        "aggregation frontier ([G] Prop. 9.3): rule, eps -> gaming bias, standard deviation (simulated)",
        reproduce(args.out, seed=args.seed, progress=not args.quiet),
        line,
        args.out,
        "results.json, frontier.csv, frontier.png",
    )


def _reproduce_detection_power(args: argparse.Namespace) -> int:
    from fedgames.eval.detection_power import reproduce

    results = reproduce(args.out, seed=args.seed)
    print("detection power ([G] §10, SPEC §8): GLS test; u1, pi, T -> power (simulated)")
    for p in results["points"]:
        simulated = f"{p['power_sim']:.4f} +- {p['power_se']:.4f}"
        print(f"  u1 = {p['u']:g}, pi = {p['pi']:.2f}, T = {p['rounds']:>4}: {p['power']:.4f} ({simulated})")
    for s in results["sample_sizes"]:
        print(f"  u1 = {s['u']:g}, pi = {s['pi']:.2f}: T* = {s['T_star']:.1f}, tail bound {s['T_tail_bound']:.1f}")
    print(f"wrote {args.out}/results.json, power.csv, detection_power.png")
    return 0


def _reproduce_retention_map(args: argparse.Namespace) -> int:
    from fedgames.eval.retention_map import reproduce

    return _print_points(
        "retention map ([G] Fig. 3): x -> G(x) (one simulated round)",
        reproduce(args.out, seed=args.seed),
        lambda p: f"x = {p['x']:.2f}: G {p['G']:.4f} ({p['simulated']:.4f} +- {p['se']:.4f})",
        args.out,
        "results.json, map.csv, retention_map.png",
    )


def _reproduce_hysteresis(args: argparse.Namespace) -> int:
    from fedgames.eval.hysteresis import reproduce

    results = reproduce(args.out, seed=args.seed)
    print("hysteresis ([G] Fig. 2): sweep of c_mean up then down -> participation (mean field)")
    for p in results["sweep"]:
        print(f"  {p['direction']:<4} c_mean = {p['c_mean']:.3f}: {p['simulated']:.4f} ({p['mean_field']:.4f})")
    print(f"wrote {args.out}/results.json, sweep.csv, paths.csv, hysteresis.png")
    return 0


def b3_summary(results: dict[str, Any], scale: str) -> list[str]:
    """The console summary of ``reproduce honesty-b3``: the clean accuracy, the diverged runs and their notes, and
    group A's curves at alpha_B = 0 with the best alpha_A among the points that have a mean (never a NaN)."""
    accuracy = results["clean_accuracy"]
    lines = [
        f"honesty-b3 ({scale}): clean test accuracy {shown(accuracy['mean'])} ± {shown(accuracy['se'])} "
        f"(chance {accuracy['chance']:.3f}); {results['diverged_runs']} diverged runs",
        *(f"  note: {note}" for note in results.get("notes", [])),
    ]
    for c in results["curves"]:
        if c["group"] == "A" and c["alpha_B"] == 0.0:
            means = np.array([np.nan if m is None else m for m in c["reward_mean"]], dtype=float)
            finite = np.flatnonzero(np.isfinite(means))
            best = f"{c['alpha'][finite[np.argmax(means[finite])]]:g}" if finite.size else "n/a"
            lines.append(
                f"  group A, alpha_B=0, C={c['C']:g}: reward "
                + " ".join(shown(m) for m in means)
                + f"  (best alpha_A = {best})"
            )
    return lines


REPRODUCTIONS = {
    "domino": _reproduce_domino,
    "gaming-design": _reproduce_gaming_design,
    "aggregation-frontier": _reproduce_aggregation_frontier,
    "detection-power": _reproduce_detection_power,
    "retention-map": _reproduce_retention_map,
    "hysteresis": _reproduce_hysteresis,
}
"""The participation game's reproductions (``fedgames reproduce NAME``); ``honesty-b3`` is :func:`cmd_reproduce`'s."""


B3_OPTIONS = {
    "scale": "tiny",
    "data_dir": None,
    "device": "auto",
    "precision": "tf32",
    "compile": False,
    "checkpoint_minutes": 5.0,
}
"""``reproduce``'s options that only honesty-b3 reads, with their defaults (the parser's; ``--data-dir`` has none)."""


def _check_reproduce_options(args: argparse.Namespace) -> None:
    """An option the chosen experiment does not read is refused (it would be ignored silently)."""
    given = [name for name, default in B3_OPTIONS.items() if getattr(args, name) != default]
    if args.experiment != "honesty-b3" and given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(f"reproduce {args.experiment} does not read {flags} (honesty-b3's options)")
    if args.experiment != "domino" and args.permanent_exit:
        raise ValueError(f"reproduce {args.experiment} does not read --permanent-exit (domino's option)")


def cmd_reproduce(args: argparse.Namespace) -> int:
    _check_reproduce_options(args)
    if args.experiment in REPRODUCTIONS:
        return REPRODUCTIONS[args.experiment](args)
    from fedgames.envs.fedsgd.game import resolve_device
    from fedgames.eval.honesty_b3 import reproduce
    from fedgames.memory import keep_freed_memory

    if resolve_device(args.device).type == "cpu":
        keep_freed_memory()
    results = reproduce(
        args.scale,
        args.out,
        data_dir=args.data_dir,
        device=args.device,
        seed=args.seed,
        progress=not args.quiet,
        precision=args.precision,
        compile=args.compile,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    print("\n".join(b3_summary(results, args.scale)))
    print(
        f"wrote {args.out}/results.json, curves.csv, runs.csv, reward_vs_alpha_A.png, reward_vs_alpha_B.png, "
        "honest_penalties.png (rerun to resume)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedgames", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list registered environments and mechanisms").set_defaults(run=cmd_list)

    sim = sub.add_parser("simulate", help="simulate a profile and compare it with the closed-form theory")
    _add_env_arguments(sim, closed_form=True)
    sim.add_argument("--episodes", type=int, default=200_000)
    sim.add_argument("--plot-episodes", type=_at_least(2), default=20_000, help="episodes per point of the plot")
    sim.add_argument("--no-plot", action="store_true")
    sim.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="episodes played at once, in the comparison and the plot's points; lower it when memory runs out "
        "(default: the env's, 65536 for one-round games, lowered to what fits in memory; a given N beyond the "
        "memory budget is refused with the estimate). Results are reproducible by --seed and N; another N plays "
        "other episodes of the same distribution, unless both cover --episodes in one batch",
    )
    sim.set_defaults(run=cmd_simulate)

    check = sub.add_parser("check", help="empirical Nash check of a profile (SPEC §5)")
    _add_env_arguments(check)
    check.add_argument(
        "--oracle",
        choices=["ppo", "sac", "td3", "grid"],
        action="append",
        help="best-response oracle, repeatable (default ppo); with a learner and grid the report brackets the regret",
    )
    check.add_argument("--timesteps", type=int, help="learned oracles: training episodes per seed (200000)")
    check.add_argument("--seeds", type=int, help="learned oracles: independent trainings, best kept (3)")
    check.add_argument(
        "--n-envs",
        type=int,
        help="learned oracles: games per vectorised step (1024; 256 for "
        "multi-round games, whose timesteps are rounds; at most the env's default batch size, e.g. 3 "
        "for the FEMNIST CNN)",
    )
    check.add_argument("--grid-points", type=int, help="grid oracle: points per component (11)")
    check.add_argument("--grid-episodes", type=int, help="grid oracle: episodes per grid point (20000)")
    check.add_argument(
        "--grid-max-points",
        type=int,
        help="grid oracle: most points its branch-and-bound refinement plays per player, the first grid included "
        "(1000)",
    )
    check.add_argument("--episodes", type=int, help="fresh episodes per regret estimate (20000)")
    check.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="episodes played at once in every simulation of the check; lower it when memory runs "
        "out (default: the env's, 65536 for one-round games; fedsgd_v0 from its model's size, "
        "e.g. 3 for the FEMNIST CNN with 3 clients per round)",
    )
    check.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    check.add_argument(
        "--tolerance",
        default="0.005",
        help="verdict tolerance: reward units (0.005), or a percentage of the candidate's reward scale (its mean "
        "squared error in mean estimation), e.g. 1%%; the report states both",
    )
    check.add_argument("--interval", choices=["normal", "bootstrap"], default="normal")
    check.add_argument("--players", choices=["all", "symmetric"], help="check every player or one per type")
    check.add_argument("--tensorboard", metavar="DIR", help="TensorBoard logs of the learners")
    check.add_argument("--quick", action="store_true", help="small budgets: minutes on 2 CPU cores")
    check.set_defaults(run=cmd_check)

    train = sub.add_parser("train", help="all players learning at once, from a start profile; resumable")
    _add_env_arguments(train)
    train.add_argument(
        "--mode",
        choices=["independent", "shared"],
        default="independent",
        help="independent learners (one model per player) or parameter sharing (one model)",
    )
    train.add_argument("--algo", choices=["ppo", "sac", "td3"], default="ppo")
    train.add_argument("--rounds", type=int, help="rounds (independent) or checkpoints (shared) (10)")
    train.add_argument("--steps", type=int, help="episodes per player and round / per checkpoint (100000)")
    train.add_argument(
        "--n-envs",
        type=int,
        help="games per vectorised step (1024; 256 for multi-round games, "
        "whose steps are rounds; at most the env's default batch size, e.g. 3 for the FEMNIST CNN)",
    )
    train.add_argument(
        "--eval-episodes", type=int, default=4096, help="seeded episodes of each checkpoint's strategy summary (4096)"
    )
    train.add_argument("--quick", action="store_true", help="small budgets: minutes on 2 CPU cores")
    train.set_defaults(run=cmd_train)

    repro = sub.add_parser("reproduce", help="reproduce a paper experiment")
    repro.add_argument(
        "experiment",
        choices=["honesty-b3", *REPRODUCTIONS],
        help="honesty-b3: [H] App. B.3, the honesty penalty in FedSGD; domino: [G] Thm 7.2, domino "
        "exits in the participation game against its retention map; gaming-design: [G] Thm 9.2 / "
        "9.4, the gain from gaming and the price of gaming over challenge mixing and sanctions; "
        "aggregation-frontier: [G] Prop. 9.3, the reported metric's gaming bias against its spread "
        "for the mean, trimmed means and the median; detection-power: [G] §10, the GLS test's power "
        "against the rounds for several challenge rates; retention-map: [G] Fig. 3, G(x), its steady "
        "states and the domino threshold; hysteresis: [G] Fig. 2, paths from several starts and a "
        "cost swept up then down",
    )
    repro.add_argument(
        "--scale", choices=["tiny", "small", "paper"], default=B3_OPTIONS["scale"], help="honesty-b3's budget"
    )
    repro.add_argument(
        "--permanent-exit",
        action="store_true",
        help="domino: an exit is for good (participation_v0's rejoin=false); default: clients rejoin",
    )
    repro.add_argument("--out", required=True, help="results folder (rerun to resume)")
    repro.add_argument("--data-dir", help="a LEAF FEMNIST folder (default: synthetic FEMNIST-like writers)")
    repro.add_argument("--device", default=B3_OPTIONS["device"], help="auto (CUDA when available), cpu or cuda")
    repro.add_argument(
        "--precision",
        choices=["float32", "tf32", "bfloat16"],
        default=B3_OPTIONS["precision"],
        help="tf32 (default): float32 with TF32 tensor cores on CUDA, float32 on a CPU; float32: IEEE "
        "float32 throughout; bfloat16: client gradients under bf16 autocast (the GPU's fastest)",
    )
    repro.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=B3_OPTIONS["compile"],
        metavar="MODE",
        help="torch.compile the client gradients, optionally in a torch.compile mode (default, "
        "max-autotune, ...): a one-off compilation, then fused GPU kernels",
    )
    repro.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=B3_OPTIONS["checkpoint_minutes"],
        help="save the runs in progress this often (DIR/checkpoints; a rerun resumes from there)",
    )
    repro.add_argument("--seed", type=_seed, default=0)
    repro.add_argument("--quiet", action="store_true")
    repro.add_argument("--torch-threads", type=_at_least(1), default=2, help="torch intra-op threads")
    repro.set_defaults(run=cmd_reproduce)
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", help="on an error, show its traceback instead of one line")
    return parser


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, refused while the command line is parsed (before any work)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _seed(text: str) -> int:
    """``--seed``: an integer >= 0 (what numpy's and torch's generators take)."""
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return seed


def _add_env_arguments(parser: argparse.ArgumentParser, closed_form: bool = False) -> None:
    """Arguments shared by the commands that build an env and a profile (``closed_form``: for a command that needs
    a game with closed-form predictions, one whose :meth:`~fedgames.envs.contract.GameEnv.theory` gives them)."""
    if closed_form:
        parser.add_argument(
            "env_id",
            help="a registered game with closed-form predictions, such as mean_estimation_v0 (`fedgames list` "
            "shows the games; `fedgames check` and `train` take any of them)",
        )
    else:
        parser.add_argument("env_id", help="e.g. mean_estimation_v0, fedsgd_v0 or participation_v0")
    parser.add_argument(
        "-m",
        "--mechanism",
        action="append",
        default=[],
        metavar="SPEC",
        help="mechanism spec, repeatable, innermost first: side_payment:C=0.4,balanced=true, "
        "noisy_response:C=0.5, bounded_attack:A=1.5, robust_aggregation:rule=median",
    )
    parser.add_argument(
        "-e",
        "--env-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="env config, repeatable: -e n_players=4 -e lam=1,0.5,2 (fedsgd_v0: -e rounds=10 "
        "-e lr=decaying -e radius=3 ...; JSON values too: "
        '-e \'byzantine={"player_1": "sign_flip"}\')',
    )
    profiles = "honest | theory (the predicted equilibrium) | FILE.json | 'alpha=A;beta=B'"
    parser.add_argument(
        "--profile",
        default="honest",
        help=profiles
        if closed_form
        else profiles
        + (
            "; fedsgd_v0: honest | FILE.json | 'alpha=A' (constant in every round); participation_v0: honest | theory "
            "| FILE.json | 'participate=P;u=U'"
        ),
    )
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--out", help="folder for the report files and PNGs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--torch-threads",
        type=_at_least(1),
        default=1,
        help="torch intra-op threads (1: the small policy networks gain nothing from more)",
    )


def _recorded_options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as the manifest records them (everything but the command's function)."""
    return {key: value for key, value in vars(args).items() if key not in ("run", "debug")}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Bad input (a ``ValueError``) and what the system refuses (an ``OSError``: a missing file, a
    full disk) are one line ``fedgames: error: ...`` and exit code 2; ``--debug`` shows the traceback instead. The
    output folder is checked before anything is computed, and records the run (:mod:`fedgames.run_folder`)."""
    from fedgames.memory import use_huge_pages
    from fedgames.run_folder import check_output_folder, recording

    use_huge_pages()  # before torch is imported: its CPU allocator reads the setting once
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        out = getattr(args, "out", None)
        if out:
            check_output_folder(out)
        if args.command in ("check", "train", "reproduce"):
            import torch

            torch.set_num_threads(args.torch_threads)
        if not out:
            return args.run(args)
        with recording(out, ["fedgames", *argv], _recorded_options(args), getattr(args, "seed", None)):
            return args.run(args)
    except (ValueError, OSError) as error:
        if args.debug:
            raise
        print(f"fedgames: error: {error}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as error:  # what an allocation too large for the machine raises
        if args.debug or not _out_of_memory(error):
            raise
        print(f"fedgames: error: out of memory ({first_line(error)}): use a smaller configuration", file=sys.stderr)
        return 2


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says an allocation failed: a ``MemoryError``, or torch's ``RuntimeError`` (CPU: "can't
    allocate memory", CUDA: "out of memory")."""
    text = str(error).lower()
    return isinstance(error, MemoryError) or "can't allocate memory" in text or "out of memory" in text


if __name__ == "__main__":
    sys.exit(main())
