"""Sanctions and information design against metric gaming ([G] §9, Thm 9.2, Thm 9.4 and its Fig. 5; SPEC §3):
the Manipulability Index and the Price of Gaming over the challenge-mixing ratio ``pi`` and the sanction ``S``,
simulated in ``participation_v0`` beside the mean-field closed forms.

``fedgames reproduce gaming-design --out DIR``. For every ``(pi, S)`` of a grid, with ``audit:k,p_detect,S`` and
``challenge_mixing:pi,mixing=expected`` (every participant paid ``(1 - pi) s + pi h``: the incentives of random
challenges in expectation, without their extra variance):

- **Manipulability Index** ``Mi = max(g, 0)``, ``g`` the gaming slope
  (:func:`~fedgames.envs.participation.theory.manipulability_index` at full participation). Simulated: one client
  games fully (``u = 1``) while the others are honest, against all honest, on common random numbers; the mean
  paired difference of its round reward (with its standard error) is the exact gain
  (:func:`~fedgames.envs.participation.theory.gaming_gain`), which ``g`` linearises.
- **Price of Gaming** ``PoG = (W_honest - W_eq) / W_honest``: myopic clients
  (:class:`~fedgames.agents.MyopicParticipant`) started at full participation play honestly, or their myopic best
  reply (``u="best"``), for ``rounds`` rounds; each episode's relative loss of welfare averaged over the last
  ``window`` rounds, paired by seed, gives the simulated PoG and its standard error, against the same average
  along the mean-field paths (:func:`~fedgames.envs.participation.theory.mean_field_path`). With ``k`` audits a
  round those paths may cycle: as gamers leave, each remaining one's audit risk ``k / |P|`` grows until gaming
  stops paying, participation recovers and gaming resumes. The long-run
  :func:`~fedgames.envs.participation.theory.price_of_gaming` (500 rounds) is reported beside it.

Both fall as ``pi`` and ``S`` grow: gaming stops paying once ``w((1 - pi) delta - gamma q0)`` drops below the
expected sanction ``(k / |P|) p_detect S`` (plus the welfare a gamer destroys for itself); alignment
(``(1 - pi) delta <= gamma q0``) ends it without any sanction. Writes ``results.json``, ``design.csv`` and
``design.png`` (both indices against ``pi``, one curve per ``S``: the closed forms as lines, the simulations as
points with 2-standard-error bars).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import fedgames
from fedgames.agents import MyopicParticipant
from fedgames.envs.batch import episode_batch
from fedgames.envs.participation import theory
from fedgames.files import csv_text, json_text, write_atomic
from fedgames.validation import integer

DESIGN_CONFIG: dict[str, Any] = {"n_players": 2000, "c_mean": 0.9, "c_std": 0.3}
"""``participation_v0``'s defaults otherwise (``w = 0.5``, ``gamma = 0.5``, ``delta = 1``, exponential welfare):
gaming pays without mechanisms (``w(delta - gamma q0) = 0.25`` a round), and costs that some clients cannot cover,
so participation reacts to the welfare gaming destroys."""

AUDITS: dict[str, Any] = {"k": 200, "p_detect": 0.5}
"""A tenth of the clients audited a round (at full participation), full manipulation caught half the time."""

PI_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
SANCTIONS = (0.0, 2.0, 4.0, 6.0)


def _env(config: dict[str, Any], pi: float, S: float, rounds: int) -> Any:
    mixing = f"challenge_mixing:pi={pi},mixing=expected"  # the expected paid score, as [G] Thm 9.4 prices it
    mechanisms = [mixing, f"audit:k={AUDITS['k']},p_detect={AUDITS['p_detect']},S={S}"]
    return fedgames.make("participation_v0", mechanisms=mechanisms, rounds=rounds, **config)


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def _gain_from_gaming(env: Any, episodes: int, seed: int) -> np.ndarray:
    """Per episode, client 0's round reward gaming fully minus honest, the others honest and present, on common
    random numbers."""
    n = len(env.possible_agents)
    rewards = []
    for u in (1.0, 0.0):
        batch = episode_batch(env, episodes, np.random.default_rng(seed))
        batch.reset()
        actions = np.zeros((episodes, n, 2))
        actions[..., 0] = 1.0
        actions[:, 0, 1] = u
        rewards.append(batch.step(actions).rewards[:, 0])
    return rewards[0] - rewards[1]


def _late_welfare(env: Any, u: float | str, episodes: int, window: int, seed: int) -> np.ndarray:
    """Per episode, the welfare of myopic clients playing ``u`` (or ``"best"``) from full participation, averaged
    over the last ``window`` rounds."""
    batch = episode_batch(env, episodes, np.random.default_rng(seed))
    observations, policy = batch.reset(), MyopicParticipant(env, u)
    rng, welfare = np.random.default_rng(0), []
    while True:
        step = batch.step(policy.act(observations, rng))
        observations = step.observations
        welfare.append(step.outcome.welfare)
        if step.done:
            return np.mean(welfare[-window:], axis=0)


def reproduce(
    out: str | Path,
    pis: Sequence[float] = PI_GRID,
    sanctions: Sequence[float] = SANCTIONS,
    gain_episodes: int = 1000,
    welfare_episodes: int = 16,
    rounds: int = 40,
    window: int = 20,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the experiment and write its files to ``out``; returns what ``results.json`` holds.

    Args:
        out: the results folder.
        pis, sanctions: the grid of challenge-mixing ratios (in ``[0, 1]``) and sanctions (``>= 0``).
        gain_episodes: paired episodes of the gain from gaming at each grid point (``>= 2``).
        welfare_episodes: paired episodes of the myopic clients' welfare at each grid point.
        rounds: rounds the myopic clients play.
        window: the last rounds whose welfare is averaged (``1 <= window <= rounds``).
        seed: seeds every simulation (common random numbers across the grid).
        config: ``participation_v0`` settings (default :data:`DESIGN_CONFIG`); the audits are :data:`AUDITS`.
    """
    gain_episodes, welfare_episodes = (
        integer("gain_episodes", gain_episodes, 2),
        integer("welfare_episodes", welfare_episodes, 2),
    )
    rounds = integer("rounds", rounds, 1)
    window = integer("window", window, 1)
    if window > rounds:
        raise ValueError(f"window must be at most rounds = {rounds}, got {window}")
    config = dict(DESIGN_CONFIG if config is None else config)
    fixed = sorted({"rounds", "initial_participation"} & set(config))
    if fixed:
        raise ValueError(f"config: {fixed} are the experiment's own (it starts at full participation)")
    if not len(pis) or not len(sanctions):
        raise ValueError(f"pis and sanctions must each hold at least one value, got {list(pis)} and {list(sanctions)}")
    grid = [(float(pi), float(S)) for S in sanctions for pi in pis]
    honest: np.ndarray | None = None  # the honest path does not depend on pi or S: a sanction needs gaming
    honest_mean_field = None
    points = []
    for pi, S in tqdm(grid, desc="(pi, S)", disable=not progress):
        env = _env(config, pi, S, rounds)
        setting = theory.Setting.from_env(env)
        n, z = setting.n_players, setting.q0
        gain, gain_se = _mean_se(_gain_from_gaming(env, gain_episodes, seed))
        if honest is None:
            honest = _late_welfare(env, 0.0, welfare_episodes, window, seed)
            honest_mean_field = theory.mean_field_path(setting, 1.0, rounds, u=0.0).welfare[-window:].mean()
        path = theory.mean_field_path(setting, 1.0, rounds)
        pog, pog_se = _mean_se((honest - _late_welfare(env, "best", welfare_episodes, window, seed)) / honest)
        points.append(
            {
                "pi": pi,
                "S": S,
                "Mi": theory.manipulability_index(setting, n, z),
                "gain": theory.gaming_gain(setting, n, z),
                "gain_sim": gain,
                "gain_se": gain_se,
                "minimum_sanction": theory.minimum_sanction(setting, n, z),
                "gaming_rounds": float(path.u[-window:].mean()),
                "participation": float(path.x[-window:].mean()),
                "PoG": float(1.0 - path.welfare[-window:].mean() / honest_mean_field),
                "PoG_sim": pog,
                "PoG_se": pog_se,
                "PoG_long_run": theory.price_of_gaming(setting),
            }
        )
    results = {
        "experiment": "gaming-design",
        "config": config | {"rounds": rounds, "window": window},
        "audits": AUDITS,
        "seed": seed,
        "gain_episodes": gain_episodes,
        "welfare_episodes": welfare_episodes,
        "points": points,
    }
    out = Path(out)
    write_atomic(out / "results.json", json_text(results))
    write_atomic(out / "design.csv", csv_text(points))
    _figure(out / "design.png", points)
    return results


