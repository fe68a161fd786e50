"""Side payments on the deviation from the server's aggregate ([H] eq. 9–10, Thm D.1, Thm B.2; SPEC §1, §2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.arrays import squared_distance
from fedgames.envs.protocol import Protocol
from fedgames.mechanisms.base import Mechanism
from fedgames.validation import real


def deviation_payments(messages: Any, aggregate: Any, C: float, balanced: bool) -> Any:
    """``(B, N)`` payments for deviating from the aggregate.

    Plain (eq. 9): ``p_i = C ||m_i - theta_s||^2``. Budget-balanced (eq. 10): each player also receives the
    average of the others' plain payments, ``p'_i = p_i - (1/(N-1)) sum_{j != i} p_j``, so ``sum_i p'_i = 0``.
    With the mean server ``theta_s = mbar``; under robust aggregation the deviation is from that aggregate.
    Numpy arrays or torch tensors.
    """
    sq_deviation = squared_distance(messages, aggregate[:, None, :])  # accurate for a CPU tensor of millions too
    return payments_from_deviation(sq_deviation, C, balanced)


def payments_from_deviation(sq_deviation: Any, C: float, balanced: bool, present: Any = None) -> Any:
    """:func:`deviation_payments` from the squared deviations ``||m_i - theta_s||^2`` ``(B, N)``.

    ``present`` ``(B, N)`` (bool; ``None``: everyone): only those take part this round, so only they pay, and the
    balanced rule shares among them, ``p'_i = p_i - (1/(|P|-1)) sum_{j in P, j != i} p_j`` (nothing to share when
    one takes part alone)."""
    plain = C * sq_deviation
    if present is None:
        if not balanced:
            return plain
        return plain - (plain.sum(1)[:, None] - plain) / (sq_deviation.shape[1] - 1)
    plain = plain * present
    if not balanced:
        return plain
    others = (present.sum(1)[:, None] - 1).clip(min=1)
    return plain - present * (plain.sum(1)[:, None] - plain) / others


@dataclass(frozen=True)
class DeviationPayment:
    """The payment rule of :class:`SidePayment` (a :data:`~fedgames.envs.protocol.PaymentRule` with
    ``from_deviation``)."""

    C: float
    balanced: bool

    def __call__(self, messages: Any, aggregate: Any) -> Any:
        return deviation_payments(messages, aggregate, self.C, self.balanced)

    def from_deviation(self, sq_deviation: Any, present: Any = None) -> Any:
        return payments_from_deviation(sq_deviation, self.C, self.balanced, present)


class SidePayment(Mechanism):
    """Charge each player ``C ||m_i - theta_s||^2``, optionally redistributed so payments sum to zero.

    Honesty is an equilibrium of the mean-estimation game iff ``C > 1/(N-1)^2`` (plain, Thm D.1) or
    ``C > 1/((N-1)^2 - 1)`` (balanced, Thm B.2).

    Args:
        env: a fedgames parallel env.
        C: penalty weight, ``C >= 0``.
        balanced: redistribute the payments (eq. 10).
    """

    id = "side_payment"

    def __init__(self, env: ParallelEnv, C: float, balanced: bool = False) -> None:
        if not isinstance(balanced, (bool, np.bool_)):
            raise ValueError(f"side_payment: balanced must be true or false, got {balanced!r}")
        self.C = real("side_payment: C", C)
        self.balanced = bool(balanced)
        super().__init__(env)

    def apply(self, protocol: Protocol) -> Protocol:
        rule = DeviationPayment(self.C, self.balanced)
        return protocol.with_stage(self, payment_rules=protocol.payment_rules + (rule,))
