"""What a multi-agent training run produces: one :class:`RoundRecord` per round (or checkpoint) and the
:class:`TrainingResult` that holds them with the final policies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from fedgames.agents.learned import SB3Policy
from fedgames.envs.health import summary_note
from fedgames.files import json_text


@dataclass(frozen=True)
class RoundRecord:
    """The strategies after one round (independent learners) or checkpoint (parameter sharing).

    Attributes:
        round: 1-based index of the round or checkpoint.
        timesteps: the episodes (rounds, in a multi-round game) all learners have trained on so far.
        players: per agent, the means over a fixed evaluation batch of every action component (``alpha``,
            ``beta``, ``b_1`` ...; ``participate``, ``u`` in the participation game; ``*_last`` at the last round of
            a multi-round game), ``bias_norm`` when the game has a bias, and the mean ``reward``, all over the
            evaluation episodes that did not diverge.
        divergence: where some evaluation episodes diverged (:mod:`~fedgames.envs.health`), how many, through which
            quantity first and from which round (:meth:`~fedgames.envs.health.Health.summary`); ``None`` where none
            did.
    """

    round: int
    timesteps: int
    players: dict[str, dict[str, float]]
    divergence: dict[str, Any] | None = None

    @property
    def note(self) -> str | None:
        """The one-line note on the diverged evaluation episodes (:func:`~fedgames.envs.health.summary_note`)."""
        return None if self.divergence is None else summary_note(self.divergence)

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "timesteps": self.timesteps,
            "players": self.players,
            "divergence": self.divergence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundRecord:
        """The record :meth:`to_dict` wrote (``ValueError`` naming what is missing or of the wrong type)."""
        keys = {"round", "timesteps", "players"}
        if not isinstance(data, Mapping) or not keys <= set(data) <= keys | {"divergence"}:
            raise ValueError(
                f"a round record needs the keys round, timesteps, players (and divergence); got {data!r:.200}"
            )
        players, divergence = data["players"], data.get("divergence")
        if not isinstance(players, Mapping) or not all(isinstance(p, Mapping) for p in players.values()):
            raise ValueError(f"a round record's players must map agents to summaries; got {players!r:.200}")
        if divergence is not None and not isinstance(divergence, Mapping):
            raise ValueError(f"a round record's divergence must be null or a summary; got {divergence!r:.200}")
        try:
            return cls(
                int(data["round"]),
                int(data["timesteps"]),
                {str(a): {str(k): _number(v) for k, v in p.items()} for a, p in players.items()},
                None if divergence is None else dict(divergence),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"a round record holds a value that is not a number: {error}") from None


def _number(value: Any) -> float:
    """A summary value as JSON holds it: a number, or ``null`` for one that was not finite
    (:func:`fedgames.files.json_text`)."""
    return float("nan") if value is None else float(value)


@dataclass
class TrainingResult:
    """What a multi-agent training run produced.

    Attributes:
        mode: ``"independent"`` or ``"shared"``.
        policies: the final policy of every agent (under parameter sharing they wrap one model).
        history: one :class:`RoundRecord` per round (independent) or checkpoint (shared).
        config: the run's configuration (what ``state.json`` checks on resume).
        checkpoint_dir: where the run was checkpointed, if anywhere.
        models: the SB3 models behind the policies (keyed by agent, or ``"shared"``), to go on training them.
    """

    mode: str
    policies: dict[str, SB3Policy]
    history: list[RoundRecord]
    config: dict[str, Any]
    checkpoint_dir: str | None = None
    models: dict[str, BaseAlgorithm] = field(default_factory=dict, repr=False)

    def series(self, agent: str, key: str) -> np.ndarray:
        """One summary value (``"alpha"``, ``"reward"`` ...) of ``agent`` across the history."""
        return np.array([record.players[agent][key] for record in self.history])

    @property
    def notes(self) -> list[str]:
        """What a report must say: per round whose evaluation episodes diverged, :attr:`RoundRecord.note`."""
        return [f"round {r.round}: {r.note}" for r in self.history if r.note is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "config": self.config,
            "checkpoint_dir": self.checkpoint_dir,
            "history": [record.to_dict() for record in self.history],
            "notes": self.notes,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as strict JSON (:func:`fedgames.files.json_text`: a non-finite value is ``null``, listed
        under ``non_finite``)."""
        return json_text(self.to_dict())

    def plotted_components(self) -> list[str]:
        """The strategy components :meth:`plot` draws: ``alpha`` and ``beta`` (those the game has), or the
        participation game's ``participate`` and ``u``."""
        return [
            c
            for c in ("alpha", "beta", "participate", "u")
            if self.history and all(c in summary for summary in self.history[0].players.values())
        ]

    def plot(self, path: str | Path) -> Path:
        """A PNG of every player's mean strategy across the history (:func:`fedgames.train.plots.plot_training`)."""
        from fedgames.train.plots import plot_training

        return plot_training(self, path)


__all__ = ["RoundRecord", "TrainingResult"]
