"""Audits and sanctions, and challenge mixing: the participation game's mechanisms ([G] §9, §10, §11; SPEC §3, §4,
§8).

The audit stage's rule (:class:`AuditSanction`) and the per-round GLS terms it ranks by under ``policy=test``
(:class:`ScoreTest`) live here, below the games: the participation game plays them, and
:mod:`fedgames.envs.participation.detection` builds its ``T``-round test from the same terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.envs.contract import game_of
from fedgames.envs.protocol import Protocol
from fedgames.errors import did_you_mean
from fedgames.mechanisms.base import Mechanism
from fedgames.validation import integer, per_player, real

MIXINGS = ("random", "expected")
"""How challenge mixing pays (:class:`ChallengeMixing`, SPEC §3): on a challenge drawn at random each round with
probability ``pi``, or on the weighted score ``(1 - pi) s + pi h`` every round."""

AUDIT_POLICIES = ("uniform", "risk", "test")
"""How the audited are chosen: at random, by the gap between public and challenge score, by the GLS statistic."""


def check_audit_policy(policy: str) -> str:
    """``policy`` if it names an audit policy (:data:`AUDIT_POLICIES`), else a ``ValueError`` listing them."""
    if policy not in AUDIT_POLICIES:
        raise ValueError(
            f"audit policy must be one of {AUDIT_POLICIES}, got {policy!r}{did_you_mean(str(policy), AUDIT_POLICIES)}"
        )
    return policy


@dataclass(frozen=True)
class ScoreTest:
    """The per-round terms of SPEC §8's GLS statistic ([G] §10) for clients of honest level ``q0`` (one value, or
    one per client along the last axis): a round adds ``(delta - gamma q0)(s - q0) / sigma_s^2`` to the numerator
    and ``(delta - gamma q0)^2 / sigma_s^2`` to the information ``J``, a challenge round also
    ``- gamma q0 (h - q0) / sigma_h^2`` and ``(gamma q0)^2 / sigma_h^2``. Under manipulation ``u`` the numerator
    has mean ``u J`` and variance ``J``."""

    q0: float | tuple[float, ...]
    delta: float
    gamma: float
    score_noise: float
    challenge_noise: float

    def _levels(self) -> np.ndarray:
        return np.asarray(self.q0, dtype=float)

    @property
    def plain_information(self) -> np.ndarray:
        """``(delta - gamma q0)^2 / sigma_s^2``."""
        return (self.delta - self.gamma * self._levels()) ** 2 / self.score_noise**2

    @property
    def challenge_information(self) -> np.ndarray:
        """``(gamma q0)^2 / sigma_h^2``."""
        return (self.gamma * self._levels()) ** 2 / self.challenge_noise**2

    def numerator(self, scores: np.ndarray, challenges: np.ndarray, challenged: np.ndarray) -> np.ndarray:
        """Each round's term of the statistic's numerator (a challenge score off the challenge rounds ignored)."""
        q0 = self._levels()
        plain = (self.delta - self.gamma * q0) * (scores - q0) / self.score_noise**2
        challenge = self.gamma * q0 * np.where(challenged, challenges - q0, 0.0) / self.challenge_noise**2
        return plain - challenge

    def information(self, challenged: np.ndarray) -> np.ndarray:
        """Each round's term of ``J``."""
        return self.plain_information + np.asarray(challenged, dtype=float) * self.challenge_information


