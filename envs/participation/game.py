"""Configuration and batched stages of the participation / exit game (SPEC §3).

Each round every client chooses ``[participate, u]``: it participates when ``participate >= 0.5`` (and it has not
exited for good), with manipulation intensity ``u in [0, 1]``. A participant's contribution is
``q_i = q0_i (1 - gamma u_i)``; welfare ``W = Q(sum_{i in P} q_i / N)``; its public score
``s_i = q_i + delta u_i + score_noise eps`` and private challenge score ``h_i = q_i + challenge_noise eps'``.

Protocol (SPEC §4), on ``B`` episodes at once: the messages are what the server may learn of each client,
``(B, N, 9)`` laid out :data:`MESSAGE_FIELDS` — whether it participates, its two scores (the challenge score where
the server challenged it: every round, or under ``challenge_mixing`` at random with probability ``pi``, SPEC §3),
what an audit of it would find (its ``u``, and two uniform draws: the audit lottery and the detection draw; the
server reads these only for the clients it audits), and the server's running GLS record of it (SPEC §8). The
aggregate is the reported metric ``M = Agg({y_i : i in P})`` ``(B, 1)``, the server's aggregation rule (the mean;
``robust_aggregation``: [G] Prop. 9.3) over the participants' paid scores ``y_i`` alone (the challenge score on a
challenge round, the public one otherwise; ``(1 - pi) s_i + pi h_i`` with ``mixing="expected"``)
(:func:`participants_aggregate`). The payment stage pays on the score
(:class:`ScorePayment`, ``- w y_i``), under the ``audit`` mechanism sanctions the caught, and under ``side_payment``
charges ``C (y_i - M)^2`` (balanced among the participants). Round reward: ``phi W - c_i - payment_i`` for a
participant, the outside option ``o_i`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedgames.envs.config import (
    SCALE_MAX,
    GameConfig,
    at_least,
    each_player,
    flag,
    noise_level,
    number,
    one_of,
    param,
    players,
)
from fedgames.envs.contract import game_of
from fedgames.envs.participation.theory import WELFARE_CURVES, Setting, welfare
from fedgames.envs.protocol import Aggregator, Protocol, broadcast, mean_aggregate
from fedgames.mechanisms.audit import (  # the audit stage's rule and the mixing options, a mechanism's (SPEC §4)
    MIXINGS,
    AuditSanction,
    score_payment,
    score_test,
)
from fedgames.mechanisms.side_payment import DeviationPayment

MESSAGE_FIELDS = (
    "present",
    "score",
    "challenge",
    "u",
    "lottery",
    "detection",
    "challenged",
    "evidence",
    "information",
)
"""The columns of a round's messages: whether the client takes part, its public score, its challenge score (0 where
the server does not see it), what an audit would find (its ``u``, the audit lottery's and the detection's uniform
draws), whether the server challenged it, and the server's record of it over the episode's rounds so far, this one
included: the sums of SPEC §8's GLS numerator terms and of their information ``J``
(:class:`~fedgames.mechanisms.audit.ScoreTest`; 0 where a score is noiseless), which ``audit:policy=test`` ranks
by."""

OBSERVATION_FIELDS = (
    "round",
    "cost",
    "participated",
    "exited",
    "participation",
    "welfare",
    "paid_score",
    "payment",
    "audited",
    "challenged",
    "sanctioned",
)
"""A player's observation: the round as a fraction of the horizon, its own participation cost, whether it took part
last round and whether it has exited for good, last round's participating fraction and welfare, its own paid score
and payment last round (0 when absent), and whether it was audited, challenged and caught (sanctioned) last round."""


@dataclass(frozen=True)
class ScorePayment:
    """The contribution payment: ``- w y_i`` to each participant (a negative payment: it receives), on its paid
    score ``y_i``, whose expectation is ``(1 - pi) s_i + pi h_i`` (``pi``: the challenge-mixing ratio, [G] Thm 9.4;
    ``mixing``: one of :data:`~fedgames.mechanisms.audit.MIXINGS`). The game's own payment is ``pi = 0``,
    ``"expected"``: paid on the public score, with every participant's challenge score seen by the server (what risk
    audits and the monitor read)."""

    w: float
    pi: float = 0.0
    mixing: str = "expected"

    def challenged(self, present: np.ndarray, draw: np.ndarray) -> np.ndarray:
        """``(B, N)``: the participants whose challenge score the server sees this round, from uniform ``draw``
        ``(B, N)``: those below ``pi`` (``"random"``), or every participant (``"expected"``)."""
        return present & (draw < self.pi) if self.mixing == "random" else present

    def paid_score(self, messages: np.ndarray) -> np.ndarray:
        """``(B, N)`` ``y_i`` of messages laid out :data:`MESSAGE_FIELDS`, 0 for the absent: the challenge score on
        a challenge round and the public score otherwise (``"random"``), or ``(1 - pi) s_i + pi h_i``."""
        if self.mixing == "random":
            paid = np.where(messages[..., 6] > 0, messages[..., 2], messages[..., 1])
        else:
            paid = (1 - self.pi) * messages[..., 1] + self.pi * messages[..., 2]
        return messages[..., 0] * paid

    def __call__(self, messages: np.ndarray, aggregate: np.ndarray) -> np.ndarray:
        return -self.w * self.paid_score(messages)


def participants_aggregate(aggregate: Aggregator, values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``(B, d)``: the aggregation rule applied to each episode's participants' ``values`` ``(B, N, d)`` alone (NaN
    where nobody takes part). Episodes with as many participants are aggregated in one call: at most ``N``."""
    counts = present.sum(1)
    ranked = np.take_along_axis(values, np.argsort(~present, axis=1, kind="stable")[..., None], axis=1)
    out = np.full((values.shape[0], values.shape[2]), np.nan)
    for k in np.unique(counts[counts > 0]):
        rows = counts == k
        out[rows] = aggregate(ranked[rows, :k], None)
    return out


