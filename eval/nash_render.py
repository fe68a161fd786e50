"""Markdown rendering of a Nash check's report (:class:`~fedgames.eval.nash.NashReport`), apart from the
statistics that :mod:`fedgames.eval.nash` computes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedgames.text import strategy_text

if TYPE_CHECKING:
    from fedgames.eval.nash import NashReport


def render_markdown(report: NashReport) -> str:
    """The report as Markdown: the check's setting, the profile's verdict and NashConv, a table per player
    (verdict, regret, interval, upper bound; candidate, predicted and found replies), budgets, grid searches and
    caveats."""
    lines = [
        f"# Nash check: {report.env}, profile `{report.profile}`",
        "",
        f"- mechanisms: {', '.join(report.mechanisms) or 'none'}",
        f"- config: `{json.dumps(report.config)}`",
        f"- {report.episodes} episodes per estimate (common random numbers), paired {report.interval} "
        f"{report.level:.0%} intervals, tolerance {report.tolerance_text()}, seed {report.seed}, {report.batch_size} "
        f"episodes at a time; {report.checked}",
        f"- **profile: {report.verdict}**; NashConv = {_nash_conv_text(report.nash_conv)}, interval "
        f"[{report.nash_conv_interval[0]:.5f}, {report.nash_conv_interval[1]:.5f}] (this and the profile's verdict "
        f"hold jointly at confidence >= {report.joint_level:.0%}, Bonferroni over the {len(report.players)} checked "
        "player(s))",
        "",
        "| agent | verdict | regret | interval | upper bound | oracle (proves) | plateau |",
        "| --- | --- | ---: | --- | ---: | --- | :---: |",
    ]
    for p in report.players:
        upper = "-" if p.upper_bound is None else _bound_text(p.upper_bound)
        plateau = "-" if p.plateau is None else ("yes" if p.plateau else "NO")
        lines.append(
            f"| {p.agent} | **{p.verdict}** | {'n/a' if np.isnan(p.regret) else f'{p.regret:+.5f}'} | "
            f"[{p.ci[0]:+.5f}, {p.ci[1]:+.5f}] | "
            f"{upper} | {p.oracle} ({p.proves}) | {plateau} |"
        )
    lines += [
        "",
        "| agent | candidate | predicted best reply | found best reply | distance |",
        "| --- | --- | --- | --- | ---: |",
    ]
    for p in report.players:
        distance = "-" if p.distance_to_prediction is None else f"{p.distance_to_prediction:.4f}"
        lines.append(f"| {p.agent} | {_fmt(p.candidate)} | {_fmt(p.predicted)} | {_fmt(p.learned)} | {distance} |")
    lines += ["", "Budgets:", ""] + [f"- {p.agent}: `{json.dumps(p.budget, default=float)}`" for p in report.players]
    searched = [(p.agent, p.search) for p in report.players if p.search]
    lines += ["", "Grid searches (the upper bound is the largest cell bound left):", ""] if searched else []
    lines += [f"- {agent}: {_search_text(search)}" for agent, search in searched]
    for p in report.players:
        for other in p.other_oracles:
            lines.append(
                f"- {p.agent}, also {other['oracle']} ({other['proves']}): regret {other['regret']:+.5f} "
                f"[{other['ci'][0]:+.5f}, {other['ci'][1]:+.5f}]"
                + ("" if other["upper_bound"] is None else f", upper bound {_bound_text(other['upper_bound'])}")
            )
    notes = [f"- {p.agent}: {note}" for p in report.players for note in p.notes]
    lines += ["", "Caveats:", "", *notes] if notes else []
    lines += [
        "",
        "A learned reply gives a lower bound on the regret: 'consistent' then says that no reply it "
        "found gains the tolerance. A grid with a slope bound also gives an upper bound over "
        "observation-independent strategies (the bracket is [interval low, upper bound]), and "
        "'consistent' needs that bound below the tolerance. With several oracles each interval is at the "
        "Bonferroni level and the verdict reads the largest regret found.",
    ]
    return "\n".join(lines) + "\n"


def _nash_conv_text(value: float) -> str:
    return "n/a (a player's paired episodes diverged: see the caveats)" if np.isnan(value) else f"{value:.5f}"


def _bound_text(value: float) -> str:
    """An upper bound; ``inf`` (a grid cell without an estimate: its paired episodes diverged) as ``none``."""
    return f"{value:.5f}" if np.isfinite(value) else "none (diverged cells)"


def _search_text(search: Mapping[str, Any]) -> str:
    """A grid search's account: points, rounds, why it stopped, and the largest cell bound left and where."""
    cell = search["largest_cell"]
    box = ", ".join(f"{c} in [{lo:.4g}, {hi:.4g}]" for c, (lo, hi) in cell["box"].items())
    point = ", ".join(f"{c}={v:.4g}" for c, v in cell["point"].items())
    if np.isfinite(cell["gain"]):
        gain = f"gain {cell['gain']:+.5f}, se {cell['se']:.2g}"
    else:
        gain = f"no estimate: {cell.get('diverged', 0)} of its paired episodes diverged"
    return (
        f"{search['points_evaluated']} points in {search['rounds']} round(s), stopped: {search['stopped']}; largest "
        f"cell bound {_bound_text(cell['bound'])} on {box} (point {point}: {gain}, slope term "
        f"{cell['slope_term']:.2g})"
    )


def _fmt(summary: Mapping[str, float] | None) -> str:
    if summary is None:
        return "-"
    return strategy_text(summary)
