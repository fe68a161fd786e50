"""The retention map and its fixed points ([G] Fig. 3, Thm 7.2; SPEC §3 "Retention map"): ``G(x)`` of the
mean-field theory beside one simulated round of ``participation_v0`` from each participation level.

``fedgames reproduce retention-map --out DIR``. For a grid of participation levels ``x``: myopic clients
(:class:`~fedgames.agents.MyopicParticipant`, through :func:`~fedgames.eval.domino.myopic_paths`) started at ``x``
play one round in ``episodes`` independent episodes; the mean participating fraction and its standard error
against ``G(x)`` (:func:`~fedgames.envs.participation.theory.retention_map`: with ``N`` clients whose costs are
drawn independently, the fraction is ``G(x)`` in expectation, with variance ``G (1 - G) / N``). With it the steady
states (stable where ``|G'| < 1``) and the domino threshold, and ``G`` for lower and higher participation costs
(``c_mean``), which shift it up and down and move the threshold. Writes ``results.json``, ``map.csv`` and
``retention_map.png``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

import fedgames
from fedgames.envs.participation import theory
from fedgames.eval.domino import DOMINO_CONFIG, myopic_paths, retention_panel
from fedgames.files import csv_text, json_text, write_atomic
from fedgames.validation import integer, real

COST_SHIFTS = (-0.1, 0.0, 0.1)
"""Participation costs ``c_mean`` relative to the configuration's, for the family of maps."""


def _steady_states(states: list[theory.SteadyState]) -> list[dict[str, Any]]:
    return [{"x": s.x, "slope": s.slope, "stable": s.stable} for s in states]


def reproduce(
    out: str | Path,
    n_players: int = 2000,
    episodes: int = 20,
    grid: int = 21,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    cost_shifts: Sequence[float] = COST_SHIFTS,
) -> dict[str, Any]:
    """Run the experiment and write its files to ``out``; returns what ``results.json`` holds.

    Args:
        out: the results folder.
        n_players: clients per episode.
        episodes: independent one-round episodes per participation level (``>= 2``).
        grid: participation levels, evenly spaced on ``[0, 1]`` (``>= 2``).
        seed: seeds the costs (one stream per level).
        config: ``participation_v0`` settings (default :data:`~fedgames.eval.domino.DOMINO_CONFIG`).
        cost_shifts: changes of ``c_mean`` for the family of maps (0 is the configuration's).
    """
    n_players, episodes = integer("n_players", n_players, 2), integer("episodes", episodes, 2)
    grid = integer("grid", grid, 2)
    config = dict(DOMINO_CONFIG if config is None else config)
    fixed = sorted({"n_players", "rounds", "initial_participation"} & set(config))
    if fixed:
        raise ValueError(f"config: {fixed} are the experiment's own arguments (or its starting points)")
    setting = theory.Setting.from_env(fedgames.make("participation_v0", n_players=n_players, **config))
    states = theory.steady_states(setting)
    points = []
    for k, x in enumerate(np.linspace(0.0, 1.0, grid)):
        after = myopic_paths(config, n_players, 1, float(x), np.random.default_rng([seed, k]), episodes).paths[1]
        predicted = theory.retention_map(float(x), setting)
        points.append(
            {
                "x": float(x),
                "G": predicted,
                "simulated": float(after.mean()),
                "se": float(after.std(ddof=1) / math.sqrt(episodes)),
                "se_theory": math.sqrt(predicted * (1 - predicted) / (n_players * episodes)),
            }
        )
    family = []
    for shift in cost_shifts:
        c_mean = setting.c_mean + real("cost_shifts", shift, -math.inf)
        shifted = replace(setting, c_mean=c_mean)
        family.append(
            {
                "c_mean": c_mean,
                "steady_states": _steady_states(theory.steady_states(shifted)),
                "threshold": theory.domino_threshold(shifted),
            }
        )
    results = {
        "experiment": "retention-map",
        "config": config | {"n_players": n_players},
        "episodes": episodes,
        "seed": seed,
        "steady_states": _steady_states(states),
        "threshold": theory.domino_threshold(setting),
        "points": points,
        "family": family,
    }
    out = Path(out)
    write_atomic(out / "results.json", json_text(results))
    write_atomic(out / "map.csv", csv_text(points))
    _figure(out / "retention_map.png", setting, states, results)
    return results


def _figure(path: Path, setting: theory.Setting, states: list[theory.SteadyState], results: dict[str, Any]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    left, right = fig.subplots(1, 2)
    retention_panel(left, setting, states)
    points = results["points"]
    left.errorbar(
        [p["x"] for p in points],
        [p["simulated"] for p in points],
        yerr=[2 * max(p["se"], p["se_theory"]) for p in points],
        fmt="s",
        color="C3",
        markersize=3,
        capsize=2,
        label="one simulated round",
    )
    if results["threshold"] is not None:
        left.axvline(results["threshold"], color="black", linestyle="--", linewidth=0.8, label="domino threshold")
    left.set(title="[G] Fig. 3: G(x); circles: steady states (open: unstable)")
    for entry in results["family"]:
        shifted = replace(setting, c_mean=entry["c_mean"])
        retention_panel(right, shifted, theory.steady_states(shifted), label=f"c_mean = {entry['c_mean']:.2f}")
    right.set(title="costlier participation shifts G down and the threshold up")
    for ax in (left, right):
        ax.title.set_fontsize(9)
        ax.legend(fontsize="small")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


__all__ = ["COST_SHIFTS", "reproduce"]