def _differing(values: np.ndarray) -> tuple[float, ...]:
    """Each client's value where they differ, else ``()``."""
    return tuple(float(v) for v in values) if np.ptp(values) > 0 else ()


@dataclass(frozen=True)
class World:
    """The episode's private draws: each client's participation cost ``(B, N)``."""

    cost: np.ndarray


@dataclass
class RoundState:
    """Where ``B`` episodes stand between rounds (arrays ``(B, N)`` unless said otherwise)."""

    round: int
    exited: np.ndarray
    participated: np.ndarray
    participation: np.ndarray  # (B,) last round's participating fraction
    welfare: np.ndarray  # (B,)
    paid_score: np.ndarray
    payment: np.ndarray
    audited: np.ndarray
    challenged: np.ndarray
    caught: np.ndarray
    evidence: np.ndarray  # (B, N, 2) the GLS numerator and information summed over the rounds so far (SPEC §8)


@dataclass(frozen=True)
class Outcome:
    """One round of ``B`` episodes: messages, the server's aggregate, payments, welfare and rewards, and whom the
    server audited, caught (and how much it sanctioned them) and challenged."""

    messages: np.ndarray
    aggregate: np.ndarray
    payments: np.ndarray
    welfare: np.ndarray
    rewards: np.ndarray
    present: np.ndarray
    audited: np.ndarray
    caught: np.ndarray
    sanction: np.ndarray


