"""Detecting gaming (SPEC §8, [G] §10): the GLS test's exact power against simulation, its size, the sample sizes,
identifiability, and the ``audit:policy=test`` mechanism against its closed form."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import norm

import fedgames
from fedgames.envs.batch import episode_batch
from fedgames.envs.participation import detection as d
from fedgames.envs.participation import theory

MODEL = {"delta": 1.0, "gamma": 0.5, "q0": 1.0, "score_noise": 1.0, "challenge_noise": 0.5}
"""``I(pi) = 0.25 + pi``: powers well inside (0, 1) at a few dozen rounds."""

RUNS = 20_000


def binomial_se(p: float, runs: int = RUNS) -> float:
    return math.sqrt(p * (1 - p) / runs)


@pytest.mark.parametrize("rounds, pi, u", [(10, 0.0, 0.5), (20, 0.3, 0.4), (5, 0.8, 0.6), (40, 0.5, 0.3)])
def test_simulated_rejection_rates_match_the_exact_power(rounds, pi, u):
    """[G] Thm 10.2: the rejection rate of the GLS test over 20,000 simulated clients is within 4.5 standard
    errors of the binomial mixture over the challenge rounds."""
    exact = d.power(rounds, pi, u, **MODEL)
    assert 0.1 < exact < 0.9  # a test that could fail either way
    simulated = d.simulate_rejections(rounds, pi, u, **MODEL, runs=RUNS, seed=rounds)
    assert abs(simulated.rate - exact) < 4.5 * binomial_se(exact)


@pytest.mark.parametrize("rounds, pi", [(1, 0.0), (12, 0.4), (60, 1.0)])
def test_the_size_is_alpha_for_honest_clients(rounds, pi):
    """Under ``H0`` (``u = 0``) ``Z`` is exactly ``N(0, 1)`` given the challenge rounds: the exact power is
    ``alpha`` and the simulated size is at most ``alpha`` within 3 standard errors."""
    alpha = 0.05
    assert d.power(rounds, pi, 0.0, **MODEL, alpha=alpha) == pytest.approx(alpha, abs=1e-12)
    simulated = d.simulate_rejections(rounds, pi, 0.0, **MODEL, alpha=alpha, runs=RUNS, seed=7)
    assert simulated.rate <= alpha + 3 * binomial_se(alpha)


def _conditional_curvature(rounds: int, pi: float, u: float, alpha: float) -> float:
    """The largest ``|f''(n)|`` of the conditional power ``f(n) = 1 - Phi(z_{1-alpha} - u sqrt(J_n))`` over
    ``n in [0, T]`` (finite differences on a fine grid)."""
    n = np.linspace(0, rounds, 20_001)
    information = rounds * (MODEL["delta"] - MODEL["gamma"] * MODEL["q0"]) ** 2 / MODEL["score_noise"] ** 2
    information = information + n * (MODEL["gamma"] * MODEL["q0"]) ** 2 / MODEL["challenge_noise"] ** 2
    f = norm.sf(norm.ppf(1 - alpha) - u * np.sqrt(information))
    return float(np.max(np.abs(np.gradient(np.gradient(f, n), n))))


@pytest.mark.parametrize("pi, u", [(0.0, 0.5), (0.2, 0.5), (0.5, 0.2), (1.0, 0.2)])
def test_power_at_the_sample_sizes(pi, u):
    """At ``T* = ceil(((z_{1-alpha} + z_{1-beta}) / (u sqrt(I(pi))))^2)`` the power is ``1 - beta`` up to the
    spread of the challenge count: exact without one (``pi`` 0 or 1), else within the delta method's second-order
    bound ``max|f''| Var(n_c) / 2``. The tail bound's ``T`` is larger and gives at least ``1 - beta``; the
    simulation at ``T*`` agrees with the exact power within 4.5 standard errors."""
    alpha, beta = 0.05, 0.2
    t_star = d.sample_size(pi, u, **MODEL, alpha=alpha, beta=beta)
    t_tail = d.tail_bound_sample_size(pi, u, **MODEL, alpha=alpha, beta=beta)
    rounds = math.ceil(t_star)
    exact = d.power(rounds, pi, u, **MODEL, alpha=alpha)
    spread = _conditional_curvature(rounds, pi, u, alpha) * rounds * pi * (1 - pi) / 2
    assert exact >= 1 - beta - spread - 1e-12
    if pi in (0.0, 1.0):
        assert spread == 0 and exact >= 1 - beta
    assert t_tail >= t_star and d.power(math.ceil(t_tail), pi, u, **MODEL, alpha=alpha) >= 1 - beta
    simulated = d.simulate_rejections(rounds, pi, u, **MODEL, alpha=alpha, runs=RUNS, seed=11)
    assert abs(simulated.rate - exact) < 4.5 * binomial_se(exact)


def test_gaming_is_not_identifiable_without_challenges_when_delta_is_gamma_q0():
    """[G] Prop. 10.1: with ``delta = gamma q0`` and ``pi = 0`` the scores' law does not move with ``u``: the power
    is ``alpha`` at every ``T`` (and the randomised test's simulated rate is within 4.5 standard errors of it);
    once ``pi > 0`` it rises above ``alpha`` and grows with ``T`` and with ``pi``."""
    aligned = {**MODEL, "delta": 0.5}
    alpha = 0.05
    assert not d.identifiable(0.0, 0.5, 0.5, 1.0) and d.fisher_information(0.0, **aligned) == 0
    assert all(d.power(t, 0.0, 1.0, **aligned, alpha=alpha) == pytest.approx(alpha, abs=1e-12) for t in (1, 10, 500))
    assert math.isinf(d.sample_size(0.0, 1.0, **aligned))
    simulated = d.simulate_rejections(30, 0.0, 1.0, **aligned, alpha=alpha, runs=RUNS, seed=3)
    assert abs(simulated.rate - alpha) < 4.5 * binomial_se(alpha)
    assert d.identifiable(0.1, 0.5, 0.5, 1.0)
    low, high = (d.power(20, pi, 0.3, **aligned, alpha=alpha) for pi in (0.1, 0.4))
    assert alpha < low < high < d.power(80, 0.4, 0.3, **aligned, alpha=alpha)
    assert not d.identifiable(0.5, 0.0, 0.0, 1.0)  # no manipulation effect on either score


def test_the_statistic_is_standard_normal_under_honesty_given_the_challenges():
    """Given the challenge rounds ``Z`` is ``N(u sqrt(J), 1)``: fixed challenge pattern, 20,000 honest and gaming
    clients; means within 4.5 standard errors, variances within 4.5 of theirs (``sqrt(2 / n)`` relative)."""
    rng = np.random.default_rng(5)
    model = d.DetectionModel(pi=0.5, **MODEL)
    challenged = np.tile(np.arange(16) % 3 == 0, (RUNS, 1))
    information = 16 * model.test.plain_information + challenged[0].sum() * model.test.challenge_information
    for u in (0.0, 0.3):
        scores, challenges, _ = d.simulate_scores(16, model, u, RUNS, rng)
        z = d.gls_statistic(scores, challenges, challenged, **MODEL)
        assert abs(z.mean() - u * math.sqrt(information)) < 4.5 / math.sqrt(RUNS)
        assert abs(z.var(ddof=1) - 1) < 4.5 * math.sqrt(2 / RUNS)


@pytest.mark.parametrize("u", [0.0, 0.2, 0.5])
def test_audits_by_the_test_statistic_find_a_lone_gamer_as_the_closed_form_says(u):
    """``audit:policy=test`` audits the ``k`` largest one-round GLS statistics, ``sqrt(J_1) u + N(0, 1)``: a lone
    gamer among 6 is audited as often as :func:`theory.audit_probability` says, within 4 standard errors."""
    env = fedgames.make(
        "participation_v0",
        mechanisms=["audit:k=2,p_detect=1,S=1,policy=test"],
        n_players=6,
        rounds=1,
        score_noise=1.0,
        challenge_noise=0.5,
    )
    episodes = 50_000
    batch = episode_batch(env, episodes, np.random.default_rng(6))
    batch.reset()
    actions = np.zeros((episodes, 6, 2))
    actions[..., 0] = 1.0
    actions[:, 0, 1] = u
    audited = env.protocol.payment_rules[-1].audited(batch.step(actions).outcome.messages)[:, 0]
    expected = theory.audit_probability(env.unwrapped.game.setting(env.protocol), 6, u)
    assert abs(audited.mean() - expected) < 4 * math.sqrt(expected * (1 - expected) / episodes)
    if u == 0.0:
        assert expected == pytest.approx(2 / 6)
    else:  # the test targets better than the score gap
        risk = theory.audit_probability(theory.Setting(**{**MODEL, "audit_policy": "risk", "audits": 2}), 6, u)
        assert expected > risk


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: d.power(10, pi=1.5), "pi"),
        (lambda: d.power(10, score_noise=-1.0), "score_noise"),
        (lambda: d.power(10, challenge_noise=0.0), "challenge_noise"),
        (lambda: d.power(0), "rounds"),
        (lambda: d.power(10, u=2.0), "u"),
        (lambda: d.power(10, alpha=1.0), "alpha"),
        (lambda: d.power(10, gamma=-0.1), "gamma"),
        (lambda: d.sample_size(0.2, 0.5, beta=0.0), "beta"),
        (lambda: d.sample_size(0.2, 0.0), "u"),
        (lambda: d.tail_bound_sample_size(0.2, 0.5, q0=-1.0), "q0"),
        (lambda: d.simulate_rejections(5, runs=0), "runs"),
        (lambda: d.gls_test(np.array([np.nan])), "rng"),
    ],
)
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_bad_audit_test_settings():
    with pytest.raises(ValueError, match="score_noise > 0"):
        fedgames.make("participation_v0", mechanisms=["audit:k=1,policy=test"], n_players=3, score_noise=0.0)
    with pytest.raises(ValueError, match="did you mean 'test'"):
        fedgames.make("participation_v0", mechanisms=["audit:k=1,policy=tset"], n_players=3)


def test_the_audit_choice_is_the_lexicographic_smallest():
    """:class:`AuditSanction` picks the ``k`` smallest ``(priority, lottery)`` by partition: the same clients as a
    full lexicographic sort, with ties (rounded keys) and absent clients (``inf``) among them."""
    from fedgames.mechanisms.audit import _smallest

    rng = np.random.default_rng(0)
    for _ in range(300):
        rows, n = int(rng.integers(1, 6)), int(rng.integers(1, 30))
        k = int(rng.integers(0, n + 1))
        key = np.round(rng.normal(size=(rows, n)), int(rng.integers(0, 2)))
        key[rng.random((rows, n)) < 0.3] = np.inf
        lottery = rng.random((rows, n))
        expected = np.zeros((rows, n), dtype=bool)
        np.put_along_axis(expected, np.lexsort((lottery, key), axis=-1)[..., :k], True, axis=-1)
        assert np.array_equal(_smallest(key, lottery, k), expected)


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("audit:k=5", r"audit: k must be an integer in \[1, 4\], got 5"),
        ("audit:budget=0.5,costs=1;2;1;2", r"budget must be at least the smallest audit cost \(1\), got 0.5"),
        ("audit:budget=2,costs=1;2", r"costs must be one number or one per player \(4\)"),
        ("audit:p_detect=1.5", r"p_detect must be a finite number in \[0, 1\]"),
        ("audit:S=-1", "S must be a finite number >= 0"),
    ],
)
def test_bad_audits_name_the_parameter_and_its_range(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        fedgames.make("participation_v0", mechanisms=[spec], n_players=4)


def test_test_audits_within_a_budget_stay_within_it_and_find_the_gamers():
    """``audit:policy=test`` with a budget: greedy by the GLS statistic per cost, never over the budget, never an
    absent client, and the two full gamers among eight audited more often than a uniform choice within the same
    budget audits them (by more than 4 standard errors)."""
    costs = (1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0)
    env = fedgames.make(
        "participation_v0",
        mechanisms=["audit:budget=3,policy=test,costs=" + ";".join(map(str, costs))],
        n_players=8,
        rounds=1,
        score_noise=1.0,
        challenge_noise=0.5,
    )
    episodes = 2000
    batch = episode_batch(env, episodes, np.random.default_rng(2))
    batch.reset()
    actions = np.ones((episodes, 8, 2))
    actions[..., 1] = 0.0
    actions[:, :2, 1] = 1.0  # players 0 and 1 game fully
    actions[:, 7, 0] = 0.0  # player 7 sits out
    rule = env.protocol.payment_rules[-1]
    messages = batch.step(actions).outcome.messages
    audited = rule.audited(messages)
    assert np.all((audited * np.array(costs)).sum(1) <= 3 + 1e-12) and not audited[:, 7].any()
    uniform = replace(rule, policy="uniform").audited(messages)
    targeted, random = audited[:, :2].mean(), uniform[:, :2].mean()
    assert targeted > random + 4 * math.sqrt(random * (1 - random) / (2 * episodes))


@pytest.mark.parametrize("mechanisms, pi", [([], 1.0), (["challenge_mixing:pi=0.4"], 0.4)], ids=["every", "random"])
def test_the_test_on_the_envs_scores_has_the_exact_power(mechanisms, pi):
    """The server's view in ``participation_v0`` is SPEC §8's score model: with a challenge score every round (the
    game's own payment, ``pi = 1`` in §8's terms) or, under ``challenge_mixing:pi=0.4``, on random challenge rounds
    (``pi = 0.4``). The GLS test on a lone gamer's scores over ``T = 6`` rounds (4000 batched episodes) rejects at
    the rate :func:`detection.power` gives, within 4.5 standard errors, and at ``alpha`` for an honest client; the
    server's own record in the messages is the same statistic."""
    env = fedgames.make(
        "participation_v0", mechanisms=mechanisms, n_players=3, rounds=6, score_noise=1.0, challenge_noise=0.5
    )
    episodes, u = 4000, 0.3
    batch = episode_batch(env, episodes, np.random.default_rng(9))
    batch.reset()
    actions = np.ones((episodes, 3, 2))
    actions[..., 1] = 0.0
    actions[:, 0, 1] = u
    rounds = [batch.step(actions).outcome.messages for _ in range(6)]
    scores, challenges, challenged = (np.stack([m[..., c] for m in rounds], -1) for c in (1, 2, 6))
    z = d.gls_statistic(scores, challenges, challenged > 0, **MODEL)  # (episodes, clients)
    np.testing.assert_allclose(rounds[-1][..., 7] / np.sqrt(rounds[-1][..., 8]), z, rtol=1e-9)
    rejected = d.gls_test(z).mean(0)
    for client, manipulation in ((0, u), (1, 0.0)):
        exact = d.power(6, pi, manipulation, **MODEL)
        assert abs(rejected[client] - exact) < 4.5 * binomial_se(exact, episodes)
