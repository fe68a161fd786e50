"""Audits and sanctions, and challenge mixing: the participation game's mechanisms ([G] §9, §11; SPEC §3, §4)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.envs.participation.game import AuditSanction, ScorePayment, score_payment
from fedgames.envs.participation.theory import check_audit_policy
from fedgames.envs.protocol import Protocol
from fedgames.mechanisms.base import Mechanism
from fedgames.validation import integer, per_player, real


class Audit(Mechanism):
    """Each round audit ``k`` participants, chosen uniformly or by risk; one that manipulated with intensity ``u``
    is caught with probability ``p_detect u`` and pays the sanction ``S`` (a payment stage: [G] §11).

    Gaming no longer pays once ``S`` reaches the minimum deterrent sanction
    ``S_min = (w((1 - pi) delta - gamma q0) - phi Q'(z) gamma q0 / N) |P| / (k p_detect)``
    (:func:`fedgames.envs.participation.theory.minimum_sanction`), whichever the policy: at the margin a targeted
    audit deters no more than a uniform one, but it deters large manipulation far more
    (:func:`~fedgames.envs.participation.theory.audit_probability`).

    Args:
        env: a ``participation_v0`` env.
        k: participants audited per round (``>= 1``; default 1, or with a ``budget`` no limit but the budget).
        p_detect: probability that an audit catches full manipulation, in ``[0, 1]``.
        S: the sanction (``>= 0``).
        policy: ``"uniform"`` (at random) or ``"risk"`` (the largest gaps between the public and the challenge
            score, :class:`~fedgames.envs.participation.game.AuditSanction`).
        budget: audit greedily within this budget a round (``> 0``) instead of ``k`` at a time (no closed form).
        costs: each client's audit cost (``> 0``), with a ``budget``: one number for all, one per client, or in a
            spec string ``"c1;c2;..."`` (``audit:budget=3,policy=risk,costs=1;2;1;2``).
    """

    id = "audit"

    def __init__(
        self,
        env: ParallelEnv,
        k: int | None = None,
        p_detect: float = 0.5,
        S: float = 1.0,
        policy: str = "uniform",
        budget: float | None = None,
        costs: float | Sequence[float] = 1.0,
    ) -> None:
        self.k = k if k is None else integer("audit: k", k, 1)
        self.budget = budget if budget is None else real("audit: budget", budget, strict=True)
        checked = per_player("audit: costs", _cost_values(costs), len(env.possible_agents), strict=True)
        if self.budget is None and not np.all(checked == 1.0):
            raise ValueError("audit: costs apply to audits within a budget; give budget too")
        # as a spec writes them: one number, or 'c1;c2;...' (commas separate a spec's parameters)
        self.costs = float(checked[0]) if np.ptp(checked) == 0 else ";".join(f"{c:g}" for c in checked)
        self._costs = () if np.all(checked == 1.0) else tuple(float(c) for c in checked)
        self.p_detect = real("audit: p_detect", p_detect, 0.0, 1.0)
        self.S = real("audit: S", S)
        try:
            self.policy = check_audit_policy(policy)
        except ValueError as error:
            raise ValueError(f"audit: {error}") from None
        super().__init__(env)

    def apply(self, protocol: Protocol) -> Protocol:
        score_payment(protocol, "audit")  # the game must pay on a score
        k = self.k if self.k is not None else (1 if self.budget is None else len(self.possible_agents))
        rule = AuditSanction(k, self.p_detect, self.S, self.policy, self.budget, self._costs)
        return protocol.with_stage(self, payment_rules=protocol.payment_rules + (rule,))


def _cost_values(costs: float | str | Sequence[float]) -> float | list[float]:
    """Audit costs as numbers: ``"c1;c2;..."`` split."""
    if not isinstance(costs, str):
        return costs  # type: ignore[return-value]
    try:
        return [float(c) for c in costs.split(";")]
    except ValueError:
        raise ValueError(f"audit: costs must be a number or 'c1;c2;...', got {costs!r}") from None


class ChallengeMixing(Mechanism):
    """Pay on ``y_i = (1 - pi) s_i + pi h_i``, mixing the private challenge score ``h`` (a holdout the client
    cannot game) into the public, gameable score ``s`` ([G] Thm 9.4). The incentive to game,
    ``w((1 - pi) delta - gamma q0)``, falls with ``pi`` and is gone once ``(1 - pi) delta <= gamma q0``.

    Args:
        env: a ``participation_v0`` env.
        pi: the mixing ratio, in ``[0, 1]``.
    """

    id = "challenge_mixing"

    def __init__(self, env: ParallelEnv, pi: float) -> None:
        self.pi = real("challenge_mixing: pi", pi, 0.0, 1.0)
        super().__init__(env)

    def apply(self, protocol: Protocol) -> Protocol:
        score = score_payment(protocol, "challenge_mixing")
        rules = tuple(ScorePayment(score.w, self.pi) if r is score else r for r in protocol.payment_rules)
        return protocol.with_stage(self, payment_rules=rules)