@dataclass(frozen=True)
class ParticipationConfig(GameConfig):
    """The participation game's configuration (SPEC §3; the convention of :mod:`fedgames.envs.contract`).

    Attributes:
        n_players: ``N >= 2``.
        rounds: ``T >= 1`` rounds per episode.
        phi: value of the shared model to a participant, in ``[0, 1e15]``.
        w: contribution payment rate, in ``[0, 1e15]``.
        gamma: share of a contribution that full manipulation destroys, in ``[0, 1]``.
        delta: how much full manipulation inflates the public score, in ``[0, 1e15]``.
        q0: data quality (one value, or one per client), in ``[0, 1e15]``.
        outside_option: outside option ``o`` (one value or one per client), in ``[-1e15, 1e15]``.
        c_mean, c_std: participation costs ``max(0, N(c_mean, c_std))``, drawn per client and episode;
            ``c_mean`` in ``[-1e15, 1e15]``, ``c_std`` in ``[0, 1e15]``.
        score_noise, challenge_noise: standard deviations of the two scores' noise: 0 (noiseless) or in
            ``[1e-15, 1e15]`` (:data:`~fedgames.envs.config.SCALE_MIN`: the server's GLS record divides by their
            squares).
        welfare: ``"exponential"`` (``Q(z) = 1 - exp(-kappa z)``) or ``"s_shaped"`` (``z^h / (z^h + z0^h)``).
        kappa, h, z0: the welfare curves' parameters (``kappa`` in ``[0, 1e15]``, ``h >= 1``, ``z0`` in
            ``(0, 1e15]``).
        rejoin: an exited client may come back (default); ``False``: not taking part once is exiting for good
            (the domino setting).
        initial_participation: the participating fraction the first observation reports (with the welfare honest
            contributions at that level give), in ``[0, 1]``: where myopic clients start from.

    The scale parameters are bounded by :data:`~fedgames.envs.config.SCALE_MAX` (``1e15``) so that the float32
    observations (costs, paid scores, payments) and the squared score deviations side payments charge stay finite.
    """

    game: ClassVar[str] = "participation_v0"

    n_players: int = param(10, players(2))
    rounds: int = param(10, at_least(1))
    phi: float = param(1.0, number(0.0, SCALE_MAX))
    w: float = param(0.5, number(0.0, SCALE_MAX))
    gamma: float = param(0.5, number(0.0, 1.0))
    delta: float = param(1.0, number(0.0, SCALE_MAX))
    q0: Any = param(1.0, each_player(maximum=SCALE_MAX), per_player=True)
    outside_option: Any = param(0.0, each_player(-SCALE_MAX, maximum=SCALE_MAX), per_player=True)
    c_mean: float = param(0.5, number(-SCALE_MAX, SCALE_MAX))
    c_std: float = param(0.2, number(0.0, SCALE_MAX))
    score_noise: float = param(0.1, noise_level())
    challenge_noise: float = param(0.1, noise_level())
    welfare: str = param("exponential", one_of(WELFARE_CURVES))
    kappa: float = param(2.0, number(0.0, SCALE_MAX))
    h: float = param(4.0, number(1.0))
    z0: float = param(0.5, number(0.0, SCALE_MAX, strict=True))
    rejoin: bool = param(True, flag())
    initial_participation: float = param(1.0, number(0.0, 1.0))


