"""The protocol shape shared by every fedgames game (SPEC §4).

Every game runs the same stages::

    players act -> messages -> server aggregates -> server responds to each player
                -> players form their outcomes -> rewards (- payments)

A :class:`Protocol` holds the server-side stages a mechanism may replace or extend — the action bounds (before
messages), the aggregation rule, the per-player response and the payment rules (after rewards) — as plain batched
functions. A game supplies the player-side stages (how messages are formed, how outcomes and rewards follow from
the server's responses). Mechanisms (``fedgames.mechanisms``) return a new protocol with one stage changed, so
they stack in any order and the fast batched paths run the very code the PettingZoo environment runs.

Shapes: ``B`` independent episodes, ``N`` players, ``d`` message dimension. Messages are ``(B, N, d)``, the
server's aggregate ``(B, d)``, the responses ``(B, N, d)`` and payments ``(B, N)``. The stages use only operations
that numpy arrays and torch tensors share (``.sum(-1)``, ``.mean(1)``, indexing, arithmetic), so the torch FedSGD
engine runs the very same stage functions on its (GPU) tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from fedgames.arrays import is_torch

Aggregator = Callable[..., Any]
"""``(messages (B, N, d), weights (B, N) or None) -> (B, d)``: the server's aggregate."""

Responder = Callable[[Any, Any, Any], Any]
"""``(messages (B, N, d), aggregate (B, d), rng) -> (B, N, d)``: what each player receives from the server; ``rng``
is a numpy ``Generator`` for numpy messages, a ``torch.Generator`` on their device for torch ones."""

PaymentRule = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(messages (B, N, d), aggregate (B, d)) -> (B, N)``: what each player pays (negative: receives). A rule that
depends on the messages only through each player's squared deviation ``||m_i - aggregate||^2`` may also have a
method ``from_deviation(sq_deviation (B, N)[, present (B, N)]) -> (B, N)``, which :meth:`Protocol.payments`
calls when the game has the deviations already (with ``present`` only where some players sit a round
out): the FedSGD engine does (no second pass over millions of parameters per message), and the participation
game always does (a message's deviation there is its paid score's from the reported metric, and only the
participants, ``present``, pay or share)."""


def mean_aggregate(messages: Any, weights: Any = None) -> Any:
    """The plain server: the average of the messages, weighted by ``weights`` (e.g. dataset sizes) if given."""
    if weights is None:
        return messages.mean(1)
    if is_torch(messages):  # one pass over the (R, m, P) messages
        total = torch.einsum("bn,bnd->bd", weights.to(messages.dtype), messages)
        return total.div_(weights.sum(1)[:, None].to(total.dtype))  # in place: no second (B, d) array
    total = sum(weights[:, i, None] * messages[:, i] for i in range(messages.shape[1]))  # no (B, N, d) temporary
    return total / weights.sum(1)[:, None]


def broadcast(messages: Any, aggregate: Any, rng: Any) -> Any:
    """The plain response: every player receives the server's aggregate (a broadcast view, no copy)."""
    view = aggregate[:, None, :]
    return view.expand(messages.shape) if hasattr(view, "expand") else np.broadcast_to(view, messages.shape)


@dataclass(frozen=True)
class ServerRound:
    """What the server computed in one round (batched)."""

    aggregate: np.ndarray
    responses: np.ndarray
    payments: np.ndarray | None


