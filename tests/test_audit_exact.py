"""The audit stage's rules exactly ([G] §10, §11; SPEC §8; ``fedgames.mechanisms.audit``): the GLS terms by hand and
against simulation, the risk scores, the choice of the audited against a brute-force sort, the greedy within a
budget on small cases worked by hand, and the mechanisms' parameters (docs/testing.md, mutation testing)."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

import fedgames
from fedgames.mechanisms.audit import Audit, AuditSanction, ScoreTest, score_payment, score_test

# q0 != 1 and noises != 1, so that gamma q0 is not gamma / q0 and sigma^2 is not sigma or sigma^3:
# delta - gamma q0 = 1.5 - 0.5 = 1, gamma q0 = 0.5
TEST = ScoreTest(q0=2.0, delta=1.5, gamma=0.25, score_noise=0.5, challenge_noise=0.2)


def messages(**columns: object) -> np.ndarray:
    """``(B, N, 9)`` messages laid out as the participation game's ``MESSAGE_FIELDS``, every client present and
    unchallenged, with lottery draws ``0.1, 0.2, ...`` unless given."""
    names = ("present", "score", "challenge", "u", "lottery", "detection", "challenged", "evidence", "information")
    shape = np.shape(next(iter(columns.values()))) if columns else (1, 3)
    shape = shape if len(shape) == 2 else (1, *shape)
    defaults = {"present": 1.0, "lottery": 0.1 * (1 + np.arange(shape[-1]))}
    out = np.zeros((*shape, len(names)))
    for i, name in enumerate(names):
        out[..., i] = np.broadcast_to(np.asarray(columns.get(name, defaults.get(name, 0.0)), dtype=float), shape)
    return out


# ---------------------------------------------------------------------------------------------------------------
# ScoreTest: SPEC §8's per-round GLS terms
# ---------------------------------------------------------------------------------------------------------------


def test_the_gls_terms_by_hand():
    """``J_plain = (delta - gamma q0)^2 / sigma_s^2 = 1 / 0.25``, ``J_challenge = (gamma q0)^2 / sigma_h^2 = 0.25 /
    0.04``; a round with ``s = 2.3``, ``h = 1.9``: ``1 * 0.3 / 0.25 - 0.5 * (-0.1) / 0.04 = 1.2 + 1.25``."""
    assert TEST.plain_information == pytest.approx(4.0, rel=1e-12)
    assert TEST.challenge_information == pytest.approx(6.25, rel=1e-12)
    scores, challenges = np.array([2.3, 2.3]), np.array([1.9, 1.9])
    challenged = np.array([True, False])
    assert TEST.numerator(scores, challenges, challenged) == pytest.approx([2.45, 1.2], rel=1e-12)
    assert TEST.information(challenged) == pytest.approx([10.25, 4.0], rel=1e-12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        TEST.delta = 2.0  # type: ignore[misc]


def test_the_gls_numerator_has_mean_u_j_and_variance_j():
    """SPEC §8: under manipulation ``u`` (``s = q0 (1 - gamma u) + delta u + N(0, sigma_s^2)``, ``h = q0 (1 - gamma u)
    + N(0, sigma_h^2)``) the numerator of a challenge round has mean ``u J`` and variance ``J``, ``J = 10.25``;
    200,000 simulated rounds agree within 4 standard errors of the sample mean and of the sample variance."""
    rng, runs, u = np.random.default_rng(5), 200_000, 0.6
    quality = TEST.q0 * (1 - TEST.gamma * u)
    scores = quality + TEST.delta * u + TEST.score_noise * rng.standard_normal(runs)
    challenges = quality + TEST.challenge_noise * rng.standard_normal(runs)
    terms = TEST.numerator(scores, challenges, np.ones(runs, dtype=bool))
    J = float(TEST.information(True))
    assert abs(terms.mean() - u * J) < 4 * math.sqrt(J / runs)
    assert abs(terms.var() - J) < 4 * J * math.sqrt(2 / runs)


def test_score_test_keeps_one_level_for_clients_alike():
    """``score_test`` states the levels as one number where every client's ``q0`` is the same (also a plain number),
    one per client where they differ."""
    game = dict(delta=1.5, gamma=0.25, score_noise=0.5, challenge_noise=0.2)
    assert score_test(SimpleNamespace(q0=2.0, **game), "x") == TEST
    alike = score_test(SimpleNamespace(q0=np.full(4, 2.0), **game), "x")
    assert alike == TEST and isinstance(alike.q0, float)
    differ = score_test(SimpleNamespace(q0=np.array([1.0, 2.0, 2.0]), **game), "x")
    assert differ.q0 == (1.0, 2.0, 2.0)
    assert differ.plain_information == pytest.approx([(1.5 - 0.25) ** 2 / 0.25, 4.0, 4.0], rel=1e-12)


def test_score_payment_needs_a_rule_with_both_a_paid_score_and_a_ratio():
    paid = SimpleNamespace(paid_score=lambda m: m, pi=0.0)
    assert score_payment(SimpleNamespace(payment_rules=(object(), paid))) is paid
    for half in (SimpleNamespace(paid_score=lambda m: m), SimpleNamespace(pi=0.0)):
        with pytest.raises(ValueError, match="owner_name applies to games that pay on a score"):
            score_payment(SimpleNamespace(payment_rules=(half,)), "owner_name")


# ---------------------------------------------------------------------------------------------------------------
# AuditSanction: risk scores and the audited
# ---------------------------------------------------------------------------------------------------------------


def test_risk_scores_by_hand():
    """``risk``: the gap ``s - h`` of the challenged only, the GLS statistic ``evidence / sqrt(information)`` where
    there is information, 0 elsewhere, never negative."""
    risk = AuditSanction(1, 0.5, 1.0, "risk")
    gaps = messages(score=[1.3, 1.3, 1.0, 1.7], challenge=[0.0, 0.9, 1.4, 0.9], challenged=[0, 1, 1, 1])
    assert risk.risk(gaps)[0] == pytest.approx([0.0, 0.4, 0.0, 0.8], abs=1e-12)
    test = AuditSanction(1, 0.5, 1.0, "test")
    statistics = messages(evidence=[3.0, 0.5, 0.0, -2.0, 0.2], information=[4.0, 0.25, 0.0, 1.0, 0.0])
    assert test.risk(statistics).tolist() == [[1.5, 1.0, 0.0, 0.0, 0.0]]


def test_a_negative_gap_ranks_like_no_evidence():
    """A negative score gap is no risk: it ties with the unchallenged, and the lottery decides among them."""
    rule = AuditSanction(1, 0.5, 1.0, "risk")
    m = messages(score=[0.5, 1.0, 0.8], challenge=[1.0, 0.0, 1.0], challenged=[1, 0, 1], lottery=[0.1, 0.9, 0.5])
    assert rule.audited(m).tolist() == [[True, False, False]]


def brute_force_audited(m: np.ndarray, k: int, policy: str) -> np.ndarray:
    """The ``k`` present clients first in the order (largest risk, smallest lottery draw), by a full sort per row."""
    rule = AuditSanction(k, 0.5, 1.0, policy)
    risk = rule.risk(m) if policy != "uniform" else np.zeros(m.shape[:2])
    audited = np.zeros(m.shape[:2], dtype=bool)
    for b in range(m.shape[0]):
        present = [i for i in range(m.shape[1]) if m[b, i, 0] > 0]
        for i in sorted(present, key=lambda i: (-risk[b, i], m[b, i, 4]))[:k]:
            audited[b, i] = True
    return audited


@pytest.mark.parametrize("policy", ["uniform", "risk", "test"])
@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_the_audited_are_the_first_k_by_risk_then_lottery(policy, k):
    """200 rounds of 6 clients, some absent, some unchallenged (risk 0, ties the lottery breaks): ``audited`` is
    the brute-force sort's choice, and at most ``min(k, present)`` clients."""
    rng = np.random.default_rng(k)
    B, N = 200, 6
    m = messages(
        present=rng.random((B, N)) < 0.7,
        score=rng.normal(1.0, 0.3, (B, N)),
        challenge=rng.normal(1.0, 0.3, (B, N)),
        challenged=rng.random((B, N)) < 0.5,
        lottery=rng.random((B, N)),
        evidence=rng.normal(0.0, 2.0, (B, N)),
        information=rng.choice([0.0, 1.0, 4.0], (B, N)),
    )
    audited = AuditSanction(k, 0.5, 1.0, policy).audited(m)
    np.testing.assert_array_equal(audited, brute_force_audited(m, k, policy))
    assert np.all(audited.sum(-1) == np.minimum(k, (m[..., 0] > 0).sum(-1)))