def theory_setting(config: ParticipationConfig, protocol: Protocol) -> Setting:
    """The mean-field theory's parameters (:mod:`~fedgames.envs.participation.theory`) for the game of ``config``
    under ``protocol`` (its score payment's ``pi`` and mixing, its audit rule's ``k``, ``p_detect``, ``S`` and
    policy, its side payment's ``C`` and balance), with the clients' mean ``q0`` and ``outside_option``, and each
    client's own where they differ."""
    score = score_payment(protocol)
    audits = [r for r in protocol.payment_rules if isinstance(r, AuditSanction)]
    side = [r for r in protocol.payment_rules if hasattr(r, "from_deviation")]
    if len(audits) > 1 or len(side) > 1:
        raise ValueError("the mean-field theory knows one audit rule and one side payment; this protocol has several")
    if side and protocol.aggregate is not mean_aggregate:
        raise ValueError("the mean-field theory prices side payments on the mean metric, not on a robust aggregate")
    if audits and audits[0].budget is not None:
        raise ValueError("the mean-field theory knows k audits a round, not audits within a budget")
    if side and not isinstance(side[0], DeviationPayment):
        raise ValueError(f"the mean-field theory prices the side payment C (y_i - M)^2, not {side[0]!r}")
    audit = audits[0] if audits else AuditSanction(0, 0.0, 0.0)
    C, balanced = (side[0].C, side[0].balanced) if side and isinstance(side[0], DeviationPayment) else (0.0, False)
    return Setting(
        n_players=config.n_players,
        phi=config.phi,
        w=score.w,
        gamma=config.gamma,
        delta=config.delta,
        pi=score.pi,
        mixing=score.mixing,
        audits=audit.k,
        p_detect=audit.p_detect,
        sanction=audit.S,
        audit_policy=audit.policy,
        score_noise=config.score_noise,
        challenge_noise=config.challenge_noise,
        C=C,
        balanced=balanced,
        q0=float(np.mean(config.q0)),
        outside_option=float(np.mean(config.outside_option)),
        client_q0=_differing(config.q0),
        client_outside_option=_differing(config.outside_option),
        c_mean=config.c_mean,
        c_std=max(config.c_std, 1e-12),
        welfare=config.welfare,
        kappa=config.kappa,
        h=config.h,
        z0=config.z0,
    )


def participation_config(env: Any) -> ParticipationConfig:
    """The configuration of ``env``, a ``participation_v0`` env with any mechanisms around it, read through the game
    contract (:func:`~fedgames.envs.contract.game_of`); a ``ValueError`` for another env."""
    try:
        config = game_of(env).config
    except (AttributeError, ValueError):
        config = None
    if not isinstance(config, ParticipationConfig):
        raise ValueError(f"a participation_v0 env is needed, got {env!r}")
    return config