def _figure(path: Path, points: list[dict[str, Any]]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    for k, S in enumerate(sorted({p["S"] for p in points})):
        rows = [p for p in points if p["S"] == S]
        pis = [p["pi"] for p in rows]
        color = f"C{k}"
        for ax, line, sim, se in ((axes[0], "gain", "gain_sim", "gain_se"), (axes[1], "PoG", "PoG_sim", "PoG_se")):
            ax.plot(pis, [p[line] for p in rows], color=color, label=f"S = {S:g}")
            ax.errorbar(
                pis,
                [p[sim] for p in rows],
                yerr=[2 * p[se] for p in rows],
                fmt="o",
                color=color,
                markersize=4,
                capsize=2,
            )
        axes[0].plot(pis, [p["Mi"] for p in rows], color=color, linestyle=":", linewidth=1)
    axes[0].axhline(0.0, color="gray", linewidth=0.6)
    axes[0].set(
        xlabel="challenge-mixing ratio pi",
        ylabel="round gain of gaming (u = 1) over honesty",
        title="gain from gaming (line: exact, dotted: Mi = max(g, 0); points: simulated)",
    )
    axes[1].set(
        xlabel="challenge-mixing ratio pi",
        ylabel="PoG = (W_honest - W_eq) / W_honest",
        title="Price of Gaming (line: mean field; points: myopic clients)",
    )
    for ax in axes:
        ax.title.set_fontsize(9)
        ax.legend(fontsize="small")
    fig.suptitle("[G] Thm 9.2 / 9.4: sanctions and challenge mixing against metric gaming", fontsize=10)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


__all__ = ["AUDITS", "DESIGN_CONFIG", "PI_GRID", "SANCTIONS", "reproduce"]