@dataclass(frozen=True)
class AuditSanction:
    """Audits and sanctions ([G] §11): each round ``k`` participants are audited, chosen by ``policy``:

    - ``"uniform"``: those with the smallest audit-lottery draws (a uniform choice);
    - ``"risk"``: those with the largest score gap ``s_i - h_i`` between the public score and the server's private
      challenge score (``delta u_i`` plus noise: a risk score the server observes; 0 for a participant it did not
      challenge this round), ties by the lottery. Greedy by risk, the top ``k`` is the best choice for equal audit
      costs ([G] §E.11);
    - ``"test"``: those whose GLS statistic (SPEC §8, :class:`ScoreTest`) over the episode's rounds so far is
      largest, ties by the lottery: the likelihood-ratio ranking, ``Z_i = sum_t numerator_t / sqrt(sum_t J_t)``,
      ``N(u_i sqrt(J), 1)`` for a client that played ``u_i`` throughout (the game keeps the sums in its messages).

    With a ``budget`` and per-client audit ``costs`` the server instead audits greedily within the budget (at most
    ``k``): uniformly, in lottery order, each client whose cost still fits; by risk (or by the statistic), in order
    of risk per cost (risk ``max(score, 0)``, only positive risks), then keeps the single affordable client of
    highest risk instead where that one alone covers more risk. That is the greedy of [G] Prop. 11.2 for the risk
    covered, and it covers at least half the most a budget can ([G] §E.11).

    An audited client is caught with probability ``p_detect u_i`` (its detection draw below ``p_detect u_i``) and
    pays ``S``. Reads the participants' scores and only the audited clients' audit fields."""

    k: int
    p_detect: float
    S: float
    policy: str = "uniform"
    budget: float | None = None
    costs: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        check_audit_policy(self.policy)

    def risk(self, messages: np.ndarray) -> np.ndarray:
        """``(B, N)`` each client's risk score, ``max(score, 0)``: the score gap of the challenged (``risk``) or the
        GLS statistic over the rounds so far (``test``), rounded so that equal scores (noiseless ones) tie whatever
        rounding their qualities met."""
        if self.policy == "test":
            information = messages[..., 8]
            with np.errstate(invalid="ignore", divide="ignore"):
                score = np.where(information > 0, messages[..., 7] / np.sqrt(information), 0.0)
        else:
            score = np.where(messages[..., 6] > 0, messages[..., 1] - messages[..., 2], 0.0)
        return np.maximum(np.round(score, 12), 0.0)

    def audited(self, messages: np.ndarray) -> np.ndarray:
        """``(B, N)`` which clients are audited this round."""
        present = messages[..., 0] > 0
        lottery = messages[..., 4]
        targeted = self.policy != "uniform"
        risk = self.risk(messages) if targeted else np.zeros(present.shape)
        if self.budget is not None:
            return self._within_budget(present, lottery, risk)
        priority = -risk if targeted else lottery
        return _smallest(np.where(present, priority, np.inf), lottery, min(self.k, present.shape[-1])) & present

    def _within_budget(self, present: np.ndarray, lottery: np.ndarray, risk: np.ndarray) -> np.ndarray:
        assert self.budget is not None  # audited() calls this with a budget only
        costs = np.broadcast_to(np.asarray(self.costs or (1.0,), dtype=float), present.shape)
        by_risk = self.policy != "uniform"
        eligible = present & (risk > 0) if by_risk else present
        priority = -risk / costs if by_risk else lottery
        order = np.lexsort((lottery, np.where(eligible, priority, np.inf)), axis=-1)
        rows = np.arange(present.shape[0])
        remaining, count = np.full(present.shape[0], float(self.budget)), np.zeros(present.shape[0], dtype=int)
        audited = np.zeros_like(present)
        for j in range(present.shape[1]):
            client = order[:, j]
            cost = costs[rows, client]
            take = eligible[rows, client] & (cost <= remaining + 1e-12) & (count < self.k)
            audited[rows[take], client[take]] = True
            remaining -= np.where(take, cost, 0.0)
            count += take
        if by_risk:  # the single affordable client of highest risk, where it alone covers more
            single = np.where(eligible & (costs <= self.budget + 1e-12), risk, -np.inf).argmax(-1)
            alone = risk[rows, single] * eligible[rows, single] > (risk * audited).sum(-1)
            audited[alone] = False
            audited[rows[alone], single[alone]] = True
        return audited

    def outcome(self, messages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(B, N)`` which clients are audited this round, and which of them the audit caught."""
        audited = self.audited(messages)
        return audited, audited & (messages[..., 5] < self.p_detect * messages[..., 3])

    def caught(self, messages: np.ndarray) -> np.ndarray:
        """``(B, N)`` which clients an audit caught this round."""
        return self.outcome(messages)[1]

    def __call__(self, messages: np.ndarray, aggregate: np.ndarray) -> np.ndarray:
        return self.S * self.caught(messages)


def _smallest(key: np.ndarray, lottery: np.ndarray, k: int) -> np.ndarray:
    """``(B, N)``: each row's ``k`` smallest entries by ``(key, lottery)`` in lexicographic order (the lottery's
    draws distinct), by partition rather than a full sort: those below the ``k``-th smallest key, then of those
    equal to it the ones with the smallest lottery draws."""
    if k == 0:
        return np.zeros(key.shape, dtype=bool)
    kth = np.partition(key, k - 1, axis=-1)[..., k - 1 : k]
    chosen = key < kth
    tied = key == kth
    short = k - chosen.sum(-1)
    rows = np.flatnonzero(tied.sum(-1) > short)  # more ties than places: the lottery decides
    if rows.size:
        order = np.argsort(np.where(tied[rows], lottery[rows], np.inf), axis=-1)
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(key.shape[-1])[None, :], axis=-1)
        tied[rows] &= ranks < short[rows, None]
    return chosen | tied


def score_payment(protocol: Protocol, owner: str = "participation_v0") -> Any:
    """The protocol's payment on a score (a rule with the challenge-mixing ratio ``pi`` and ``paid_score``: the
    participation game's); a ``ValueError`` naming ``owner`` where there is none."""
    for rule in protocol.payment_rules:
        if hasattr(rule, "paid_score") and hasattr(rule, "pi"):
            return rule
    raise ValueError(f"{owner} applies to games that pay on a score (participation_v0)")


