"""PNG figures: regret bars, learning curves, and a player's payoff against its own alpha ([H] Fig. 1 style)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.agents.rollout import simulate
from fedgames.envs.contract import ActionProfile, as_actions, closed_form
from fedgames.envs.policy import constant_policies
from fedgames.files import write_atomic

if TYPE_CHECKING:
    from fedgames.eval.nash import NashReport


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    target = Path(path)
    write_atomic(target, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    _pyplot().close(fig)
    return target


def plot_regret(report: NashReport, path: str | Path) -> Path:
    """Bars of each checked player's regret with its interval; grid upper bounds as markers; the tolerance."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(report.players) + 2), 4))
    x = np.arange(len(report.players))
    regrets = np.array([p.regret for p in report.players])
    lows = regrets - np.array([p.ci[0] for p in report.players])
    highs = np.array([p.ci[1] for p in report.players]) - regrets
    colors = {"consistent": "tab:green", "refuted": "tab:red", "inconclusive": "tab:orange"}
    ax.bar(x, regrets, yerr=[lows, highs], capsize=4, color=[colors[p.verdict] for p in report.players])
    uppers = [(k, p.upper_bound) for k, p in enumerate(report.players) if p.upper_bound is not None]
    if uppers:
        ax.plot(*zip(*uppers), "kv", label="grid upper bound")
    ax.axhline(report.tolerance, color="gray", linestyle="--", label=f"tolerance {report.tolerance:g}")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x, [f"{p.agent}\n{p.verdict}" for p in report.players])
    ax.set_ylabel(f"regret ({report.level:.0%} interval)")
    ax.set_title(f"{report.env}: {report.profile}, NashConv {report.nash_conv:.4f}", fontsize=10)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_learning_curves(report: NashReport, path: str | Path) -> Path:
    """Mean episode return against timesteps (episodes of a one-round game, rounds of a multi-round one) for every
    seed of every learned best response."""
    plt = _pyplot()
    from matplotlib.ticker import EngFormatter, MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    for player in report.players:
        for seed, curve in enumerate(player.curves):
            steps, values = np.array(curve).T
            ax.plot(steps, values, label=f"{player.agent} seed {seed}", alpha=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1.5M: labels that do not run into each other
    ax.set(xlabel="timesteps", ylabel="mean episode return of the learner", title="best-response learning")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_reward_vs_alpha(
    curves: Sequence[tuple[str, ParallelEnv]],
    profile: ActionProfile | np.ndarray,
    path: str | Path,
    player: int = 0,
    points: int = 9,
    episodes: int = 20_000,
    seed: int = 0,
    batch_size: int | None = None,
) -> Path:
    """Player ``player``'s expected reward against its own first action component (``alpha``), the others fixed
    at the constant ``profile`` (a mean-estimation ``Profile`` or actions ``(N, k)``), one curve per ``(label,
    env)`` (e.g. several mechanism strengths, as [H] Fig. 1): closed form as lines
    (:meth:`~fedgames.envs.contract.TheoryAdapter.payoff`), simulated means as dots with 2-SE bars, each point's
    ``episodes`` played ``batch_size`` at a time (:func:`~fedgames.agents.rollout.simulate`; ``None``: the env's
    default)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    actions = as_actions(profile)
    component = curves[0][1].protocol.action_names[0]

    def deviation(env: ParallelEnv, value: float) -> np.ndarray:
        trial = actions.copy()
        trial[player, env.protocol.action_index(component)] = value
        return trial

    for label, env in curves:
        closed = closed_form(env)
        if closed is None:
            raise ValueError(f"plot_reward_vs_alpha: {label} has no closed form")
        protocol = env.protocol
        index = protocol.action_index(component)
        low, top = float(protocol.action_low[index]), float(protocol.action_high[index])
        line = np.linspace(low, top, 200)
        (drawn,) = ax.plot(line, [closed.payoff(deviation(env, a), player) for a in line], label=label)
        dots = np.linspace(low, top, points)
        means, errors = [], []
        for k, a in enumerate(dots):
            policies = constant_policies(deviation(env, a), env.possible_agents)
            played = simulate(env, policies, episodes, seed=seed + k, batch_size=batch_size)
            mean, se = played.mean_and_se("rewards")
            means.append(mean[player])
            errors.append(2 * se[player])
        ax.errorbar(dots, means, yerr=errors, fmt="o", capsize=3, color=drawn.get_color())
    agent = curves[0][1].possible_agents[player]
    ax.set(
        xlabel=f"{component} of {agent}",
        ylabel="expected reward",
        title=f"lines: closed form; dots: simulation ({episodes} episodes, ±2 SE)",
    )
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)
