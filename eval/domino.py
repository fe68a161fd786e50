"""Domino exits in the participation game ([G] Thm 7.2; SPEC §3 "Retention map"): simulation against the
mean-field map.

``fedgames reproduce domino --out DIR``: ``participation_v0`` with myopic clients
(:class:`~fedgames.agents.MyopicParticipant`), started at several participation levels around the domino threshold
of the retention map ``G``; each run's path ``x_0, x_1, ...`` beside the mean-field path
(:func:`~fedgames.envs.participation.theory.iterate_retention`: with rejoining, to the stable state on the start's
side of the threshold; with permanent exits, stuck at ``G(x_0)`` above it). Writes ``results.json``
(the steady states, the threshold, every path, where the theory says it ends and the warnings the server's monitor
raised on the way, SPEC §9), ``paths.csv`` and
``retention_map.png`` (``G`` against the diagonal with the simulated steps ``(x_t, x_{t+1})``; the paths over the
rounds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import fedgames
from fedgames.agents import MyopicParticipant
from fedgames.envs.batch import episode_batch
from fedgames.envs.participation import theory
from fedgames.envs.participation.monitor import Monitor, env_monitor
from fedgames.files import csv_text, json_text, write_atomic
from fedgames.validation import integer

DOMINO_CONFIG: dict[str, Any] = {"welfare": "s_shaped", "w": 0.2, "c_mean": 0.8, "c_std": 0.15, "h": 4.0, "z0": 0.5}
"""An S-shaped welfare and costly participation: the retention map crosses the diagonal three times."""


@dataclass(frozen=True)
class MyopicRun:
    """Runs of honest myopic clients: their participation paths ``(rounds + 1, episodes)`` (row 0 the start, row
    ``t`` the fraction taking part in round ``t``) and the server-side monitor that watched them (SPEC §9,
    :class:`~fedgames.envs.participation.monitor.Monitor`: which warnings fired, when)."""

    paths: np.ndarray
    monitor: Monitor


def myopic_paths(
    config: dict[str, Any],
    n_players: int,
    rounds: int,
    start: float,
    rng: np.random.Generator,
    episodes: int = 1,
) -> MyopicRun:
    """``episodes`` runs of ``participation_v0`` (``config``) with honest myopic clients
    (:class:`~fedgames.agents.MyopicParticipant`) started at participation ``start``, watched by the server's
    monitor (:func:`~fedgames.envs.participation.monitor.env_monitor`)."""
    env = fedgames.make("participation_v0", n_players=n_players, rounds=rounds, initial_participation=start, **config)
    batch = episode_batch(env, episodes, rng)
    monitor = env_monitor(env, batch=episodes)
    observations, policy, path = batch.reset(), MyopicParticipant(env), [np.full(episodes, start)]
    for _ in range(rounds):
        step = batch.step(policy.act(observations, np.random.default_rng(0)))
        observations, outcome = step.observations, step.outcome
        monitor.update(
            outcome.present,
            outcome.messages[..., 1],
            outcome.messages[..., 2],
            outcome.aggregate[:, 0],
            outcome.messages[..., 6] > 0,
        )
        path.append(outcome.present.mean(1))
    return MyopicRun(np.array(path), monitor)


def reproduce(
    out: str | Path,
    n_players: int = 2000,
    rounds: int = 30,
    seed: int = 0,
    rejoin: bool = True,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the experiment and write its files to ``out``; returns what ``results.json`` holds.

    Args:
        out: the results folder.
        n_players: clients per run (the mean field is the limit of many).
        rounds: rounds per run.
        seed: seeds the costs and the scores' noise.
        rejoin: clients decide afresh every round (participation can recover above the threshold); ``False``: an
            exit is for good (:func:`~fedgames.envs.participation.theory.iterate_retention` then predicts a path
            that can only fall).
        config: other ``participation_v0`` settings (default :data:`DOMINO_CONFIG`); ``ValueError`` if its
            retention map has no domino threshold.
    """
    n_players, rounds = integer("n_players", n_players, 2), integer("rounds", rounds, 1)
    config = dict(DOMINO_CONFIG if config is None else config)
    fixed = sorted({"n_players", "rounds", "rejoin", "initial_participation"} & set(config))
    if fixed:
        raise ValueError(f"config: {fixed} are the experiment's own arguments (or its starting points)")
    config["rejoin"] = bool(rejoin)
    probe = fedgames.make("participation_v0", n_players=n_players, **config)
    setting = theory.Setting.from_env(probe)
    states = theory.steady_states(setting)
    threshold = theory.domino_threshold(setting)
    if threshold is None:
        raise ValueError(
            f"this configuration's retention map has no domino threshold (steady states: "
            f"{[round(s.x, 4) for s in states]}); the experiment needs three crossings"
        )
    starts = sorted(
        {0.2, max(threshold - 0.1, 0.0), threshold - 0.02, threshold + 0.02, min(threshold + 0.1, 1.0), 1.0}
    )
    runs = []
    for k, start in enumerate(starts):
        run = myopic_paths(config, n_players, rounds, start, np.random.default_rng([seed, k]))
        path = run.paths[:, 0].tolist()
        predicted = theory.iterate_retention(start, setting, rounds=rounds, rejoin=rejoin)[-1]
        runs.append(
            {
                "start": start,
                "path": path,
                "final": path[-1],
                "predicted": float(predicted),
                "warnings": run.monitor.report(),
            }
        )
    results = {
        "experiment": "domino",
        "config": config | {"n_players": n_players, "rounds": rounds},
        "seed": seed,
        "steady_states": [{"x": s.x, "slope": s.slope, "stable": s.stable} for s in states],
        "threshold": threshold,
        "runs": runs,
    }
    out = Path(out)
    write_atomic(out / "results.json", json_text(results))
    write_atomic(out / "paths.csv", _paths_csv(runs))
    _figure(out / "retention_map.png", setting, states, threshold, runs)
    return results


