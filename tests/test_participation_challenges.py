"""Random challenges (SPEC §3, [G] Thm 9.4) and what the server learns from them (SPEC §8): who is challenged and
what is paid, the server's GLS record over the rounds and the ``audit:policy=test`` ranking on it, the
observations and ``infos`` of audits and challenges, and bad input."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import fedgames
from fedgames.agents import ConstantPolicy, RandomPolicy
from fedgames.envs.batch import episode_batch
from fedgames.envs.participation import detection as d
from fedgames.envs.participation import theory
from fedgames.envs.participation.game import MESSAGE_FIELDS, OBSERVATION_FIELDS
from fedgames.envs.participation.monitor import game_monitor
from fedgames.train.best_response_env import BestResponseEnv

MODEL = {"delta": 1.0, "gamma": 0.5, "q0": 1.0, "score_noise": 1.0, "challenge_noise": 0.5}
"""``I(pi) = 0.25 + pi`` (as the detection tests'): powers well inside (0, 1) at a few rounds."""

COLUMN = {name: i for i, name in enumerate(MESSAGE_FIELDS)}

KNOWN_WARNINGS = re.compile(r"infinity|not having a spec")
"""What Gymnasium's checker may say of the best-response view: the observation box's infinite bounds (the cost and
the scores are unbounded) and the missing registry spec."""


def make(mechanisms=(), **config):
    return fedgames.make("participation_v0", mechanisms=list(mechanisms), **config)


def play(env, episodes: int, u: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Every client takes part with manipulation ``u`` ``(N,)`` for the env's rounds: each round's messages."""
    batch = episode_batch(env, episodes, np.random.default_rng(seed))
    batch.reset()
    actions = np.stack([np.ones((episodes, len(u))), np.broadcast_to(u, (episodes, len(u)))], axis=-1)
    return [batch.step(actions).outcome.messages for _ in range(env.unwrapped.rounds)]


def test_random_challenges_pay_the_challenge_score_on_challenge_rounds_only():
    """``challenge_mixing:pi=0.3``: each participant is challenged each round with probability 0.3 (within 4
    binomial standard errors, independently of its ``u``); a challenged one is paid on its challenge score, the
    others on their public one, and the server sees no challenge score off the challenge rounds. The mean paid
    score is ``(1 - pi) E s + pi E h`` within 4 standard errors, and its variance is ``(1 - pi) sigma_s^2 + pi
    sigma_h^2 + pi (1 - pi) delta^2 u^2`` (4 of its standard errors, ``sqrt(2 / n)`` relative for Gaussian-like
    samples, here a two-point mixture: the sample's own fourth moment)."""
    env = make(["challenge_mixing:pi=0.3"], n_players=4, rounds=2, **MODEL)
    episodes, u = 50_000, np.array([0.0, 0.4, 1.0, 0.0])
    for messages in play(env, episodes, u):
        challenged = messages[..., COLUMN["challenged"]] > 0
        rate = challenged.mean(0)
        assert np.all(np.abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / episodes))
        assert np.all(messages[..., COLUMN["challenge"]][~challenged] == 0.0)
        paid = env.protocol.payment_rules[0].paid_score(messages)
        expected_paid = np.where(challenged, messages[..., COLUMN["challenge"]], messages[..., COLUMN["score"]])
        np.testing.assert_array_equal(paid, expected_paid)
        quality = 1 - 0.5 * u
        mean = quality + 0.7 * u
        variance = 0.7 * 1.0 + 0.3 * 0.25 + 0.3 * 0.7 * u**2
        centred = paid - paid.mean(0)
        assert np.all(np.abs(paid.mean(0) - mean) < 4 * np.sqrt(variance / episodes))
        var_se = np.sqrt(((centred**2 - centred.var(0)) ** 2).mean(0) / episodes)
        assert np.all(np.abs(paid.var(0) - variance) < 4 * var_se)


def test_expected_mixing_pays_the_weighted_score_and_sees_every_challenge():
    """``mixing=expected``: every participant is challenged every round and paid ``(1 - pi) s + pi h``; its paid
    score's variance is ``(1 - pi)^2 sigma_s^2 + pi^2 sigma_h^2``, whatever its ``u`` (4 standard errors)."""
    env = make(["challenge_mixing:pi=0.3,mixing=expected"], n_players=3, rounds=1, **MODEL)
    episodes = 40_000
    (messages,) = play(env, episodes, np.array([0.0, 1.0, 0.5]))
    assert np.all(messages[..., COLUMN["challenged"]] == 1.0)
    paid = env.protocol.payment_rules[0].paid_score(messages)
    np.testing.assert_allclose(paid, 0.7 * messages[..., COLUMN["score"]] + 0.3 * messages[..., COLUMN["challenge"]])
    variance = 0.49 * 1.0 + 0.09 * 0.25
    assert np.all(np.abs(paid.var(0) - variance) < 4 * variance * math.sqrt(2 / episodes))
    assert theory.Setting.from_env(env).mixing == "expected"
    assert theory.Setting.from_env(make(["challenge_mixing:pi=0.3"])).mixing == "random"


def test_the_servers_record_is_the_gls_statistic_of_the_rounds_so_far():
    """The messages carry, per client, the sums of SPEC §8's GLS terms over the rounds it took part in (random
    challenges, clients sitting rounds out at random): the information is ``J`` of the rounds it took part and was
    challenged in, and for a client that took part in every round so far the record is exactly
    :func:`detection.gls_statistic` of its scores, challenge scores and challenge rounds."""
    env = make(["challenge_mixing:pi=0.4"], n_players=3, rounds=4, **MODEL)
    batch = episode_batch(env, 500, np.random.default_rng(1))
    batch.reset()
    rng = np.random.default_rng(2)
    history = []
    for _ in range(4):
        actions = np.stack([rng.random((500, 3)) < 0.7, rng.random((500, 3))], axis=-1).astype(float)
        messages = batch.step(actions).outcome.messages
        history.append(messages)
        stacked = np.stack(history, -1)  # (episodes, clients, fields, rounds)
        present = stacked[:, :, COLUMN["present"]] > 0
        z = d.gls_statistic(
            stacked[:, :, COLUMN["score"]],
            stacked[:, :, COLUMN["challenge"]],
            stacked[:, :, COLUMN["challenged"]] > 0,
            **MODEL,
        )
        plain = (MODEL["delta"] - MODEL["gamma"] * MODEL["q0"]) ** 2 / MODEL["score_noise"] ** 2
        information = messages[..., COLUMN["information"]]
        rounds_in = present.sum(-1)
        challenged = (stacked[:, :, COLUMN["challenged"]] > 0).sum(-1)
        np.testing.assert_allclose(information, rounds_in * plain + challenged * 1.0, rtol=1e-12)
        seen = rounds_in == len(history)  # where the client took part in every round, the statistic is Z
        assert seen.sum() > 50
        record = messages[..., COLUMN["evidence"]][seen] / np.sqrt(information[seen])
        np.testing.assert_allclose(record, z[seen], rtol=1e-9)


@pytest.mark.parametrize("u", [0.0, 0.3])
def test_test_audits_rank_by_the_statistic_accumulated_over_the_rounds(u):
    """``audit:policy=test`` ranks by the GLS statistic over the episode's rounds so far: a lone gamer among 6,
    ``u`` every round, is audited in round ``t`` as often as :func:`theory.audit_probability` with ``rounds=t``
    says (4 binomial standard errors), ``k / |P|`` when honest; for a gamer the chance grows with ``t`` (one
    round's statistic would leave it flat)."""
    env = make(["audit:k=2,p_detect=1,S=1,policy=test"], n_players=6, rounds=3, **MODEL)
    episodes = 30_000
    manipulation = np.zeros(6)
    manipulation[0] = u
    rule = env.protocol.payment_rules[-1]
    setting = theory.Setting.from_env(env)
    chances, rates = [], []
    for t, messages in enumerate(play(env, episodes, manipulation, seed=3), start=1):
        rates.append(rule.audited(messages)[:, 0].mean())
        chances.append(theory.audit_probability(setting, 6, u, rounds=t))
        se = math.sqrt(chances[-1] * (1 - chances[-1]) / episodes)
        assert abs(rates[-1] - chances[-1]) < 4 * se
    if u == 0:
        assert chances == pytest.approx([2 / 6] * 3)
    else:  # each round's rise is more than 8 standard errors
        assert np.all(np.diff(rates) > 8 * math.sqrt(0.25 / episodes))


def test_targeted_audits_under_random_challenges_have_no_closed_form():
    setting = theory.Setting.from_env(make(["challenge_mixing:pi=0.3", "audit:k=2,policy=risk"], n_players=6))
    with pytest.raises(ValueError, match="not random challenges with pi = 0.3"):
        theory.audit_probability(setting, 6, 0.5)
    assert theory.audit_probability(setting, 6, 0.0) == pytest.approx(2 / 6)  # honest like the others: k / |P|
    none_seen = theory.Setting.from_env(make(["challenge_mixing:pi=0", "audit:k=2,policy=risk"], n_players=6))
    assert theory.audit_probability(none_seen, 6, 1.0) == pytest.approx(2 / 6)  # no gap seen: the lottery


def test_risk_audits_see_the_gaps_of_the_challenged_only():
    """Under random challenges the risk policy can only rank the challenged: a full gamer (its gap ``delta = 1``,
    seven times the gaps' noise) is audited whenever it is challenged, but when it is not its risk is 0 and only
    the lottery finds it, where no challenged client shows a positive gap (``(3/4)^4 / 5`` of the time, about
    0.06, within 4 binomial standard errors)."""
    env = make(["challenge_mixing:pi=0.5", "audit:k=1,p_detect=1,S=1,policy=risk"], n_players=5, rounds=1)
    (messages,) = play(env, 4000, np.array([1.0, 0, 0, 0, 0]), seed=4)
    rule = env.protocol.payment_rules[-1]
    risk, audited = rule.risk(messages), rule.audited(messages)
    challenged = messages[..., COLUMN["challenged"]] > 0
    assert np.all(risk[~challenged] == 0.0) and (risk[challenged] > 0).any()
    gamer_challenged = challenged[:, 0]
    rate_challenged, rate_plain = audited[gamer_challenged, 0].mean(), audited[~gamer_challenged, 0].mean()
    lottery = 0.75**4 / 5  # none of the other four challenged with a positive gap, then one of five at random
    assert rate_challenged > 0.99
    assert abs(rate_plain - lottery) < 4 * math.sqrt(lottery * (1 - lottery) / (~gamer_challenged).sum())


def test_observations_and_infos_say_who_was_audited_challenged_and_caught():
    """A full gamer under certain detection (``p_detect = 1``) audited every round (``k = N``) is caught and pays
    ``S`` beside its score payment; its next observation says so, and ``infos`` carry the audit, the catch, the
    sanction and the challenge (``pi = 1``: every participant challenged)."""
    env = make(["challenge_mixing:pi=1", "audit:k=3,p_detect=1,S=2"], n_players=3, rounds=2)
    obs, _ = env.reset(seed=0)
    fields = {name: i for i, name in enumerate(OBSERVATION_FIELDS)}
    assert obs["player_0"][fields["audited"]] == 0.0
    actions = {a: np.array([1.0, 1.0 if a == "player_0" else 0.0], dtype=np.float32) for a in env.agents}
    obs, rewards, _, _, infos = env.step(actions)
    gamer, honest = infos["player_0"], infos["player_1"]
    assert gamer["audited"] and gamer["caught"] and gamer["sanction"] == 2.0 and gamer["challenged"]
    assert honest["audited"] and not honest["caught"] and honest["sanction"] == 0.0
    assert gamer["payment"] == pytest.approx(2.0 - 0.5 * gamer["paid_score"])
    assert obs["player_0"][fields["sanctioned"]] == 1.0 and obs["player_1"][fields["sanctioned"]] == 0.0
    assert obs["player_1"][fields["audited"]] == obs["player_1"][fields["challenged"]] == 1.0


@pytest.mark.parametrize(
    "mechanisms, config, pattern",
    [
        (["challenge_mixing:pi=1.5"], {}, r"pi must be a finite number in \[0, 1\]"),
        (["challenge_mixing:pi=0.2,mixing=expectd"], {}, "mixing must be one of .*did you mean 'expected'"),
        (["audit:p_detect=-0.1"], {}, r"p_detect must be a finite number in \[0, 1\]"),
        ([], {"gamma": 1.5}, r"gamma must be .*\[0, 1\]"),
        ([], {"initial_participation": -0.2}, r"initial_participation must be .*\[0, 1\]"),
        ([], {"c_std": -0.1}, "c_std must be a finite number in \\[0, 1e\\+15\\], got -0.1"),
        ([], {"score_noise": -1.0}, "score_noise must be a finite number in \\[0, 1e\\+15\\], got -1.0"),
        ([], {"challenge_noise": float("nan")}, "challenge_noise must be"),
        ([], {"n_players": 3, "q0": [1.0, 2.0]}, r"q0 must be one number or one per player \(3\)"),
        ([], {"n_players": 3, "outside_option": "a;b"}, "outside_option must be"),
        (["audit:k=0"], {"n_players": 3}, r"k must be an integer in \[1, 3\], got 0"),
        (["audit:budget=0.2,costs=0.5;1;2"], {"n_players": 3}, "budget must be at least the smallest audit cost"),
        (["audit:budget=2,costs=1;-1;2"], {"n_players": 3}, "costs"),
        (["audit:budget=2,costs=1;;2"], {"n_players": 3}, "costs must be a number or 'c1;c2;...'"),
    ],
)
def test_bad_input_names_the_parameter_and_its_range(mechanisms, config, pattern):
    with pytest.raises(ValueError, match=pattern):
        make(mechanisms, **config)


def test_the_monitor_under_random_challenges_keeps_its_false_alarm_level():
    """Under random challenges the monitor's welfare estimate is the challenged participants' mean challenge score
    and the GLS test reads the challenge scores of the challenge rounds only: on 400 honest runs (100 clients, 20
    rounds, ``pi = 0.3``) each statistical signal fires in at most ``alpha`` of them within 3 binomial standard
    errors, and it fires in every run where everybody games with ``u = 0.3``."""
    episodes, alpha = 400, 0.05
    env = make(["challenge_mixing:pi=0.3"], n_players=100, rounds=20)
    for u, bound in ((0.0, alpha + 3 * math.sqrt(alpha * (1 - alpha) / episodes)), (0.3, None)):
        monitor = game_monitor(env.unwrapped.game, env.protocol, batch=episodes)
        assert monitor.mixing == "random" and monitor.alpha == alpha
        for messages in play(env, episodes, np.full(100, u), seed=5):
            present, challenged = messages[..., 0] > 0, messages[..., COLUMN["challenged"]] > 0
            metric = env.protocol.payment_rules[0].paid_score(messages).mean(1)
            monitor.update(present, messages[..., 1], messages[..., 2], metric, challenged)
        for name in ("metric_welfare_gap", "gaming_detected"):
            rate = np.mean(monitor.first[name] > 0)
            assert rate <= bound if bound is not None else rate == 1.0


@pytest.mark.parametrize(
    "mechanisms",
    [[], ["challenge_mixing:pi=0.3", "audit:k=2,p_detect=0.8,S=1,policy=test"], ["bounded_attack:A=0.5,component=u"]],
    ids=["plain", "challenges+test-audits", "bounded"],
)
def test_the_best_response_view_passes_the_env_checkers(mechanisms):
    """Player 0's single-agent view (``train.best_response_env``) against honest and random others passes
    Gymnasium's and SB3's ``check_env``; the only warnings are the observation box's infinite bounds (the cost and
    the scores are unbounded) and the missing registry spec."""

    env = make(mechanisms, n_players=4, rounds=3)
    for others in ("honest", "random"):
        policies = {
            a: ConstantPolicy(np.array([1.0, 0.0])) if others == "honest" else RandomPolicy(env.action_space(a))
            for a in env.possible_agents[1:]
        }
        view = BestResponseEnv(env, "player_0", policies)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gym_check_env(view)
            sb3_check_env(view, warn=True)
        assert [str(w.message) for w in caught if not KNOWN_WARNINGS.search(str(w.message))] == []