@pytest.mark.parametrize("k", [1, 2, 5])
def test_the_audited_among_many_clients_are_the_first_k(k):
    """1000 clients (a partition of a few dozen is close to a full sort, and one at the wrong rank often passes),
    some absent, risks tied at 0 for the unchallenged: ``audited`` is the brute-force sort's choice."""
    rng = np.random.default_rng(10 + k)
    B, N = 20, 1000
    m = messages(
        present=rng.random((B, N)) < 0.8,
        score=rng.normal(1.0, 0.3, (B, N)),
        challenge=rng.normal(1.0, 0.3, (B, N)),
        challenged=rng.random((B, N)) < 0.3,
        lottery=rng.random((B, N)),
    )
    for policy in ("uniform", "risk"):
        audited = AuditSanction(k, 0.5, 1.0, policy).audited(m)
        np.testing.assert_array_equal(audited, brute_force_audited(m, k, policy))


def test_one_round_audits_k_clients_and_absent_clients_never():
    """A single round (``B = 1``) audits ``k = 2`` of 3; an absent client is never audited, not even with the
    smallest lottery draw or the largest risk."""
    assert AuditSanction(2, 0.5, 1.0).audited(messages(lottery=[0.3, 0.1, 0.2])).tolist() == [[False, True, True]]
    m = messages(present=[0, 1, 1], score=[5.0, 1.2, 1.1], challenge=[0, 1, 1], challenged=[1, 1, 1])
    for policy in ("uniform", "risk"):
        assert AuditSanction(1, 0.5, 1.0, policy).audited(m)[0, 0] == False  # noqa: E712
        assert AuditSanction(3, 0.5, 1.0, policy).audited(m).tolist() == [[False, True, True]]


