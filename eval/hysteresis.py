"""Hysteresis of participation ([G] Fig. 2, Thm 7.2, App. E.6; SPEC §3 "Retention map"): two stable states
coexist where the retention map crosses the diagonal three times, so where participation ends up depends on where
it came from.

``fedgames reproduce hysteresis --out DIR``:

- **Paths** from several starting levels at the configuration's cost: myopic clients
  (:class:`~fedgames.agents.MyopicParticipant`, through :func:`~fedgames.eval.domino.myopic_paths`) beside the
  mean-field path (:func:`~fedgames.envs.participation.theory.iterate_retention`): the starts on either side of the
  domino threshold go to different stable states.
- **A slow sweep** of the mean participation cost ``c_mean`` up and then down again: at each cost the clients play
  ``rounds`` rounds starting from where the previous cost left them (a new episode at that participation level),
  beside the mean-field map iterated the same way. Going up, participation stays on the high branch until that
  branch disappears (a fold of ``G``) and collapses; coming down it stays on the low branch until the low branch
  disappears, well below the collapse cost: between the two folds the sweeps end on different branches.

Writes ``results.json`` (the paths, the sweep and, per cost, the theory's stable states and threshold),
``sweep.csv``, ``paths.csv`` and ``hysteresis.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

import fedgames
from fedgames.envs.participation import theory
from fedgames.eval.domino import DOMINO_CONFIG, myopic_paths
from fedgames.files import csv_text, json_text, write_atomic
from fedgames.validation import integer, real

COSTS = tuple(np.round(np.arange(0.3, 1.0501, 0.025), 3))
"""The swept ``c_mean``: from where only the high state exists, through the bistable range (about 0.4 to 0.9 for
:data:`~fedgames.eval.domino.DOMINO_CONFIG`), to where only the low one does."""

STARTS = (0.2, 0.45, 0.55, 0.6, 0.7, 1.0)


def reproduce(
    out: str | Path,
    n_players: int = 2000,
    rounds: int = 15,
    costs: Sequence[float] = COSTS,
    starts: Sequence[float] = STARTS,
    seed: int = 0,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the experiment and write its files to ``out``; returns what ``results.json`` holds.

    Args:
        out: the results folder.
        n_players: clients per episode.
        rounds: rounds per path and per step of the sweep (``>= 1``).
        costs: the ``c_mean`` values of the sweep, swept in this order and back (at least two); the paths run at
            the configuration's own ``c_mean``.
        starts: participation levels the paths start from, each in ``[0, 1]``.
        seed: seeds every episode (one stream per path and per step).
        config: ``participation_v0`` settings (default :data:`~fedgames.eval.domino.DOMINO_CONFIG`).
    """
    n_players, rounds = integer("n_players", n_players, 2), integer("rounds", rounds, 1)
    config = dict(DOMINO_CONFIG if config is None else config)
    fixed = sorted({"n_players", "rounds", "initial_participation"} & set(config))
    if fixed:
        raise ValueError(f"config: {fixed} are the experiment's own arguments (or its starting points)")
    costs = [real("costs", c, -np.inf) for c in costs]
    if len(costs) < 2:
        raise ValueError(f"costs must hold at least two values, got {costs}")
    base = theory.Setting.from_env(fedgames.make("participation_v0", n_players=n_players, **config))
    config["c_mean"] = base.c_mean  # the paths' cost; the sweep replaces it
    paths = []
    for k, start in enumerate(starts):
        start = real("starts", start, 0.0, 1.0)
        simulated = myopic_paths(config, n_players, rounds, start, np.random.default_rng([seed, 0, k])).paths
        predicted = theory.iterate_retention(start, base, rounds=rounds)
        paths.append({"start": start, "path": simulated[:, 0].tolist(), "mean_field": predicted.tolist()})
    sweep = []
    x_sim = x_theory = 1.0
    for step, (direction, cost) in enumerate([("up", c) for c in costs] + [("down", c) for c in reversed(costs)]):
        setting = replace(base, c_mean=cost)
        rng = np.random.default_rng([seed, 1, step])
        x_sim = float(myopic_paths(config | {"c_mean": cost}, n_players, rounds, x_sim, rng).paths[-1, 0])
        x_theory = float(theory.iterate_retention(x_theory, setting, rounds=rounds)[-1])
        stable = [s.x for s in theory.steady_states(setting) if s.stable]
        sweep.append(
            {
                "direction": direction,
                "c_mean": cost,
                "simulated": x_sim,
                "mean_field": x_theory,
                "low_branch": min(stable),
                "high_branch": max(stable),
                "threshold": theory.domino_threshold(setting),
            }
        )
    results = {
        "experiment": "hysteresis",
        "config": config | {"n_players": n_players, "rounds": rounds},
        "seed": seed,
        "paths": paths,
        "sweep": sweep,
    }
    out = Path(out)
    write_atomic(out / "results.json", json_text(results))
    write_atomic(out / "sweep.csv", csv_text(sweep))
    rows = [{"start": p["start"], "round": t, "participation": x} for p in paths for t, x in enumerate(p["path"])]
    write_atomic(out / "paths.csv", csv_text(rows, ("start", "round", "participation")))
    _figure(out / "hysteresis.png", base, results)
    return results


def _figure(path: Path, base: theory.Setting, results: dict[str, Any]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    left, right = fig.subplots(1, 2)
    for k, run in enumerate(results["paths"]):
        left.plot(run["path"], color=f"C{k}", label=f"x_0 = {run['start']:g}")
        left.plot(run["mean_field"], color=f"C{k}", linestyle=":", linewidth=1)
    threshold = theory.domino_threshold(base)
    if threshold is not None:
        left.axhline(threshold, color="black", linestyle="--", linewidth=0.8, label=f"threshold {threshold:.3f}")
    left.set(
        xlabel="round",
        ylabel="participation",
        title=f"paths at c_mean = {base.c_mean:g} (solid: simulated, dotted: mean field)",
    )
    up = [p for p in results["sweep"] if p["direction"] == "up"]
    cost = [p["c_mean"] for p in up]
    bistable = np.array([p["threshold"] is not None for p in up])
    for branch in ("low_branch", "high_branch"):  # each branch where two stable states coexist
        right.plot(cost, np.where(bistable, [p[branch] for p in up], np.nan), color="gray", linewidth=3, alpha=0.4)
    single = np.where(bistable, np.nan, [p["low_branch"] for p in up])
    right.plot(cost, single, color="gray", linewidth=3, alpha=0.4)
    right.plot(cost, [np.nan if p["threshold"] is None else p["threshold"] for p in up], color="gray", linestyle="--")
    for direction, marker, color in (("up", "^", "C3"), ("down", "v", "C0")):
        rows = [p for p in results["sweep"] if p["direction"] == direction]
        right.plot([p["c_mean"] for p in rows], [p["simulated"] for p in rows], marker, color=color, label=direction)
        right.plot([p["c_mean"] for p in rows], [p["mean_field"] for p in rows], color=color, linewidth=1)
    right.set(
        xlabel="mean participation cost c_mean",
        ylabel="participation after each step",
        title="sweep up then down (grey: stable branches, dashed: threshold)",
    )
    for ax in (left, right):
        ax.title.set_fontsize(9)
        ax.legend(fontsize="x-small")
    fig.suptitle("[G] Fig. 2: hysteresis of participation", fontsize=10)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


__all__ = ["COSTS", "STARTS", "reproduce"]
