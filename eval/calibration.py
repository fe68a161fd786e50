"""Calibration of the Nash check's verdicts (SPEC §5; issue 15): repeat the check on profiles whose regret is
known exactly and count the verdicts.

A check at level ``level`` promises, for each player: *refuted* only when the regret exceeds the tolerance (a false
refutation has probability at most ``1 - level``, in fact ``(1 - level) / 2``: one end of a two-sided interval),
and *consistent* only when no strategy of the oracle's class gains the tolerance (with the grid's upper bound:
probability at most ``1 - level`` of a false confirmation). The profiles here are honesty in the mean-estimation
game under the budget-balanced side payment (Thm B.2) with ``C`` chosen so that the best reply's exact gain is
the wanted regret: with the others honest a player's gain from ``alpha`` is ``alpha^2 (1 - C ((N-1)^2 - 1)) / N^2``
whatever its ``beta`` (its defence changes only its own MSE, least at ``beta = 0``), so the regret is
``max(0, alpha_max^2 (1 - C ((N-1)^2 - 1)) / N^2)``. Regret 0 takes ``C`` at twice Thm B.2's threshold, a strict
equilibrium.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pettingzoo import ParallelEnv
from scipy.stats import beta as beta_distribution

import fedgames
from fedgames.agents.policy import Policy
from fedgames.envs.mean_estimation import theory
from fedgames.eval.nash import VERDICTS, nash_check
from fedgames.train.oracles import GridOracle


def clopper_pearson(count: int, repetitions: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided ``level`` interval for a binomial proportion from ``count`` of ``repetitions``."""
    tail = (1 - level) / 2
    low = 0.0 if count == 0 else float(beta_distribution.ppf(tail, count, repetitions - count + 1))
    high = 1.0 if count == repetitions else float(beta_distribution.ppf(1 - tail, count + 1, repetitions - count))
    return low, high


def balanced_payment_case(regret: float, n_players: int = 3, alpha_max: float = 1.0) -> ParallelEnv:
    """``mean_estimation_v0`` (no bias) under the balanced side payment whose ``C`` gives honesty the exact regret
    ``regret`` (module doc; ``0``: ``C`` twice Thm B.2's threshold)."""
    k = (n_players - 1) ** 2 - 1
    if not 0 <= regret < alpha_max**2 / n_players**2 or k <= 0:
        raise ValueError(
            f"regret must lie in [0, alpha_max^2 / N^2) = [0, {alpha_max**2 / n_players**2:g}) and n_players >= 3, "
            f"got regret={regret}, n_players={n_players}"
        )
    C = (
        2 * theory.balanced_payment_threshold(n_players)
        if regret == 0
        else (1 - regret * n_players**2 / alpha_max**2) / k
    )
    return fedgames.make(
        "mean_estimation_v0",
        mechanisms=[f"side_payment:C={C!r},balanced=true"],
        n_players=n_players,
        alpha_max=alpha_max,
        bias_max=0,
    )


@dataclass
class Calibration:
    """The verdicts of ``repetitions`` checks of one player on a profile of known regret ``true_regret``."""

    name: str
    true_regret: float
    tolerance: float
    level: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def repetitions(self) -> int:
        return sum(self.counts.values())

    def rate(self, verdict: str) -> float:
        return self.counts.get(verdict, 0) / self.repetitions

    def interval(self, verdict: str) -> tuple[float, float]:
        """Clopper-Pearson 95% interval of :meth:`rate`."""
        return clopper_pearson(self.counts.get(verdict, 0), self.repetitions)

    def row(self) -> str:
        """A Markdown table row: name, true regret, repetitions, then each verdict's rate with its interval."""
        rates = [f"{self.rate(v):.3f} [{self.interval(v)[0]:.3f}, {self.interval(v)[1]:.3f}]" for v in VERDICTS]
        return f"| {self.name} | {self.true_regret:.4g} | {self.repetitions} | " + " | ".join(rates) + " |"


HEADER = "| profile | true regret | repetitions | " + " | ".join(VERDICTS) + " |\n|---|---:|---:|---|---|---|"
"""The header of :meth:`Calibration.row`'s table."""


def calibrate(
    name: str,
    env: ParallelEnv,
    policies: dict[str, Policy],
    true_regret: float,
    oracle: GridOracle,
    repetitions: int,
    tolerance: float,
    episodes: int,
    level: float = 0.95,
    seed: int = 0,
) -> Calibration:
    """Check ``policies``'s first player ``repetitions`` times (seeds ``seed, seed + 1, ...``; each check draws
    its own oracle and evaluation episodes) and count its verdicts."""
    result = Calibration(name, true_regret, tolerance, level, {v: 0 for v in VERDICTS})
    player = env.possible_agents[0]
    for k in range(repetitions):
        report = nash_check(
            env,
            policies,
            oracle,
            players=[player],
            episodes=episodes,
            level=level,
            tolerance=tolerance,
            seed=seed + 1_000 * k,
        )
        result.counts[report.players[0].verdict] += 1
    return result