@dataclass(frozen=True)
class Protocol:
    """The server-side stages of a game, each replaceable by exactly one kind of mechanism.

    Attributes:
        action_names: name of each action component (``alpha``, ``beta``, ``b_1`` ...).
        action_low, action_high: the bounds of one player's action (the action-bound stage).
        aggregate: the aggregation stage.
        respond: the per-player response stage.
        payment_rules: the payment stage; the payments of all rules are added.
        mechanisms: the mechanisms applied so far, innermost first (for reports and closed-form theory).
    """

    action_names: tuple[str, ...]
    action_low: np.ndarray
    action_high: np.ndarray
    aggregate: Aggregator = mean_aggregate
    respond: Responder = broadcast
    payment_rules: tuple[PaymentRule, ...] = ()
    mechanisms: tuple[Any, ...] = field(default=())

    def action_index(self, name: str) -> int:
        """Position of the action component ``name``."""
        if name not in self.action_names:
            raise ValueError(f"action component {name!r} does not exist; components: {list(self.action_names)}")
        return self.action_names.index(name)

    def with_stage(self, mechanism: Any, **stages: Any) -> Protocol:
        """A copy with the given stages replaced and ``mechanism`` recorded."""
        unknown = set(stages) - {"action_low", "action_high", "aggregate", "respond", "payment_rules"}
        if unknown:
            raise ValueError(f"unknown protocol stage(s) {sorted(unknown)}")
        return replace(self, mechanisms=self.mechanisms + (mechanism,), **stages)

    @property
    def charges_payments(self) -> bool:
        return bool(self.payment_rules)

    def server_round(self, messages: Any, rng: Any, weights: Any = None) -> ServerRound:
        """Run aggregation (with optional per-message ``weights``), response and payment stages on a batch."""
        aggregate = self.aggregate(messages, weights)
        responses = self.respond(messages, aggregate, rng)
        payments = self.payments(messages, aggregate)
        return ServerRound(aggregate, responses, payments)

    def payments(self, messages: Any, aggregate: Any, sq_deviation: Any = None, present: Any = None) -> Any:
        """``(B, N)`` the sum of all payment rules, or ``None`` without any. ``sq_deviation``: each message's
        ``||m_i - aggregate||^2`` ``(B, N)`` if known, for the rules that have ``from_deviation``; ``present``: which
        players take part this round (``(B, N)`` bool, ``None``: all), for those rules too."""
        if not self.payment_rules:
            return None
        extra = () if present is None else (present,)  # a one-argument from_deviation serves games without absentees
        return sum(
            rule.from_deviation(sq_deviation, *extra)
            if sq_deviation is not None and hasattr(rule, "from_deviation")
            else rule(messages, aggregate)
            for rule in self.payment_rules
        )

    def check_actions(self, actions: np.ndarray, agents: Sequence[str] | None = None) -> np.ndarray:
        """Validate a batch of actions ``(B, N, k)`` against the bounds; return them as float64, clipped.

        Values may exceed a bound by float32 rounding (``1e-6`` relative), anything else is a ``ValueError``
        naming the player, the component and the allowed range.
        """
        actions = np.asarray(actions)
        k = len(self.action_names)
        if actions.ndim != 3 or actions.shape[-1] != k:
            raise ValueError(f"actions must have shape (batch, n_players, {k}), got {actions.shape}")
        if not (np.issubdtype(actions.dtype, np.floating) or np.issubdtype(actions.dtype, np.integer)):
            raise ValueError(f"actions must be real numbers, got dtype {actions.dtype}")
        actions = actions.astype(np.float64, copy=False)
        if np.all((actions >= self.action_low) & (actions <= self.action_high)):  # fast path; NaN fails it
            return actions
        names = agents if agents is not None else [f"player_{i}" for i in range(actions.shape[1])]
        bad = ~np.isfinite(actions)
        if bad.any():
            _, player, comp = np.argwhere(bad)[0]
            raise ValueError(f"action of {names[player]}: {self.action_names[comp]} is {actions[bad][0]} (NaN/inf)")
        slack = 1e-6 * (1.0 + np.maximum(np.abs(self.action_low), np.abs(self.action_high)))
        outside = (actions < self.action_low - slack) | (actions > self.action_high + slack)
        if outside.any():
            b, player, comp = np.argwhere(outside)[0]
            raise ValueError(
                f"action of {names[player]}: {self.action_names[comp]}={actions[b, player, comp]:.6g} is outside "
                f"its allowed range [{self.action_low[comp]:.6g}, {self.action_high[comp]:.6g}]"
            )
        return np.clip(actions, self.action_low, self.action_high)