class ParticipationGame:
    """The participation game's batched stages; its configuration's fields (``n_players``, ``rounds``, ``q0`` ...)
    read as its attributes.

    Args:
        config: a :class:`ParticipationConfig` (default: the defaults), or its fields as keywords.
    """

    action_names = ("participate", "u")

    # the configuration's fields, copied onto the game (ParticipationConfig documents them)
    n_players: int
    rounds: int
    phi: float
    w: float
    gamma: float
    delta: float
    q0: np.ndarray
    outside_option: np.ndarray
    c_mean: float
    c_std: float
    score_noise: float
    challenge_noise: float
    welfare: str
    kappa: float
    h: float
    z0: float
    rejoin: bool
    initial_participation: float

    def __init__(self, config: ParticipationConfig | None = None, **fields: Any) -> None:
        self.config = config if config is not None else ParticipationConfig.from_kwargs(**fields)
        for name in self.config.names():
            setattr(self, name, getattr(self.config, name))
        self.curve = Setting(welfare=self.welfare, kappa=self.kappa, h=self.h, z0=self.z0)  # what Q(z) reads
        noisy = min(self.score_noise, self.challenge_noise) > 0
        self.gls_terms = score_test(self.config, "participation_v0") if noisy else None  # the record (SPEC §8)

    def protocol(self) -> Protocol:
        """Mean aggregation of the participants' messages, the score payment with ``pi = 0``, no audits."""
        return Protocol(self.action_names, np.zeros(2), np.ones(2), payment_rules=(ScorePayment(self.w),))

    def setting(self, protocol: Protocol) -> Setting:
        """The mean-field theory's parameters for this game under ``protocol`` (:func:`theory_setting`)."""
        return theory_setting(self.config, protocol)

    def sample_world(self, rng: np.random.Generator, batch: int) -> World:
        """Each client's participation cost for ``batch`` episodes."""
        return World(np.maximum(0.0, self.c_mean + self.c_std * rng.standard_normal((batch, self.n_players))))

    def start(self, batch: int) -> RoundState:
        """Before the first round: nobody has taken part or exited yet; the participation level is
        ``initial_participation``, with the welfare honest contributions at that level give."""
        zeros = np.zeros((batch, self.n_players))
        level = self.initial_participation
        first_welfare = float(welfare(level * float(np.mean(self.q0)), self.curve))
        never = zeros.astype(bool)
        return RoundState(
            0,
            never,
            never,
            np.full(batch, level),
            np.full(batch, first_welfare),
            zeros.copy(),
            zeros.copy(),
            never,
            never,
            never,
            np.moveaxis(np.zeros((2, batch, self.n_players)), 0, -1),  # each sum contiguous in memory
        )

    def observe(self, world: World, state: RoundState) -> np.ndarray:
        """``(B, N, 11)`` observations, laid out :data:`OBSERVATION_FIELDS`."""
        batch, n = world.cost.shape
        fields = np.empty((len(OBSERVATION_FIELDS), batch, n))  # one field after the other: contiguous writes
        columns: tuple[float | np.ndarray, ...] = (
            state.round / self.rounds,
            world.cost,
            state.participated,
            state.exited,
            state.participation[:, None],  # one value per episode, seen by every player
            state.welfare[:, None],
            state.paid_score,
            state.payment,
            state.audited,
            state.challenged,
            state.caught,
        )
        for k, column in enumerate(columns):
            fields[k] = column
        return np.moveaxis(fields, 0, -1)

    def play_round(
        self, protocol: Protocol, world: World, state: RoundState, actions: np.ndarray, rng: np.random.Generator
    ) -> Outcome:
        """One round of ``B`` episodes with checked ``actions`` ``(B, N, 2)``; advances ``state``.

        The random draws (score noise, audit lottery, detection and challenges) do not depend on the actions:
        profiles that differ only in actions are compared on common random numbers."""
        batch, n = world.cost.shape
        draws = rng.standard_normal((2, batch, n))
        lottery, detection, challenge_draw = rng.random((3, batch, n))
        present = (actions[..., 0] >= 0.5) & ~state.exited
        u = actions[..., 1] * present
        quality = self.q0 * (1 - self.gamma * u)
        z = (quality * present).sum(1) / n
        welfare_now = np.asarray(welfare(z, self.curve))
        score = quality + self.delta * u + self.score_noise * draws[0]
        challenge = quality + self.challenge_noise * draws[1]
        payment = score_payment(protocol)
        challenged = payment.challenged(present, challenge_draw)
        if self.gls_terms is not None:  # the server's record of each participant (SPEC §8)
            state.evidence[..., 0] += np.where(present, self.gls_terms.numerator(score, challenge, challenged), 0.0)
            state.evidence[..., 1] += np.where(present, self.gls_terms.information(challenged), 0.0)
        # the columns of the messages (B, N, 9) lie one after the other in memory, so reading one is contiguous
        columns = np.empty((len(MESSAGE_FIELDS), batch, n))
        for k, column in enumerate(
            (present, score * present, challenge * challenged, u, lottery, detection, challenged)
        ):
            columns[k] = column
        columns[7:] = np.moveaxis(state.evidence, -1, 0)
        messages = np.moveaxis(columns, 0, -1)
        paid = payment.paid_score(messages)
        aggregate = participants_aggregate(protocol.aggregate, paid[..., None], present)
        with np.errstate(invalid="ignore"):  # nobody present: a NaN metric, and nobody's deviation counts
            sq_deviation = np.where(present, (paid - aggregate) ** 2, 0.0)
        audits = {
            id(rule): rule.outcome(messages) for rule in protocol.payment_rules if isinstance(rule, AuditSanction)
        }
        payments = self._payments(protocol, messages, aggregate, sq_deviation, present, (payment, paid), audits)
        audited, caught, sanction = self._audits(protocol, messages, audits)
        rewards = np.where(present, self.phi * welfare_now[:, None] - world.cost - payments, self.outside_option)
        if not self.rejoin:
            state.exited = state.exited | ~present
        state.round += 1
        state.participated = present
        state.participation = present.mean(1)
        state.welfare = welfare_now
        state.paid_score = paid
        state.payment = np.where(present, payments, 0.0)
        state.audited, state.challenged, state.caught = audited, challenged, caught
        return Outcome(
            messages, aggregate, payments * present, welfare_now, rewards, present, audited, caught, sanction
        )

    @staticmethod
    def _payments(
        protocol: Protocol,
        messages: np.ndarray,
        aggregate: np.ndarray,
        sq_deviation: np.ndarray,
        present: np.ndarray,
        paid: tuple[ScorePayment, np.ndarray],
        audits: dict[int, tuple[np.ndarray, np.ndarray]],
    ) -> np.ndarray:
        """``(B, N)`` the sum of the protocol's payment rules, as :meth:`Protocol.payments` adds them (in their
        order, the deviation rules from ``sq_deviation``), with what this round already knows: the score payment's
        paid scores (``paid``: the rule and its ``y_i``) and each audit rule's outcome (``audits``, by ``id``)."""
        score_rule, scores = paid
        total: Any = 0
        for rule in protocol.payment_rules:
            if rule is score_rule:
                charge = -score_rule.w * scores
            elif isinstance(rule, AuditSanction) and id(rule) in audits:
                charge = rule.S * audits[id(rule)][1]
            elif hasattr(rule, "from_deviation"):
                charge = rule.from_deviation(sq_deviation, present)
            else:
                charge = rule(messages, aggregate)
            total = total + charge
        return np.asarray(total)

    @staticmethod
    def _audits(
        protocol: Protocol, messages: np.ndarray, outcomes: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(B, N)`` whom the protocol's audit rules audited and caught this round, and the sanctions charged
        (``outcomes``: each audit rule's :meth:`~fedgames.mechanisms.audit.AuditSanction.outcome`, by ``id``, where
        known)."""
        audited = np.zeros(messages.shape[:-1], dtype=bool)
        caught, sanction = audited.copy(), np.zeros(messages.shape[:-1])
        for rule in protocol.payment_rules:
            if isinstance(rule, AuditSanction):
                chosen, hit = outcomes[id(rule)] if outcomes is not None else rule.outcome(messages)
                audited, caught, sanction = audited | chosen, caught | hit, sanction + rule.S * hit
        return audited, caught, sanction

    def validate_protocol(self, protocol: Protocol) -> None:
        """The stages this game plays: any action bounds, an aggregation rule that works for any number of
        participants (1 to ``N``), the broadcast response, and payment rules that read the score or audit fields
        (the score payment, audits) or the score's deviation (side payments)."""
        if protocol.aggregate is not mean_aggregate:
            probe = np.random.default_rng(0).standard_normal((1, self.n_players, 1))
            for count in range(1, self.n_players + 1):
                try:
                    protocol.aggregate(probe[:, :count], None)
                except ValueError as error:
                    raise ValueError(
                        f"participation_v0: the aggregation rule must work for any number of "
                        f"participants, 1 to {self.n_players}; with {count}: {error}"
                    ) from error
        if protocol.respond is not broadcast:
            raise ValueError(
                "participation_v0 has no server response to perturb (noisy_response applies to the "
                "mean-estimation and FedSGD games)"
            )
        unknown = [
            r
            for r in protocol.payment_rules
            if not isinstance(r, (ScorePayment, AuditSanction)) and not hasattr(r, "from_deviation")
        ]
        if unknown:
            raise ValueError(
                f"participation_v0 pays on scores, sanctions audits and charges score deviations; it "
                f"cannot play the payment rule(s) {unknown}"
            )


__all__ = [
    "MESSAGE_FIELDS",
    "MIXINGS",
    "OBSERVATION_FIELDS",
    "AuditSanction",
    "Outcome",
    "ParticipationGame",
    "RoundState",
    "ScorePayment",
    "World",
    "participants_aggregate",
    "score_payment",
]
