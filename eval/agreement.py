"""Theory vs simulation for any game with closed forms (:class:`~fedgames.envs.contract.TheoryAdapter`): per player,
the predicted and observed value of each quantity the closed form gives (the mean-estimation game: MSE, reward,
payment).

``compare_with_theory`` plays a profile through the env's batched stages and sets each Monte Carlo mean beside the
closed form, with its standard error and the z-score. Episodes that diverge (a non-finite estimate, loss, payment or
reward: :mod:`~fedgames.envs.health`) are counted and left out of the means, and the report notes how many; with
fewer than 2 episodes left a quantity has no estimate, and the verdict says so instead of printing NaN. The report
writes JSON, CSV and Markdown atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.agents.rollout import simulate
from fedgames.envs.batch import resolve_batch_size
from fedgames.envs.contract import ActionProfile, as_actions, closed_form, game_of
from fedgames.envs.health import summary_note
from fedgames.envs.policy import constant_policies
from fedgames.files import csv_text, json_text

AGREEMENT_Z = 4.0
"""A closed form and a Monte Carlo mean agree when they differ by less than this many standard errors."""

ROUNDING = 1e-9
"""A prediction within this fraction of the report's largest one is 0 up to float64 rounding (a balanced payment,
a reward at a symmetric profile: differences of terms that cancel, e.g. -5.4e-20 beside squared errors of 3.5e-4
at N = 1000); its Monte Carlo mean agrees with it when the two differ by no more than that much, whatever the
standard error (the episodes' rewards cancel as exactly, so their SE can be smaller than the rounding)."""


@dataclass(frozen=True)
class Row:
    """One player's predicted and observed value of one quantity."""

    agent: str
    quantity: str
    predicted: float
    observed: float
    standard_error: float
    rounding: float = 0.0
    """The absolute gap that rounding alone explains: for a prediction that is 0 up to rounding, :data:`ROUNDING`
    times the report's largest prediction (:func:`rounding_floors`); 0 otherwise."""

    @property
    def estimated(self) -> bool:
        """Whether the simulation estimated this quantity: a finite mean and standard error (not so when fewer
        than 2 episodes were left once the diverged ones were left out)."""
        return bool(np.isfinite(self.observed) and np.isfinite(self.standard_error))

    @property
    def z(self) -> float:
        """``(observed - predicted) / SE``; NaN for a quantity without an estimate (:attr:`estimated`)."""
        if not self.estimated:
            return float("nan")
        gap = self.observed - self.predicted
        return gap / self.standard_error if self.standard_error > 0 else (0.0 if gap == 0 else float("inf"))

    @property
    def within_rounding(self) -> bool:
        """Whether the mean lies within :attr:`rounding` of the prediction (``False`` without an estimate)."""
        return self.estimated and abs(self.observed - self.predicted) <= self.rounding

    @property
    def agrees(self) -> bool:
        """``|z| <`` :data:`AGREEMENT_Z`, or :attr:`within_rounding` (``False`` without an estimate)."""
        return bool(abs(self.z) < AGREEMENT_Z) or self.within_rounding


def rounding_threshold(rows: list[Row]) -> float:
    """:data:`ROUNDING` times the largest prediction among ``rows``: a prediction no larger is 0 up to rounding."""
    return ROUNDING * max((abs(r.predicted) for r in rows), default=0.0)


def rounding_floors(rows: list[Row]) -> list[Row]:
    """``rows`` with :attr:`Row.rounding` set on those whose prediction is 0 up to rounding
    (:func:`rounding_threshold`)."""
    threshold = rounding_threshold(rows)
    return [replace(r, rounding=threshold) if abs(r.predicted) <= threshold else r for r in rows]


@dataclass
class AgreementReport:
    """Predicted vs observed values for one env, mechanism stack and profile."""

    env: str
    mechanisms: list[str]
    config: dict[str, Any]
    profile: dict[str, list]
    episodes: int
    seed: int
    batch_size: int
    rows: list[Row] = field(default_factory=list)
    divergence: dict[str, Any] | None = None  # Health.summary() of the episodes played (None: not recorded)

    @property
    def diverged(self) -> int:
        """How many of the episodes diverged (left out of every mean)."""
        return 0 if self.divergence is None else int(self.divergence["diverged"])

    @property
    def notes(self) -> list[str]:
        """What the reader must know to read the means: how many episodes diverged and were left out (the first
        quantity that went bad, the earliest round), and which quantities that left without an estimate."""
        note = None if self.divergence is None else summary_note(self.divergence)
        if note is None:
            return []
        notes = [note]
        missing = sorted({r.quantity for r in self.rows if not r.estimated})
        if missing:
            notes.append(
                f"no estimate of {', '.join(missing)}: fewer than 2 of the {self.episodes} episodes did not diverge"
            )
        return notes

    @property
    def all_agree(self) -> bool:
        return all(row.agrees for row in self.rows)

    def _zero_like(self, row: Row) -> bool:
        """Whether ``row`` predicts 0 up to rounding (:func:`rounding_threshold`), where an error relative to the
        prediction means nothing."""
        return abs(row.predicted) <= rounding_threshold(self.rows)

    def _estimated(self) -> list[Row]:
        return [r for r in self.rows if r.estimated]

    @property
    def resolution(self) -> float:
        """The largest relative error of a closed form that the simulation could miss: ``max AGREEMENT_Z SE /
        |predicted|`` over the rows whose prediction is not zero (agreement says nothing finer; more episodes
        narrow it as ``1 / sqrt(episodes)``); 0 when every prediction is zero. Over the estimated rows only."""
        return max(
            (AGREEMENT_Z * r.standard_error / abs(r.predicted) for r in self._estimated() if not self._zero_like(r)),
            default=0.0,
        )

    @property
    def absolute_resolution(self) -> float | None:
        """Where a closed form predicts 0 (a budget-balanced payment, a reward at the honest profile), the largest
        absolute error the simulation could miss: ``max(AGREEMENT_Z SE, rounding)`` over those rows (``None``: no
        such row)."""
        zeros = [max(AGREEMENT_Z * r.standard_error, r.rounding) for r in self._estimated() if self._zero_like(r)]
        return max(zeros) if zeros else None

    def verdict(self) -> str:
        """One line: whether all closed forms agree, and how fine that agreement is (relative to the predictions,
        and in absolute terms where a prediction is 0); how many diverged episodes were left out; no verdict (and
        no NaN) where a quantity has no estimate."""
        left_out = f" ({self.diverged} of {self.episodes} diverged episodes left out)" if self.diverged else ""
        if any(not r.estimated for r in self.rows):
            return (
                f"no verdict: {self.diverged} of {self.episodes} episodes diverged, fewer than 2 are left to estimate "
                "the means (see the notes)"
            )
        if not self.all_agree:
            return f"SOME closed forms disagree with the simulation (|z| >= {AGREEMENT_Z:g}){left_out}"
        relative = any(not self._zero_like(r) for r in self.rows)
        zeros = sorted({r.quantity for r in self.rows if self._zero_like(r)})
        parts = [f"off by less than {self.resolution:.2%} of its value"] if relative else []
        if zeros:
            one = "one predicting 0" if relative else "predicting 0"
            parts.append(f"{one} ({', '.join(zeros)}) off by less than {self.absolute_resolution:.2g}")
        return (
            f"all closed forms agree with the simulation, to within {AGREEMENT_Z:g} SE: a closed form "
            f"{', or '.join(parts)}{',' if len(parts) > 1 else ''} could pass unseen (more episodes narrow this)"
            f"{left_out}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows"] = [asdict(r) | {"z": r.z, "agrees": r.agrees} for r in self.rows]
        data["diverged"] = self.diverged
        data["notes"] = self.notes
        data["all_agree"] = self.all_agree
        data["resolution"] = self.resolution
        data["absolute_resolution"] = self.absolute_resolution
        data["agreement_rule"] = (
            f"|observed - predicted| < {AGREEMENT_Z} standard errors (SE from the samples), or <= rounding where the "
            f"prediction is 0 up to rounding ({ROUNDING:g} of the largest prediction)"
        )
        return data

    def to_json(self) -> str:
        """:meth:`to_dict` as strict JSON (:func:`fedgames.files.json_text`: a non-finite z is ``null``, noted)."""
        return json_text(self.to_dict())

    def to_csv(self) -> str:
        fields = ("agent", "quantity", "predicted", "observed", "standard_error", "rounding", "z", "agrees")
        return csv_text([{key: getattr(r, key) for key in fields} for r in self.rows], fields)

    def to_markdown(self) -> str:
        lines = [
            f"# {self.env}: theory vs simulation",
            "",
            f"- mechanisms: {', '.join(self.mechanisms) or 'none'}",
            f"- config: {json.dumps(self.config)}",
            "- profile: " + ", ".join(f"{k}={v}" for k, v in self.profile.items() if np.ndim(v) == 1),
            f"- {self.episodes} episodes ({self.batch_size} at a time), seed {self.seed}; agreement: |z| < "
            f"{AGREEMENT_Z} (SE from the samples)",
            f"- {self.verdict()}",
            *(f"- note: {note}" for note in self.notes),
            "",
            "| agent | quantity | predicted | observed | SE | z | agrees |",
            "| --- | --- | ---: | ---: | ---: | ---: | :---: |",
        ]
        for r in self.rows:
            if r.estimated:
                agrees = "NO" if not r.agrees else "yes" if abs(r.z) < AGREEMENT_Z else "yes (0 up to rounding)"
                seen = f"{r.observed:.5f} | {r.standard_error:.5f} | {r.z:+.2f} | {agrees}"
            else:
                seen = "n/a | n/a | n/a | n/a"
            lines.append(f"| {r.agent} | {r.quantity} | {r.predicted:.5f} | {seen} |")
        return "\n".join(lines) + "\n"


def compare_with_theory(
    env: ParallelEnv,
    profile: ActionProfile | np.ndarray,
    episodes: int = 100_000,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> AgreementReport:
    """Simulate the constant ``profile`` (a mean-estimation ``Profile``, or actions ``(N, k)``) on ``env``
    (mechanisms included) and set each Monte Carlo mean beside the closed form's expectation
    (:meth:`~fedgames.envs.contract.TheoryAdapter.expected`: for the mean-estimation game Thm 4.1 / D.1 / B.2 /
    5.1). A ``ValueError`` for a game or mechanisms without closed forms.

    ``batch_size``: episodes simulated at once (``None``: the env's default, 65,536 for the mean-estimation game;
    see :func:`~fedgames.agents.rollout.simulate`). Diverged episodes (:mod:`~fedgames.envs.health`) are left out
    of the means and counted in the report's ``divergence`` and notes."""
    closed = closed_form(env)
    if closed is None:
        under = " under these mechanisms" if env.protocol.mechanisms else ""
        raise ValueError(f"{env.metadata['name']} has no closed form to compare with{under}")
    actions = as_actions(profile)
    agents = env.possible_agents
    batch_size = resolve_batch_size(env, batch_size)
    results = simulate(
        env, constant_policies(actions, agents), episodes, seed=seed, batch_size=batch_size, progress=progress
    )
    report = AgreementReport(
        env=env.metadata["name"],
        mechanisms=[m.spec() for m in env.protocol.mechanisms],
        config=game_of(env).config.to_dict(),
        profile=closed.describe(actions),
        episodes=episodes,
        seed=seed,
        batch_size=batch_size,
        divergence=None if results.health is None else results.health.summary(),
    )
    for quantity, (values, record) in closed.expected(actions).items():
        mean, se = results.mean_and_se(record)
        report.rows += [Row(a, quantity, float(values[i]), float(mean[i]), float(se[i])) for i, a in enumerate(agents)]
    report.rows = rounding_floors(report.rows)
    return report