def test_the_audited_are_caught_with_probability_p_detect_u():
    """Caught: audited, and the detection draw below ``p_detect u``; the sanction ``S`` falls on them alone."""
    rule = AuditSanction(3, 0.5, 2.0)
    m = messages(u=[1.0, 0.6, 1.0, 0.0], detection=[0.49, 0.31, 0.51, 0.0], lottery=[0.1, 0.2, 0.3, 0.4])
    audited, caught = rule.outcome(m)
    assert audited.tolist() == [[True, True, True, False]] and caught.tolist() == [[True, False, False, False]]
    assert rule(m, np.zeros(1)).tolist() == [[2.0, 0.0, 0.0, 0.0]]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.S = 0.0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------------------------
# Audits within a budget ([G] Prop. 11.2's greedy)
# ---------------------------------------------------------------------------------------------------------------


def budgeted(policy: str, budget: float, costs: tuple[float, ...], k: int = 10) -> AuditSanction:
    return AuditSanction(k, 0.5, 1.0, policy, budget, costs)


def test_uniform_audits_within_a_budget_by_hand():
    """In lottery order, each client whose cost still fits, at most ``k``: a client that does not fit costs
    nothing; at most ``k`` even where the budget allows more."""
    m = messages(lottery=[0.1, 0.2, 0.3])
    assert budgeted("uniform", 2.0, (3.0, 1.0, 1.0)).audited(m).tolist() == [[False, True, True]]
    assert budgeted("uniform", 2.0, (1.0, 1.0, 1.0), k=1).audited(m).tolist() == [[True, False, False]]
    assert budgeted("uniform", 2.0, (1.0, 1.0, 1.0)).audited(m).tolist() == [[True, True, False]]