def _paths_csv(runs: list[dict[str, Any]]) -> str:
    return csv_text(
        [{"start": run["start"], "round": t, "participation": x} for run in runs for t, x in enumerate(run["path"])],
        ("start", "round", "participation"),
    )


def retention_panel(ax: Any, setting: theory.Setting, states: list[theory.SteadyState], label: str = "G(x)") -> None:
    """Draw the retention map ``G`` of ``setting`` against the diagonal on the matplotlib axes ``ax``, with its
    steady states (filled: stable, open: unstable; [G] Thm 7.2)."""
    xs = np.linspace(0, 1, 400)
    line = ax.plot(xs, [theory.retention_map(x, setting) for x in xs], label=f"{label}, mean field")[0]
    ax.plot(xs, xs, color="gray", linestyle=":")
    for state in states:
        ax.plot(
            state.x, state.x, "o", markersize=8, color=line.get_color(), fillstyle="full" if state.stable else "none"
        )
    ax.set(xlabel="participation x(t)", ylabel="x(t+1)")


def _figure(
    path: Path, setting: theory.Setting, states: list[theory.SteadyState], threshold: float, runs: list[dict[str, Any]]
) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    left, right = fig.subplots(1, 2)
    retention_panel(left, setting, states)
    for run in runs:
        left.plot(run["path"][:-1], run["path"][1:], ".", markersize=4, alpha=0.6)
    left.set(title="retention map; dots: simulated steps (x(t), x(t+1)); circles: steady states (open: unstable)")
    left.title.set_fontsize(9)
    left.legend(fontsize="small")
    for run in runs:
        right.plot(run["path"], label=f"x_0 = {run['start']:.3f}")
    right.axhline(threshold, color="black", linestyle="--", linewidth=0.8, label=f"threshold {threshold:.3f}")
    right.set(xlabel="round", ylabel="participation", title="[G] Thm 7.2: domino exits below the threshold")
    right.title.set_fontsize(9)
    right.legend(fontsize="x-small")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


__all__ = ["DOMINO_CONFIG", "MyopicRun", "myopic_paths", "reproduce", "retention_panel"]
