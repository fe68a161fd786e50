"""Numerical health of a batch of episodes: one mechanism every fedgames game runs each round (SPEC §4).

A game checks what each round produced — its parameters (the models or estimates), losses, payments and rewards,
in that order, the order a round computes them in — for finiteness, batched: one ``isfinite`` pass per quantity
and episode. The first non-finite value ends its episode: the episode is *diverged*, and :class:`Health` keeps
which quantity went bad first and in which round (``{"quantity": "loss", "round": 3}``). From that round on the
episode's rewards and payments are 0 (:meth:`Health.silence`): a NaN or an overflowed loss is not a number a
learner should chase, and a finite stand-in keeps learners' networks finite. The PettingZoo envs report it as
``infos[agent]["diverged"]`` and ``infos[agent]["divergence"]``; the evaluation tools (Monte Carlo play, the Nash
check, training) count diverged episodes and leave them out of their means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import torch

QUANTITIES = ("parameters", "loss", "payment", "reward")
"""What a round is checked for, in the order it computes them (the first that goes bad is the one recorded)."""


def nonfinite_rows(values: Any) -> np.ndarray:
    """``(B,)`` bool: which rows (episodes, the first axis) of ``values`` hold a NaN or an infinity; a numpy array
    or a torch tensor (then one ``(B,)`` copy to the host)."""
    if isinstance(values, torch.Tensor):
        return (~torch.isfinite(values).reshape(values.shape[0], -1).all(1)).cpu().numpy()
    values = np.asarray(values)
    return ~np.isfinite(values).reshape(values.shape[0], -1).all(1)


@dataclass
class Health:
    """Which of ``B`` episodes diverged, and the first quantity and round that went bad in each.

    Attributes:
        diverged: ``(B,)`` bool.
        quantity: ``(B,)`` the first non-finite quantity (one of :data:`QUANTITIES`), ``""`` while healthy.
        round: ``(B,)`` the round (from 1) it went bad in, 0 while healthy.
    """

    diverged: np.ndarray
    quantity: np.ndarray
    round: np.ndarray

    @classmethod
    def start(cls, size: int) -> Health:
        """``size`` healthy episodes."""
        return cls(np.zeros(size, dtype=bool), np.full(size, "", dtype=object), np.zeros(size, dtype=int))

    @classmethod
    def concatenate(cls, parts: Sequence[Health]) -> Health:
        """The episodes of ``parts``, one after the other."""
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("diverged", "quantity", "round")))

    @property
    def size(self) -> int:
        return int(self.diverged.size)

    @property
    def count(self) -> int:
        """How many episodes diverged."""
        return int(self.diverged.sum())

    def flag(self, round: int, quantity: str, bad: np.ndarray) -> np.ndarray:
        """Mark the episodes where ``bad`` ``(B,)`` holds as diverged in ``round`` through ``quantity``, unless
        they diverged before; return the newly diverged ones."""
        if quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
        new = np.asarray(bad, dtype=bool) & ~self.diverged
        if new.any():
            self.diverged = self.diverged | new
            self.quantity[new] = quantity
            self.round[new] = round
        return new

    def check(self, round: int, **quantities: Any) -> np.ndarray:
        """Check each of ``quantities`` (keyword: its name in :data:`QUANTITIES`, value: an array or tensor whose
        first axis is the episodes, or ``None`` for a quantity the round did not produce) in the order given;
        return which episodes diverged in this call."""
        new = np.zeros_like(self.diverged)
        for name, values in quantities.items():
            if values is not None:
                new |= self.flag(round, name, nonfinite_rows(values))
        return new

    @overload
    def silence(self, values: np.ndarray) -> np.ndarray: ...
    @overload
    def silence(self, values: None) -> None: ...
    @overload
    def silence(self, values: np.ndarray | None) -> np.ndarray | None: ...

    def silence(self, values: np.ndarray | None) -> np.ndarray | None:
        """``values`` ``(B, ...)`` (rewards or payments) with the diverged episodes' entries set to 0."""
        if values is None or not self.diverged.any():
            return values
        shape = (-1,) + (1,) * (np.ndim(values) - 1)
        return np.where(self.diverged.reshape(shape), 0.0, values)

    def record(self, episode: int) -> dict[str, Any] | None:
        """``{"quantity": ..., "round": ...}`` of a diverged ``episode``, ``None`` for a healthy one (what the envs
        put in ``infos[agent]["divergence"]``)."""
        if not self.diverged[episode]:
            return None
        return {"quantity": str(self.quantity[episode]), "round": int(self.round[episode])}

    def infos(self, episode: int = 0) -> dict[str, Any]:
        """What a PettingZoo env adds to each agent's info: ``diverged``, and for a diverged episode
        ``divergence`` (:meth:`record`)."""
        record = self.record(episode)
        return {"diverged": False} if record is None else {"diverged": True, "divergence": record}

    def summary(self) -> dict[str, Any]:
        """For reports: episodes, how many diverged, and how many first went bad through each quantity (and the
        earliest round)."""
        first = {q: int((self.quantity == q).sum()) for q in QUANTITIES if (self.quantity == q).any()}
        rounds = self.round[self.diverged]
        return {
            "episodes": self.size,
            "diverged": self.count,
            "first_quantity": first,
            "earliest_round": int(rounds.min()) if rounds.size else None,
        }

    def note(self) -> str | None:
        """A one-line note for a report where episodes diverged (``None`` where none did): :func:`summary_note`."""
        return summary_note(self.summary())


def first_quantities_text(first_quantity: Mapping[str, int]) -> str:
    """``{"loss": 12, "reward": 3}`` (a :meth:`Health.summary`'s ``first_quantity``) as ``loss in 12, reward in 3``."""
    return ", ".join(f"{q} in {n}" for q, n in first_quantity.items())


def summary_note(summary: dict[str, Any]) -> str | None:
    """The one-line note of a :meth:`Health.summary` (what a report keeps): how many of how many episodes diverged,
    through which quantity first and from which round, left out of the means; ``None`` where none diverged."""
    if not summary["diverged"]:
        return None
    through = first_quantities_text(summary["first_quantity"])
    return (
        f"{summary['diverged']} of {summary['episodes']} episodes diverged (a non-finite value first: {through}; "
        f"earliest in round {summary['earliest_round']}) and are left out of the means"
    )


__all__ = ["QUANTITIES", "Health", "first_quantities_text", "nonfinite_rows", "summary_note"]
