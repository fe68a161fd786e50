"""The variance / gaming-sensitivity trade-off of the reported metric's aggregation rule ([G] §9, Prop. 9.3;
SPEC §3 "Signals", §4 robust aggregation), simulated in ``participation_v0`` beside the closed forms of
:mod:`fedgames.envs.participation.metric_theory`.

``fedgames reproduce aggregation-frontier --out DIR``: ``n`` clients all take part; in every episode each games
fully (``u = 1``) with probability ``eps``, the others are honest. The server reports ``M = Agg(y)`` with the mean,
trimmed means and the median (``robust_aggregation``). For every ``(eps, rule)`` the episodes give the metric's
gaming bias ``E[M] - q0`` and its standard deviation, against the exact bias
(:func:`~fedgames.envs.participation.metric_theory.metric_bias`) and the large-``n`` deviation
(:func:`~fedgames.envs.participation.metric_theory.metric_sd`). Writes ``results.json``, ``frontier.csv`` and
``frontier.png`` (bias against standard deviation, one curve per ``eps`` through the trimming fractions: the
lower-left boundary is the Pareto frontier).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import fedgames
from fedgames.envs.batch import episode_batch
from fedgames.envs.participation import metric_theory, theory
from fedgames.files import csv_text, json_text, write_atomic
from fedgames.validation import integer

FRONTIER_CONFIG: dict[str, Any] = {"n_players": 1001}
"""Full gaming adds ``b = delta - gamma q0 = 0.5`` to a paid score, five times its noise ``tau = 0.1`` (the
defaults). Many clients, as in cross-device learning, where the large-``n`` standard deviation holds: with 101 it
misses by up to 40% where a trimming quantile or the median falls between the honest and the gaming scores."""

CONTAMINATION = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4)
RULES: tuple[tuple[str, float], ...] = (
    ("mean", 0.0),
    ("trimmed_mean", 0.1),
    ("trimmed_mean", 0.2),
    ("trimmed_mean", 0.3),
    ("trimmed_mean", 0.4),
    ("median", 0.0),
)
"""``(rule, trimming fraction)``."""


def _mechanisms(rule: str, fraction: float) -> list[str]:
    if rule == "mean":
        return []
    spec = f"robust_aggregation:rule={rule}" + (f",fraction={fraction}" if rule == "trimmed_mean" else "")
    return [spec]


def _metrics(env: Any, eps: float, episodes: int, seed: int) -> np.ndarray:
    """The metric of ``episodes`` one-round episodes in which every client takes part and games with probability
    ``eps`` (the same draws for every rule: common random numbers)."""
    n = len(env.possible_agents)
    batch = episode_batch(env, episodes, np.random.default_rng(seed))
    batch.reset()
    actions = np.ones((episodes, n, 2))
    actions[..., 1] = np.random.default_rng([seed, 1]).random((episodes, n)) < eps
    return batch.step(actions).outcome.aggregate[:, 0]


def reproduce(
    out: str | Path,
    contamination: Sequence[float] = CONTAMINATION,
    rules: Sequence[tuple[str, float]] = RULES,
    episodes: int = 2000,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the experiment and write its files to ``out``; returns what ``results.json`` holds.

    Args:
        out: the results folder.
        contamination: the gaming probabilities ``eps`` (in ``[0, 1]``).
        rules: ``(rule, fraction)`` pairs: ``mean``, ``median``, or ``trimmed_mean`` with its fraction.
        episodes: episodes per point (``>= 2``).
        seed: seeds the episodes and who games (common random numbers across rules).
        config: ``participation_v0`` settings (default :data:`FRONTIER_CONFIG`).
    """
    episodes = integer("episodes", episodes, 2)
    if not len(contamination) or not len(rules):
        raise ValueError(
            f"contamination and rules must each hold at least one value, got {list(contamination)} and {list(rules)}"
        )
    config = dict(FRONTIER_CONFIG if config is None else config)
    if "rounds" in config:
        raise ValueError("config: rounds is the experiment's own (one round per episode)")
    points = []
    for rule, fraction in tqdm(rules, desc="rules", disable=not progress):
        env = fedgames.make("participation_v0", mechanisms=_mechanisms(rule, fraction), rounds=1, **config)
        setting = theory.Setting.from_env(fedgames.make("participation_v0", rounds=1, **config))
        b = (1 - setting.pi) * setting.delta - setting.gamma * setting.q0
        tau = metric_theory.paid_score_spread(setting.score_noise, setting.challenge_noise, setting.pi)
        n = setting.n_players
        for eps in contamination:
            bias = _metrics(env, float(eps), episodes, seed) - setting.q0
            sd = float(bias.std(ddof=1))
            points.append(
                {
                    "rule": rule,
                    "fraction": fraction,
                    "eps": float(eps),
                    "bias": metric_theory.metric_bias(rule, n, eps, b, tau, fraction),
                    "bias_sim": float(bias.mean()),
                    "bias_se": sd / math.sqrt(episodes),
                    "sd": metric_theory.metric_sd(rule, n, eps, b, tau, fraction),
                    "sd_sim": sd,
                    "sd_se": sd / math.sqrt(2 * (episodes - 1)),
                }
            )
    results = {
        "experiment": "aggregation-frontier",
        "config": config,
        "episodes": episodes,
        "seed": seed,
        "points": points,
    }
    out = Path(out)
    write_atomic(out / "results.json", json_text(results))
    write_atomic(out / "frontier.csv", csv_text(points))
    _figure(out / "frontier.png", points)
    return results


def _label(point: dict[str, Any]) -> str:
    return {"mean": "mean", "median": "median"}.get(point["rule"], f"trim {point['fraction']:g}")


def _figure(path: Path, points: list[dict[str, Any]]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.subplots()
    for k, eps in enumerate(sorted({p["eps"] for p in points})):
        rows = [p for p in points if p["eps"] == eps]
        color = f"C{k}"
        ax.plot([p["sd"] for p in rows], [p["bias"] for p in rows], color=color, label=f"eps = {eps:g}")
        ax.errorbar(
            [p["sd_sim"] for p in rows],
            [p["bias_sim"] for p in rows],
            xerr=[2 * p["sd_se"] for p in rows],
            yerr=[2 * p["bias_se"] for p in rows],
            fmt="o",
            color=color,
            markersize=3,
            capsize=2,
        )
        if k == len({p["eps"] for p in points}) - 1:
            for p in rows:
                ax.annotate(_label(p), (p["sd"], p["bias"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(
        xlabel="standard deviation of the metric",
        ylabel="gaming bias E[M] - q0",
        title="[G] Prop. 9.3: mean -> trimmed means -> median (line: closed form; points: simulated, 2 SE)",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize="small")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


__all__ = ["CONTAMINATION", "FRONTIER_CONFIG", "RULES", "reproduce"]
