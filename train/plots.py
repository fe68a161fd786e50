"""The figure of a training run: every player's mean strategy across the rounds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedgames.files import write_atomic

if TYPE_CHECKING:
    from fedgames.train.results import TrainingResult


def plot_training(result: TrainingResult, path: str | Path) -> Path:
    """A PNG of every player's mean strategy across ``result.history``, one panel per
    :meth:`~fedgames.train.results.TrainingResult.plotted_components` (written atomically)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched
    from matplotlib.ticker import MaxNLocator

    components = result.plotted_components()
    fig = Figure(figsize=(5 * max(len(components), 1), 3.5), layout="tight")
    axes = fig.subplots(1, max(len(components), 1), squeeze=False)[0]
    x = [record.round for record in result.history]
    for ax, component in zip(axes, components):
        values = np.array([result.series(agent, component) for agent in result.policies])
        for agent, series in zip(result.policies, values):
            ax.plot(x, series, marker="o", label=agent)
        middle = (values.max() + values.min()) / 2  # a flat series gets a readable range, not an offset axis
        if values.max() - values.min() < 0.1:
            ax.set_ylim(middle - 0.1, middle + 0.1)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds and checkpoints are whole numbers
        ax.set(
            xlabel="round" if result.mode == "independent" else "checkpoint",
            ylabel=f"mean {component}",
            title=f"{result.mode} learners: {component}",
        )
        ax.legend(fontsize="small")
    target = Path(path)
    write_atomic(target, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return target