def test_risk_audits_within_a_budget_by_hand():
    """By risk per cost, only positive risks; then the single affordable client of largest risk where it alone
    covers more (never one whose cost exceeds the budget), and the greedy's set where it covers as much."""
    gaps = dict(challenge=[0.0, 0.0, 0.0], challenged=[1, 1, 1])
    # risks 0.5, 0 (challenged, no gap) and 0.2: the zero risk is not audited even though the budget allows it
    m = messages(score=[0.5, 0.0, 0.2], **gaps)
    assert budgeted("risk", 3.0, (1.0, 1.0, 1.0)).audited(m).tolist() == [[True, False, True]]
    # risks 0.9 (cost 3), 0.5 (cost 1), 5 (cost 3.5 > budget): the greedy takes client 1 (0.5 per cost); client 0
    # alone covers 0.9 > 0.5 and fits; client 2 never fits
    m = messages(score=[0.9, 0.5, 5.0], **gaps)
    assert budgeted("risk", 3.0, (3.0, 1.0, 3.5)).audited(m).tolist() == [[True, False, False]]
    # risks 1, 0.5, 0.5 at costs 2, 1, 1 (0.5 per cost each, the lottery orders them 1, 2, 0): the greedy's
    # clients 1 and 2 cover 1, as much as client 0 alone: two audits are kept
    m = messages(score=[1.0, 0.5, 0.5], lottery=[0.9, 0.1, 0.2], **gaps)
    assert budgeted("risk", 2.0, (2.0, 1.0, 1.0)).audited(m).tolist() == [[False, True, True]]


# ---------------------------------------------------------------------------------------------------------------
# The mechanisms' parameters
# ---------------------------------------------------------------------------------------------------------------


def audit_rule(*mechanisms: str) -> AuditSanction:
    env = fedgames.make("participation_v0", mechanisms=list(mechanisms))
    (rule,) = [r for r in env.protocol.payment_rules if isinstance(r, AuditSanction)]
    return rule


def test_the_audit_mechanisms_defaults_and_costs():
    """Defaults: one audit a round, ``p_detect = 0.5``, ``S = 1``; with a budget and no ``k``, no limit but the
    budget (all 10 clients). Equal costs other than 1 are kept (one number in the spec); costs of 1 are the
    unit costs; a budget equal to the smallest cost is allowed."""
    plain = audit_rule("audit")
    assert (plain.k, plain.p_detect, plain.S, plain.budget, plain.costs) == (1, 0.5, 1.0, None, ())
    within = audit_rule("audit:budget=4,costs=2")
    assert within.k == 10 and within.costs == (2.0,) * 10
    assert budgeted("uniform", within.budget, within.costs).audited(messages(lottery=np.arange(10))).sum() == 2
    assert audit_rule("audit:budget=4,costs=1").costs == ()
    assert audit_rule("audit:budget=2,costs=2").budget == 2.0
    mechanism = fedgames.make("participation_v0", mechanisms=["audit:budget=4,costs=2"])
    assert isinstance(mechanism, Audit) and mechanism.costs == 2.0
    assert fedgames.make("participation_v0", mechanisms=["audit:budget=4,costs=1;2;2;2;2;2;2;2;2;2"]).costs == (
        "1;2;2;2;2;2;2;2;2;2"
    )


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("audit:budget=2,costs=0", "audit: costs"),
        ("audit:budget=1.5,costs=2", r"budget must be at least the smallest audit cost \(2\)"),
        ("challenge_mixing:pi=-0.5", "challenge_mixing: pi must be a finite number in \\[0, 1\\]"),
        ("challenge_mixing:pi=1.5", "challenge_mixing: pi must be a finite number in \\[0, 1\\]"),
    ],
)
def test_bad_audit_and_mixing_parameters_are_refused(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        fedgames.make("participation_v0", mechanisms=[spec])