def score_test(game: Any, owner: str) -> ScoreTest:
    """The GLS terms for ``game`` from the rules it states (``delta``, ``gamma``, the honest ``q0`` and the
    scores' noise: what the server knows, SPEC §8); a ``ValueError`` naming ``owner`` where it states none or a
    score is noiseless."""
    names = ("q0", "delta", "gamma", "score_noise", "challenge_noise")
    if not all(hasattr(game, name) for name in names):
        raise ValueError(f"{owner} needs a game that states {names} (participation_v0)")
    if min(game.score_noise, game.challenge_noise) <= 0:
        raise ValueError(f"{owner} needs score_noise > 0 and challenge_noise > 0 (the test's variances)")
    q0 = np.asarray(game.q0, dtype=float)
    levels = float(q0.flat[0]) if np.ptp(q0) == 0 else tuple(float(q) for q in q0)
    return ScoreTest(levels, float(game.delta), float(game.gamma), float(game.score_noise), float(game.challenge_noise))


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
        k: participants audited per round (``1 <= k <= N``; default 1, or with a ``budget`` no limit but the
            budget).
        p_detect: probability that an audit catches full manipulation, in ``[0, 1]``.
        S: the sanction (``>= 0``).
        policy: ``"uniform"`` (at random), ``"risk"`` (the largest gaps between the public and the challenge
            score) or ``"test"`` (the largest GLS statistics of SPEC §8 over the rounds so far),
            :class:`AuditSanction`.
        budget: audit greedily within this budget a round (at least the smallest cost) instead of ``k`` at a time
            (no closed form).
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
        n = len(env.possible_agents)
        self.k = k if k is None else integer("audit: k", k, 1, n)
        self.budget = budget if budget is None else real("audit: budget", budget, strict=True)
        checked = per_player("audit: costs", _cost_values(costs), n, strict=True)
        if self.budget is None and not np.all(checked == 1.0):
            raise ValueError("audit: costs apply to audits within a budget; give budget too")
        if self.budget is not None and self.budget < checked.min():
            raise ValueError(
                f"audit: budget must be at least the smallest audit cost ({checked.min():g}), got {self.budget:g}"
            )
        # as a spec writes them: one number, or 'c1;c2;...' (commas separate a spec's parameters)
        self.costs = float(checked[0]) if np.ptp(checked) == 0 else ";".join(f"{c:g}" for c in checked)
        self._costs = () if np.all(checked == 1.0) else tuple(float(c) for c in checked)
        self.p_detect = real("audit: p_detect", p_detect, 0.0, 1.0)
        self.S = real("audit: S", S)
        try:
            self.policy = check_audit_policy(policy)
        except ValueError as error:
            raise ValueError(f"audit: {error}") from None
        if self.policy == "test":  # the game's GLS record needs both scores noisy
            score_test(game_of(env).config, "audit: policy='test'")
        super().__init__(env)

    def apply(self, protocol: Protocol) -> Protocol:
        score_payment(protocol, "audit")  # the game must pay on a score
        k = self.k if self.k is not None else (1 if self.budget is None else len(self.possible_agents))
        rule = AuditSanction(k, self.p_detect, self.S, self.policy, self.budget, self._costs)
        return protocol.with_stage(self, payment_rules=protocol.payment_rules + (rule,))


