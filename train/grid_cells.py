"""Cells of the grid oracle's branch-and-bound search (SPEC §5, step 2).

A cell is a box of a player's searched action components with one evaluated point. Where the payoff's slope along
component ``c`` lies in ``[s_c^-, s_c^+]`` over the whole cell, moving from the point ``p`` to any ``a`` of the cell
one component at a time (the path stays in the box) raises the payoff by at most

    sum_c max(max(s_c^+, 0) (upper_c - p_c), max(-s_c^-, 0) (p_c - lower_c))

(the cell's *slope term*). Added to an upper confidence bound on the point's gain, this bounds the gain of every
strategy of the cell. The slope range is local, so near a smooth maximum (slope 0) the term shrinks with the
square of the cell's width, and cells whose slope points into their evaluated end (a payoff increasing up to a
bound, as ``alpha`` at Cor. B.1's ``alpha = A``) add nothing.

Points sit at cell centres, except that a cell touching the box's boundary is evaluated on it (where best replies
often lie): the first grid is then exactly ``linspace(low, high, points)`` per component, each point owning the
cell up to half-way to its neighbours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SlopeRange = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``(lower, upper) -> (smallest, largest)`` slope per component over that box."""


def anchored_point(lower: np.ndarray, upper: np.ndarray, box_low: np.ndarray, box_high: np.ndarray) -> np.ndarray:
    """The cell's evaluated point: on the box's boundary where the cell touches it, else the cell's centre."""
    return np.where(lower == box_low, box_low, np.where(upper == box_high, box_high, (lower + upper) / 2))


def initial_cells(box_low: np.ndarray, box_high: np.ndarray, points: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The cells of ``points`` grid points per component (``linspace(low, high, points)``; one point where a
    component's range is a single value), as ``(lower, upper)`` boxes."""
    edges = []
    for low, high in zip(box_low, box_high):
        if high > low:
            grid = np.linspace(low, high, points)
            edges.append(np.concatenate([[low], (grid[:-1] + grid[1:]) / 2, [high]]))
        else:
            edges.append(np.array([low, high]))
    cells = []
    for index in np.ndindex(*(len(e) - 1 for e in edges)):
        lower = np.array([e[j] for e, j in zip(edges, index)])
        upper = np.array([e[j + 1] for e, j in zip(edges, index)])
        cells.append((lower, upper))
    return cells


@dataclass
class Cell:
    """A box ``[lower, upper]`` of the searched components with its evaluated ``point``: the paired mean gain
    ``gain`` over the candidate and its standard error ``se`` (from the episodes of search round ``round``), the
    slope range over the box (``None``: no slope bound; a finite strategy class has cells of zero width), and how
    many of the point's paired episodes ``diverged`` (:mod:`~fedgames.envs.health`: left out of the gain; with
    fewer than 2 pairs left the gain and its standard error are NaN, and the cell is not :attr:`estimated`)."""

    lower: np.ndarray
    upper: np.ndarray
    point: np.ndarray
    gain: float
    se: float
    round: int
    slopes: tuple[np.ndarray, np.ndarray] | None
    diverged: int = 0

    @property
    def estimated(self) -> bool:
        """Whether the point's gain has an estimate: a finite gain and standard error."""
        return bool(np.isfinite(self.gain) and np.isfinite(self.se))

    def slope_terms(self) -> np.ndarray:
        """Per component, the most the payoff can rise from the point within the cell along it (module doc)."""
        if self.slopes is None:
            return np.full(self.point.shape, np.inf)
        low, high = self.slopes
        rise_up = np.maximum(high, 0.0) * (self.upper - self.point)
        rise_down = np.maximum(-low, 0.0) * (self.point - self.lower)
        return np.maximum(rise_up, rise_down)

    def bound(self, quantile: float) -> float:
        """Upper bound on the gain of every strategy in the cell, when the point's gain is below
        ``gain + quantile * se``; ``inf`` for a cell without an estimate (nothing bounds it)."""
        if not self.estimated:
            return float("inf")
        return float(self.gain + quantile * self.se + self.slope_terms().sum())

    def halves(self, box_low: np.ndarray, box_high: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The children of a split: halved along each component whose slope term is at least half the largest
        (``[]`` when no term is positive: splitting cannot lower the bound)."""
        terms = self.slope_terms()
        largest = float(terms.max()) if terms.size else 0.0
        if not largest > 0:
            return []
        split = (terms >= largest / 2) & (self.upper > self.lower)
        children = [(self.lower.copy(), self.upper.copy())]
        for c in np.flatnonzero(split):
            middle = (self.lower[c] + self.upper[c]) / 2
            halved = []
            for lower, upper in children:
                left_upper, right_lower = upper.copy(), lower.copy()
                left_upper[c], right_lower[c] = middle, middle
                halved += [(lower, left_upper), (right_lower, upper)]
            children = halved
        return children

    def describe(self, components: list[str], quantile: float) -> dict[str, object]:
        """The cell as plain data for a report: its bound, box, point, gain, standard error and slope term."""
        return {
            "bound": self.bound(quantile),
            "box": {c: [float(lo), float(hi)] for c, lo, hi in zip(components, self.lower, self.upper)},
            "point": {c: float(v) for c, v in zip(components, self.point)},
            "gain": self.gain,
            "se": self.se,
            "slope_term": float(self.slope_terms().sum()),
            "round": self.round,
            "diverged": self.diverged,
        }