def _cost_values(costs: float | str | Sequence[float]) -> float | Sequence[float]:
    """Audit costs as numbers: ``"c1;c2;..."`` split."""
    if not isinstance(costs, str):
        return costs
    try:
        return [float(c) for c in costs.split(";")]
    except ValueError:
        raise ValueError(f"audit: costs must be a number or 'c1;c2;...', got {costs!r}") from None


class ChallengeMixing(Mechanism):
    """Pay on the private challenge score ``h`` (a holdout the client cannot game) in place of the public, gameable
    score ``s`` with weight ``pi`` ([G] Thm 9.4, SPEC §3): by default each participant is challenged each round
    independently with probability ``pi`` and then paid on ``h_i``, otherwise on ``s_i`` (the server sees ``h_i``
    on a challenge round only, SPEC §8); ``mixing="expected"`` pays ``(1 - pi) s_i + pi h_i`` every round instead
    (less variance, and the server sees every challenge score). Either way the expected paid score is
    ``(1 - pi) s_i + pi h_i``, so the incentive to game, ``w((1 - pi) delta - gamma q0)``, falls with ``pi`` and is
    gone once ``(1 - pi) delta <= gamma q0``.

    Args:
        env: a ``participation_v0`` env.
        pi: the mixing ratio (the chance of a challenge), in ``[0, 1]``.
        mixing: ``"random"`` or ``"expected"``.
    """

    id = "challenge_mixing"

    def __init__(self, env: ParallelEnv, pi: float, mixing: str = "random") -> None:
        self.pi = real("challenge_mixing: pi", pi, 0.0, 1.0)
        if mixing not in MIXINGS:
            raise ValueError(
                f"challenge_mixing: mixing must be one of {MIXINGS}, got {mixing!r}{did_you_mean(str(mixing), MIXINGS)}"
            )
        self.mixing = mixing
        super().__init__(env)

    def apply(self, protocol: Protocol) -> Protocol:
        score = score_payment(protocol, "challenge_mixing")
        mixed = replace(score, pi=self.pi, mixing=self.mixing)
        rules = tuple(mixed if r is score else r for r in protocol.payment_rules)
        return protocol.with_stage(self, payment_rules=rules)


__all__ = [
    "AUDIT_POLICIES",
    "Audit",
    "AuditSanction",
    "ChallengeMixing",
    "MIXINGS",
    "ScoreTest",
    "check_audit_policy",
    "score_payment",
    "score_test",
]
