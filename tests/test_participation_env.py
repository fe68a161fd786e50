"""``participation_v0`` (SPEC §3): the PettingZoo contract, its mechanisms, and the mean-field theory against
simulation (the retention map, the domino threshold, the gain from gaming)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test
from pettingzoo.utils.conversions import parallel_to_aec

import fedgames
from fedgames.agents import ConstantPolicy, MyopicParticipant
from fedgames.cli import main
from fedgames.envs.batch import episode_batch
from fedgames.envs.participation import game, theory
from fedgames.eval.domino import DOMINO_CONFIG
from fedgames.eval.gaming_design import reproduce as reproduce_gaming_design
from fedgames.eval.montecarlo import simulate
from fedgames.eval.nash import nash_check
from fedgames.train.multi_agent import train_independent
from fedgames.train.oracles import LearnedOracle

STACKS = [
    [],
    ["challenge_mixing:pi=0.5"],
    ["audit:k=2,p_detect=0.8,S=1"],
    ["bounded_attack:A=0.5,component=u", "challenge_mixing:pi=0.3", "audit:k=1,S=2"],
    ["robust_aggregation:rule=median", "side_payment:C=0.5,balanced=true", "audit:k=2,policy=risk"],
    ["audit:k=2,p_detect=0.8,S=1,policy=test"],
    ["audit:budget=2,costs=1;0.5;1;2,p_detect=0.8,S=1"],
    ["challenge_mixing:pi=0.3", "audit:budget=2.5,costs=1;0.5;1;2,p_detect=0.8,S=1,policy=risk"],
    ["challenge_mixing:pi=0.3,mixing=expected", "audit:budget=1.5,costs=0.5,S=1,policy=test"],
]


def make(mechanisms=(), **config):
    return fedgames.make("participation_v0", mechanisms=list(mechanisms), **config)


@pytest.mark.parametrize("stack", STACKS, ids=lambda s: "+".join(s) or "plain")
def test_pettingzoo_api(stack):
    parallel_api_test(make(stack, n_players=4, rounds=5), num_cycles=12)
    api_test(parallel_to_aec(make(stack, n_players=4, rounds=5)), num_cycles=12)
    parallel_seed_test(lambda: make(stack, n_players=4, rounds=5))


def _same(a, b):
    """Equal, NaN equal to NaN (a metric with nobody taking part), for numbers, arrays and nested infos."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (float, np.floating, np.ndarray)):
        return np.array_equal(a, b, equal_nan=True)
    return a == b


@pytest.mark.parametrize("stack", STACKS, ids=lambda s: "+".join(s) or "plain")
def test_a_seed_fixes_every_round_of_an_episode(stack):
    """Same seed, same actions: every round's observations, rewards, terminations and infos (audits, catches,
    sanctions, challenges, the monitor) are identical, in the PettingZoo env and in batched episodes; another
    seed changes them."""
    actions = np.random.default_rng(11).random((6, 4, 2)).astype(np.float32)
    actions[:, :, 1] *= make(stack, n_players=4).protocol.action_high[1]  # within a bounded_attack's cap

    def episode(seed):
        env = make(stack, n_players=4, rounds=6)
        played = [env.reset(seed=seed)]
        for t in range(6):
            played.append(env.step({a: actions[t, i] for i, a in enumerate(env.possible_agents)}))
        return played

    first, again = episode(3), episode(3)
    assert _same(first, again)
    assert not _same([step[1] for step in first[1:]], [step[1] for step in episode(4)[1:]])  # the rewards

    def batched(seed):
        env = make(stack, n_players=4, rounds=6)
        batch = episode_batch(env, 5, np.random.default_rng(seed))
        played = [batch.reset()]
        for t in range(6):
            step = batch.step(np.broadcast_to(actions[t], (5, 4, 2)))
            played.append([step.observations, step.rewards, step.payments, *vars(step.outcome).values()])
        return played

    assert _same(batched(3), batched(3))
    assert not _same(batched(3)[1][1], batched(4)[1][1])


def test_an_episode_lasts_the_rounds_and_reports_what_happened():
    env = make(["audit:k=1,S=1"], n_players=3, rounds=4)
    env.reset(seed=0)
    steps = 0
    while env.agents:
        actions = {a: np.array([1.0 if a != "player_2" else 0.0, 0.5], dtype=np.float32) for a in env.agents}
        _, rewards, terminations, _, infos = env.step(actions)
        steps += 1
    assert steps == 4 and all(terminations.values())
    assert infos["player_2"]["participated"] is False and rewards["player_2"] == 0.0  # the outside option
    assert infos["player_0"]["participation"] == pytest.approx(2 / 3)
    assert infos["player_0"]["payment"] in (
        pytest.approx(-0.5 * infos["player_0"]["paid_score"]),
        pytest.approx(1.0 - 0.5 * infos["player_0"]["paid_score"]),
    )


def test_without_rejoin_an_exit_is_for_good():
    env = make(n_players=3, rounds=3, rejoin=False)
    obs, _ = env.reset(seed=1)
    env.step({a: np.array([0.0 if a == "player_0" else 1.0, 0.0], dtype=np.float32) for a in env.agents})
    obs, _, _, _, infos = env.step({a: np.array([1.0, 0.0], dtype=np.float32) for a in env.agents})
    assert infos["player_0"]["participated"] is False and obs["player_0"][3] == 1.0  # exited
    assert infos["player_1"]["participated"] is True


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("noisy_response:C=0.5", "no server response"),
        ("robust_aggregation:rule=krum,f=1", "any number of participants, 1 to 10; with 1"),
        ("robust_aggregation:rule=trimmed_mean,f=2", "any number of participants, 1 to 10; with 1"),
        ("audit:k=1,policy=riks", "audit: audit policy must be one of .*did you mean 'risk'"),
    ],
)
def test_mechanisms_the_game_cannot_play_are_refused(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        make([spec])


def test_participation_mechanisms_need_a_score_payment():
    for spec in ("challenge_mixing:pi=0.5", "audit:k=1"):
        with pytest.raises(ValueError, match="pay on a score"):
            fedgames.make("mean_estimation_v0", mechanisms=[spec])


def test_bounded_attack_caps_the_manipulation():
    env = make(["bounded_attack:A=0.5,component=u"], n_players=2)
    env.reset(seed=0)
    assert env.action_space("player_0").high[1] == 0.5
    with pytest.raises(ValueError, match=r"u=0\.8 is outside"):
        env.step({a: np.array([1.0, 0.8], dtype=np.float32) for a in env.agents})


def test_one_round_of_myopic_clients_follows_the_retention_map():
    """``E x_1 = G(x_0)``: each of N clients with a cost drawn from ``max(0, N(c_mean, c_std))`` takes part when the
    value at the observed ``x_0`` covers it; 4 standard errors over 300 episodes, at several ``x_0``."""
    for x0 in (0.3, 0.6, 0.9):
        env = make(n_players=50, rounds=1, initial_participation=x0, **DOMINO_CONFIG)
        setting = env.unwrapped.game.setting(env.protocol)
        batch = episode_batch(env, 300, np.random.default_rng(int(10 * x0)))
        observations = batch.reset()
        actions = MyopicParticipant(env).act(observations, np.random.default_rng(0))
        x1 = batch.step(actions).outcome.present.mean(1)
        se = x1.std(ddof=1) / math.sqrt(x1.size)
        assert abs(x1.mean() - theory.retention_map(x0, setting)) < 4 * se


def test_the_retention_map_averages_over_clients_who_differ():
    """Clients with their own quality and outside option: ``E x_1 = G(x_0)`` with ``G`` the mean over the clients
    of their chances to take part (4 standard errors over 2000 episodes), which the representative client's map
    (the mean ``q0`` and ``o``) misses by many."""
    rng = np.random.default_rng(3)
    q0, outside = rng.uniform(0.5, 2.5, 40).round(3), rng.uniform(-0.3, 0.6, 40).round(3)
    env = make(n_players=40, rounds=1, initial_participation=0.5, q0=q0.tolist(), outside_option=outside.tolist())
    setting = env.unwrapped.game.setting(env.protocol)
    batch = episode_batch(env, 2000, np.random.default_rng(4))
    observations = batch.reset()
    policies = [MyopicParticipant(env, player=agent) for agent in env.possible_agents]
    actions = np.stack([policy.act(observations[:, i], None) for i, policy in enumerate(policies)], axis=1)
    x1 = batch.step(actions).outcome.present.mean(1)
    se = x1.std(ddof=1) / math.sqrt(x1.size)
    assert abs(x1.mean() - theory.retention_map(0.5, setting)) < 4 * se
    representative = replace(setting, client_q0=(), client_outside_option=())
    assert abs(x1.mean() - theory.retention_map(0.5, representative)) > 10 * se


@pytest.mark.parametrize("sanction_factor", [0.0, 0.5, 1.5])
def test_the_gain_from_gaming_is_the_closed_form(sanction_factor):
    """Player 0 games (``u = 1``) or not, everyone else honest and present, on common random numbers: the mean
    paired difference of its round reward is :func:`theory.gaming_gain` within 4 standard errors (to rounding
    without a sanction: the scores' noise cancels in the pairs), and its sign flips at the minimum sanction."""
    base = make(["challenge_mixing:pi=0.3", "audit:k=2,p_detect=0.6,S=1"], n_players=6, rounds=1)
    setting = base.unwrapped.game.setting(base.protocol)
    s_min = theory.minimum_sanction(setting, 6, setting.q0)
    assert s_min > 0
    S = sanction_factor * s_min
    env = make(["challenge_mixing:pi=0.3", f"audit:k=2,p_detect=0.6,S={S}"], n_players=6, rounds=1)
    honest = {a: ConstantPolicy(np.array([1.0, 0.0])) for a in env.possible_agents}
    gaming = {**honest, "player_0": ConstantPolicy(np.array([1.0, 1.0]))}
    rewards = [simulate(env, policies, 200_000, seed=3).rewards[:, 0] for policies in (gaming, honest)]
    diffs = rewards[0] - rewards[1]
    expected = theory.gaming_gain(replace(setting, sanction=S), 6, setting.q0)
    rounding = 1e-12  # without audits the difference is the same in every episode: no sampling error
    assert abs(diffs.mean() - expected) < 4 * diffs.std(ddof=1) / math.sqrt(diffs.size) + rounding
    assert np.sign(expected) == (1 if sanction_factor < 1 else -1)


def test_cli_check_refutes_honesty_by_the_gain_from_gaming(tmp_path):
    """Without audits honesty is no equilibrium: the grid's best reply games every round, and its regret is the
    closed form's gain per round times the rounds (no sampling error: the scores' noise cancels in the pairs)."""
    assert (
        main(
            [
                "check",
                "participation_v0",
                "--profile",
                "honest",
                "--oracle",
                "grid",
                "--quick",
                "--quiet",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "report.json").read_text())
    player = data["players"][0]
    env = make()
    setting = env.unwrapped.game.setting(env.protocol)
    assert player["verdict"] == data["verdict"] == "refuted"
    assert player["learned"]["u"] == 1.0 and player["learned"]["participate"] >= 0.5
    assert player["regret"] == pytest.approx(env.unwrapped.rounds * theory.gaming_gain(setting, 10, setting.q0))


@pytest.mark.parametrize("profile, factor", [("honest", 0.0), ("honest", 0.5), ("honest", 2.0), ("theory", 0.0)])
def test_cli_check_under_audits_follows_the_minimum_sanction(tmp_path, profile, factor):
    """``fedgames check participation_v0 -m audit:k=1,p_detect=0.5,S=.. --profile honest|theory --oracle grid``
    with the sanction ``factor`` times the minimum deterrent one: without it and at half of it honesty is refuted
    (the grid's reply games every round, its regret 3 x ``gaming_gain`` within the interval), at twice it honesty
    is consistent (the grid's reply is honest too). ``--profile theory`` is the manipulation that is a best reply to
    itself (:func:`theory.symmetric_manipulation`: full gaming without a sanction, honesty at twice the minimum,
    where it is the honest profile), and the check finds it consistent."""
    plain = make(["audit:k=1,p_detect=0.5,S=0"], n_players=4, rounds=3)
    setting = theory.Setting.from_env(plain)
    S = factor * theory.minimum_sanction(setting, 4, setting.q0)
    spec = f"audit:k=1,p_detect=0.5,S={S}"
    args = ["check", "participation_v0", "-m", spec, "-e", "n_players=4", "-e", "rounds=3", "--profile", profile]
    args += ["--oracle", "grid", "--grid-points", "5", "--grid-episodes", "4000", "--episodes", "20000"]
    assert main(args + ["--quiet", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    player = report["players"][0]
    deterred = replace(setting, sanction=S)
    predicted = theory.symmetric_manipulation(deterred)
    assert predicted == (0.0 if factor > 1 else 1.0)
    assert player["candidate"]["u"] == (predicted if profile == "theory" else 0.0)
    assert player["learned"]["u"] == predicted  # the best reply to either profile
    if profile == "honest" and factor < 1:
        assert report["verdict"] == "refuted"
        low, high = player["ci"]  # one point without a sanction: the scores' noise cancels in the pairs
        assert low - 1e-12 <= 3 * theory.gaming_gain(deterred, 4, setting.q0) <= high + 1e-12
    else:
        assert report["verdict"] == "consistent"


def test_the_grid_finds_the_interior_reply_a_side_payment_leaves(tmp_path):
    """Under a side payment on the score deviation the best reply to honesty is interior: the grid check's reply
    plays the ``u`` of :func:`theory.best_manipulation` (to the grid's spacing, 1/40) and its regret is the closed
    form's gain there (4 standard errors from the paired interval), so honesty is refuted by that much and no
    more."""
    assert (
        main(
            [
                "check",
                "participation_v0",
                "-m",
                "side_payment:C=1.0",
                "-e",
                "rounds=1",
                "-e",
                "n_players=6",
                "--profile",
                "honest",
                "--oracle",
                "grid",
                "--grid-points",
                "21",
                "--grid-episodes",
                "4000",
                "--episodes",
                "20000",
                "--quiet",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    player = json.loads((tmp_path / "report.json").read_text())["players"][0]
    env = make(["side_payment:C=1.0"], n_players=6, rounds=1)
    setting = env.unwrapped.game.setting(env.protocol)
    u = theory.best_manipulation(setting, 6, setting.q0)
    assert 0.5 < u < 0.8 and abs(player["learned"]["u"] - u) <= 1 / 40
    low, high = player["ci"]
    se = (high - low) / (2 * 1.96)
    assert player["verdict"] == "refuted"
    assert abs(player["regret"] - theory.gaming_gain(setting, 6, setting.q0, u)) < 4 * se


def test_the_theory_profile_under_a_side_payment_is_full_gaming_and_no_reply_beats_it(tmp_path):
    """``--profile theory`` is the manipulation that is a best reply to itself: under a side payment with a
    positive slope, everybody gaming fully (the charge bites on deviations only). The grid finds no better reply:
    its reply games fully too, and the regret's interval holds 0."""
    assert (
        main(
            [
                "check",
                "participation_v0",
                "-m",
                "side_payment:C=1.0",
                "-e",
                "rounds=1",
                "-e",
                "n_players=6",
                "--profile",
                "theory",
                "--oracle",
                "grid",
                "--grid-points",
                "11",
                "--grid-episodes",
                "2000",
                "--episodes",
                "20000",
                "--quiet",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "report.json").read_text())
    player = report["players"][0]
    assert player["candidate"]["u"] == 1.0 and player["learned"]["u"] == 1.0
    assert player["ci"][0] <= 0.0 <= player["ci"][1]


@pytest.mark.parametrize("factor", [0.0, 0.5, 2.0])
def test_a_learned_reply_games_exactly_when_the_slope_says_so(factor):
    """PPO as player 0 (through the best-response view) against honest participants (3 rounds, 20k steps), with
    one uniform audit a round and the sanction ``factor`` times the minimum deterrent one: below it (no sanction,
    half of it) it learns to game every round (u = 1), and its regret is the best reply's, 3 x ``gaming_gain``:
    no more beyond sampling and at least 90% of it (half as large at half the minimum sanction, where the
    slope is halved); at twice the minimum sanction it stays honest and the check does not refute honesty."""
    plain = make(["audit:k=1,p_detect=0.5,S=0"], n_players=4, rounds=3)
    setting = theory.Setting.from_env(plain)
    s_min = theory.minimum_sanction(setting, 4, setting.q0)
    env = make([f"audit:k=1,p_detect=0.5,S={factor * s_min}"], n_players=4, rounds=3)
    honest = {a: ConstantPolicy(np.array([1.0, 0.0])) for a in env.possible_agents}
    oracle = LearnedOracle("ppo", timesteps=20_000, seeds=1, n_envs=256, validation_episodes=2000)
    check = nash_check(env, honest, oracle, players=["player_0"], episodes=2000).players[0]
    best = 3 * theory.gaming_gain(theory.Setting.from_env(env), 4, setting.q0)  # game every round
    if factor > 1:
        assert best < 0 and check.learned["u"] < 0.1 and check.verdict != "refuted"
    else:
        assert check.learned["u"] > 0.9 and check.verdict == "refuted"
        assert check.ci[0] <= best  # no reply beats the best one (beyond sampling)
        assert check.regret >= 0.9 * best  # and 20k steps nearly reach it


@pytest.mark.parametrize("permanent", [False, True])
def test_reproduce_domino(tmp_path, permanent):
    """``fedgames reproduce domino``: every run of 2000 myopic clients ends where the mean-field path does (5
    binomial standard errors): with rejoining at the stable state on its side of the threshold; with permanent
    exits below the threshold at 0 too, but above it stuck at ``G(x_0)``, short of the high state."""
    args = ["reproduce", "domino", "--out", str(tmp_path), "--quiet"] + (["--permanent-exit"] if permanent else [])
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [s["stable"] for s in results["steady_states"]] == [True, False, True]
    high = results["steady_states"][-1]["x"]
    n = results["config"]["n_players"]
    for run in results["runs"]:
        target = run["predicted"]
        assert abs(run["final"] - target) <= 5 * math.sqrt(max(target * (1 - target), 1 / n) / n)
        if run["start"] < results["threshold"]:
            assert target < 1e-3
        elif run["start"] < 0.9:
            assert (target < high - 0.05) if permanent else (target == pytest.approx(high))
    assert {r["start"] > results["threshold"] for r in results["runs"]} == {True, False}
    assert (tmp_path / "retention_map.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "paths.csv").read_text().startswith("start,round,participation")


def test_the_value_of_taking_part_is_the_closed_form():
    """``participation_value(x, u)`` against the env: 6 of 10 clients take part with ``u = 0.5`` under audits and
    challenge mixing; a participant's reward plus its cost averages ``phi Q(x qbar) + w ybar - E[sanction]``
    (4 standard errors over 40,000 episodes; the sanction's expectation ``(k/|P|) p_detect u S`` included)."""
    env = make(["challenge_mixing:pi=0.3", "audit:k=2,p_detect=0.6,S=1.5"], n_players=10, rounds=1)
    setting = env.unwrapped.game.setting(env.protocol)
    batch = episode_batch(env, 40_000, np.random.default_rng(8))
    observations = batch.reset()
    actions = np.zeros(observations.shape[:2] + (2,))
    actions[:, :6] = [1.0, 0.5]
    step = batch.step(actions)
    value = (step.rewards[:, :6] + observations[:, :6, 1]).mean(1)  # per episode: its participants' mean
    expected = theory.participation_value(0.6, setting, 0.5)
    assert abs(value.mean() - expected) < 4 * value.std(ddof=1) / math.sqrt(value.size)
    assert np.all(step.rewards[:, 6:] == 0.0)  # the others get their outside option


def test_myopic_clients_use_their_own_quality_and_outside_option():
    env = make(n_players=3, q0=[1.0, 2.0, 1.0], outside_option=[0.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="differ in q0 or outside_option"):
        MyopicParticipant(env)
    game = env.unwrapped.game
    observations = episode_batch(env, 500, np.random.default_rng(1)).reset()
    mean_quality = np.mean(game.q0)
    for i, agent in enumerate(env.possible_agents):
        decided = MyopicParticipant(env, player=agent).act(observations[:, i], None)[:, 0]
        value = game.phi * theory.welfare(1.0 * mean_quality, game.curve) + game.w * game.q0[i]
        np.testing.assert_array_equal(decided, (value - observations[:, i, 1] >= game.outside_option[i]).astype(float))


def test_independent_learners_all_game_where_the_slope_is_positive():
    """Every player learning at once (2 rounds of 3000 episodes each): without audits the slope is positive at any
    participation, and every learner ends up gaming (``u`` near 1) while taking part."""
    env = make(n_players=3, rounds=3)
    setting = env.unwrapped.game.setting(env.protocol)
    assert theory.gaming_slope(setting, 3, setting.q0 * (1 - setting.gamma)) > 0
    result = train_independent(env, rounds=2, steps_per_round=3000, n_envs=64, eval_episodes=256, seed=0)
    for player in result.history[-1].players.values():
        assert player["u"] > 0.9 and player["participate"] > 0.9
    assert result.plotted_components() == ["participate", "u"]


def test_global_state_holds_every_clients_cost_and_the_round():
    env = make(["audit:k=1,S=1"], n_players=3, rounds=2)
    obs, _ = env.reset(seed=2)
    state = env.state()
    assert env.state_space.contains(state) and state.shape == (3 + 3 * 3,)
    np.testing.assert_array_equal(state[1:4], [obs[a][1] for a in env.possible_agents])  # the private costs
    env.step({a: np.array([0.0 if a == "player_1" else 1.0, 0.0], dtype=np.float32) for a in env.agents})
    state = env.state()
    assert state[0] == 0.5 and list(state[4:7]) == [1.0, 0.0, 1.0] and state[-2] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "spec",
    [
        "robust_aggregation:rule=median",
        "robust_aggregation:rule=trimmed_mean,fraction=0.2",
        "robust_aggregation:rule=geometric_median",
        None,
    ],
)
def test_the_metric_aggregates_the_participants_paid_scores_alone(spec):
    """The reported metric is the rule over the participants' paid scores ([G] Prop. 9.3), however many take part:
    episodes are grouped by their number of participants, and each group's result is the rule on that episode's
    participants."""
    env = make([spec] if spec else [], n_players=7, rounds=1)
    rule = env.protocol.aggregate
    rng = np.random.default_rng(5)
    present = rng.random((400, 7)) < rng.uniform(0.1, 1.0, (400, 1))
    values = rng.standard_normal((400, 7, 1))
    batched = game.participants_aggregate(rule, values, present)
    for b in range(400):
        expected = rule(values[b : b + 1, present[b]], None)[0] if present[b].any() else np.full(1, np.nan)
        np.testing.assert_allclose(batched[b], expected, rtol=1e-9, equal_nan=True)
    env.reset(seed=2)
    actions = {a: np.array([float(i % 3 != 0), 0.3 * i / 7], dtype=np.float32) for i, a in enumerate(env.agents)}
    _, _, _, _, infos = env.step(actions)
    paid = np.array([[infos[a]["paid_score"] for a in env.possible_agents if infos[a]["participated"]]])
    assert infos["player_0"]["metric"] == pytest.approx(float(rule(paid[..., None], None)[0, 0]), rel=1e-12)


def test_balanced_side_payments_on_scores_sum_to_zero_among_the_participants():
    """Only participants pay, and the balanced rule redistributes among them: the side payments sum to zero in
    every round, and the absent neither pay nor receive."""
    with_side = make(["side_payment:C=0.7,balanced=true"], n_players=6, rounds=1)
    without = make(n_players=6, rounds=1)
    rng = np.random.default_rng(1)
    actions = np.stack([rng.random((500, 6)) < 0.6, rng.random((500, 6))], axis=-1).astype(float)
    steps = [episode_batch(env, 500, np.random.default_rng(4)) for env in (with_side, without)]
    for batch in steps:
        batch.reset()
    side = steps[0].step(actions).payments - steps[1].step(actions).payments
    present = actions[..., 0] >= 0.5
    assert np.all(side[~present] == 0.0)
    np.testing.assert_allclose(side.sum(1), 0.0, atol=1e-12)
    assert np.abs(side[present.sum(1) >= 2]).max() > 0.01  # it charges something


@pytest.mark.parametrize(
    "mechanisms, u",
    [
        (["side_payment:C=0.6"], 1.0),
        (["side_payment:C=0.6,balanced=true"], 0.5),
        (["challenge_mixing:pi=0.2,mixing=expected", "audit:k=2,p_detect=0.7,S=0.8,policy=risk"], 1.0),
        (["challenge_mixing:pi=0.3", "side_payment:C=0.6"], 0.7),
        (["challenge_mixing:pi=0.3", "side_payment:C=0.6,balanced=true"], 1.0),
        (["audit:k=2,p_detect=0.7,S=0.8,policy=risk", "side_payment:C=0.4,balanced=true"], 0.3),
    ],
)
def test_the_gain_from_gaming_under_nonlinear_mechanisms_is_the_closed_form(mechanisms, u):
    """Side payments on the score deviation and risk-targeted audits make the reward nonlinear in ``u``: player 0
    plays ``u``, everyone else is honest and present, on common random numbers, and the mean paired difference of
    its round reward is :func:`theory.gaming_gain` at that ``u`` within 4 standard errors (under random challenges
    the paid score's variance grows with ``u``, by ``pi (1 - pi) delta^2 u^2``, and so does the charge)."""
    env = make(mechanisms, n_players=6, rounds=1)
    setting = env.unwrapped.game.setting(env.protocol)
    honest = {a: ConstantPolicy(np.array([1.0, 0.0])) for a in env.possible_agents}
    gaming = {**honest, "player_0": ConstantPolicy(np.array([1.0, u]))}
    rewards = [simulate(env, policies, 200_000, seed=8).rewards[:, 0] for policies in (gaming, honest)]
    diffs = rewards[0] - rewards[1]
    expected = theory.gaming_gain(setting, 6, setting.q0, u)
    assert abs(diffs.mean() - expected) < 4 * diffs.std(ddof=1) / math.sqrt(diffs.size)


@pytest.mark.parametrize("u", [0.0, 0.15, 0.4, 1.0])
def test_risk_targeted_audits_find_a_lone_gamer_as_the_closed_form_says(u):
    """Risk-targeted audits pick the largest gaps between public and challenge scores: a lone gamer among 6 is
    audited as often as :func:`theory.audit_probability` says (``k / |P|`` when it is honest), within 4 standard
    errors."""
    env = make(["audit:k=2,p_detect=1,S=1,policy=risk"], n_players=6, rounds=1)
    batch = episode_batch(env, 100_000, np.random.default_rng(6))
    batch.reset()
    actions = np.zeros((100_000, 6, 2))
    actions[..., 0] = 1.0
    actions[:, 0, 1] = u
    audited = env.protocol.payment_rules[-1].audited(batch.step(actions).outcome.messages)[:, 0]
    expected = theory.audit_probability(env.unwrapped.game.setting(env.protocol), 6, u)
    assert abs(audited.mean() - expected) < 4 * math.sqrt(expected * (1 - expected) / audited.size)
    if u == 0.0:
        assert expected == pytest.approx(2 / 6)


def test_reproduce_gaming_design(tmp_path):
    """[G] Thm 9.2 / 9.4 in the env: on a grid of challenge mixing and sanctions, a lone gamer's simulated gain is
    :func:`theory.gaming_gain` and the simulated price of gaming of myopic best-replying clients is the mean-field
    paths' (4 standard errors each; exactly 0 where nobody games). At ``pi = 0.2, S = 2`` the mean-field path
    cycles (gamers leave until the audits deter the rest, who then come back and game again), and the simulation
    follows the cycle. Both fall with ``pi`` and ``S``, to 0 once ``(1 - pi) delta <= gamma q0`` (``pi >= 0.5``)."""
    results = reproduce_gaming_design(
        tmp_path, pis=(0.0, 0.2, 0.6), sanctions=(0.0, 2.0), gain_episodes=500, welfare_episodes=8
    )
    points = {(p["pi"], p["S"]): p for p in results["points"]}
    for p in points.values():
        assert abs(p["gain_sim"] - p["gain"]) <= 4 * p["gain_se"] + 1e-12
        assert abs(p["PoG_sim"] - p["PoG"]) <= 4 * p["PoG_se"] + 1e-12
        assert (p["PoG"] > 0) == (p["gaming_rounds"] > 0) == (p["Mi"] > 0)
    assert 0 < points[(0.2, 2.0)]["gaming_rounds"] < 1 and points[(0.2, 2.0)]["PoG_se"] > 0
    for S in (0.0, 2.0):
        assert points[(0.0, S)]["Mi"] > points[(0.2, S)]["Mi"] > points[(0.6, S)]["Mi"] == 0.0
        assert points[(0.6, S)]["PoG"] == points[(0.6, S)]["PoG_sim"] == 0.0
    assert points[(0.0, 2.0)]["Mi"] < points[(0.0, 0.0)]["Mi"]
    assert {f.name for f in tmp_path.iterdir()} == {"results.json", "design.csv", "design.png"}
    assert json.loads((tmp_path / "results.json").read_text())["points"] == results["points"]


def test_myopic_best_repliers_follow_the_mean_field_path():
    """``MyopicParticipant(env, "best")`` chooses ``u`` as :func:`theory.mean_field_path` does, from the welfare and
    participation it observes: full gaming where it pays, honesty where the sanction deters, and (``pi = 0.2``,
    ``S = 2``) gaming until enough gamers have left for the audits to deter the rest."""
    for pi, S, rounds in ((0.0, 0.0, 4), (0.0, 8.0, 4), (0.2, 2.0, 8)):
        env = make(
            [f"challenge_mixing:pi={pi}", f"audit:k=200,p_detect=0.5,S={S}"],
            n_players=2000,
            rounds=rounds,
            c_mean=0.9,
            c_std=0.3,
        )
        setting = env.unwrapped.game.setting(env.protocol)
        batch = episode_batch(env, 2, np.random.default_rng(0))
        observations, policy = batch.reset(), MyopicParticipant(env, "best")
        played = []
        for _ in range(rounds):
            actions = policy.act(observations, None)
            assert np.all(actions[..., 1] == actions[0, 0, 1])
            played.append(actions[0, 0, 1])
            observations = batch.step(actions).observations
        assert played == theory.mean_field_path(setting, 1.0, rounds).u.tolist()
        assert set(played) == ({1.0} if S == 0 else {0.0} if S == 8 else {0.0, 1.0})


def test_a_best_replier_remembers_the_round_before_however_it_is_called():
    """Under a side payment the best reply depends on what the others played last round (they creep up by
    ``g / (2 kappa C b^2)`` a round). One policy acting for every client at once, one per client, or one shared
    policy called for each client in turn (twice, as ``predict`` after ``act`` would) choose the same ``u``, the
    mean-field path's."""
    env = make(["side_payment:C=10.0"], n_players=6, rounds=3, c_mean=0.2)
    path = theory.mean_field_path(env.unwrapped.game.setting(env.protocol), 1.0, 3).u
    assert np.all(np.diff(path) > 0) and path[0] > 0
    for mode in ("joint", "own", "shared"):
        batch = episode_batch(env, 3, np.random.default_rng(0))
        observations = batch.reset()
        shared = MyopicParticipant(env, "best")
        own = [MyopicParticipant(env, "best") for _ in env.possible_agents]
        for t in range(3):
            if mode == "joint":
                actions = shared.act(observations, None)
            else:
                policies = own if mode == "own" else [shared] * 6
                for _ in range(1 if mode == "own" else 2):
                    actions = np.stack([policy.act(observations[:, i], None) for i, policy in enumerate(policies)], 1)
            np.testing.assert_allclose(actions[..., 1], path[t])
            observations = batch.step(actions).observations
    with pytest.raises(ValueError, match="u must be a number in \\[0, 1\\] or 'best'"):
        MyopicParticipant(env, "bestt")


def test_risk_audits_break_ties_at_random_whatever_the_qualities():
    """Without score noise every client gaming alike has the same gap ``delta u``; however its quality rounded the
    gap, each client is audited with chance ``k / |P|`` (4 standard errors over 20,000 episodes)."""
    env = make(
        ["audit:k=1,p_detect=1,S=1,policy=risk"],
        n_players=6,
        rounds=1,
        score_noise=0.0,
        challenge_noise=0.0,
        q0=[0.7, 1.3, 0.9, 1.1, 2.0, 0.55],
    )
    batch = episode_batch(env, 20_000, np.random.default_rng(0))
    batch.reset()
    actions = np.stack([np.ones((20_000, 6)), np.full((20_000, 6), 0.3)], axis=-1)
    audited = env.protocol.payment_rules[-1].audited(batch.step(actions).outcome.messages).mean(0)
    assert np.all(np.abs(audited - 1 / 6) < 4 * math.sqrt((1 / 6) * (5 / 6) / 20_000))


def _budget_round(mechanism, n=8, episodes=300, seed=0):
    """One round of ``n`` clients, a random half gaming at random intensities: the messages and the audit rule."""
    env = make([mechanism], n_players=n, rounds=1)
    batch = episode_batch(env, episodes, np.random.default_rng(seed))
    batch.reset()
    rng = np.random.default_rng(seed + 1)
    actions = np.stack(
        [rng.random((episodes, n)) < 0.8, rng.random((episodes, n)) * (rng.random((episodes, n)) < 0.5)], axis=-1
    ).astype(float)
    return batch.step(actions).outcome.messages, env.protocol.payment_rules[-1]


def test_budgeted_audits_stay_within_the_budget_and_cover_at_least_half_the_most_risk():
    """Audits within a budget ([G] Prop. 11.2, §E.11): they never cost more than the budget nor audit an absent
    client; by risk, the covered risk ``sum max(s_i - h_i, 0)`` is at least half the best subset's (brute force over
    all 256 subsets of 8 clients), and with equal costs it is the best; uniformly with unit costs it is the plain
    ``k`` audits."""
    costs = [1.0, 2.5, 0.7, 1.8, 1.2, 3.0, 0.5, 2.2]
    spec = "audit:budget=3.5,policy=risk,costs=" + ";".join(map(str, costs))
    messages, rule = _budget_round(spec)
    audited = rule.audited(messages)
    present = messages[..., 0] > 0
    risk = np.maximum(np.round(messages[..., 1] - messages[..., 2], 12), 0.0)
    assert not (audited & ~present).any() and np.all((audited * costs).sum(1) <= 3.5 + 1e-9)
    subsets = np.array([[(s >> i) & 1 for i in range(8)] for s in range(256)], dtype=bool)
    affordable = subsets[(subsets * costs).sum(1) <= 3.5]
    best = np.max((risk * present) @ affordable.T, axis=1)
    covered = (risk * audited).sum(1)
    assert np.all(covered >= best / 2 - 1e-12) and np.all(covered <= best + 1e-12)
    assert (covered < best - 1e-9).any()  # the greedy is not always the best with unequal costs
    # where the best ratio crowds out a far larger risk, the single client of highest risk is kept instead
    crafted = np.zeros((1, 2, len(game.MESSAGE_FIELDS)))
    crafted[0, :, 0], crafted[0, :, 1] = 1.0, [1.0, 9.9]  # gaps 1 (cost 1) and 9.9 (cost 10)
    crafted[0, :, game.MESSAGE_FIELDS.index("challenged")] = 1.0
    lone = game.AuditSanction(2, 1.0, 1.0, "risk", budget=10.0, costs=(1.0, 10.0))
    np.testing.assert_array_equal(lone.audited(crafted), [[False, True]])
    messages, rule = _budget_round("audit:budget=3,policy=risk")
    risk = np.maximum(np.round(messages[..., 1] - messages[..., 2], 12), 0.0) * (messages[..., 0] > 0)
    top3 = np.sort(risk, axis=1)[:, -3:].sum(1)
    np.testing.assert_allclose((risk * rule.audited(messages)).sum(1), top3)
    messages, rule = _budget_round("audit:budget=3")
    k_audits = make(["audit:k=3"], n_players=8).protocol.payment_rules[-1]
    np.testing.assert_array_equal(rule.audited(messages), k_audits.audited(messages))


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("audit:costs=2", "give budget too"),
        ("audit:budget=2,costs=1;x", "costs must be a number or 'c1;c2;...'"),
        ("audit:budget=0", "budget must be a finite number > 0"),
    ],
)
def test_bad_budgeted_audits_are_refused(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        make([spec])
    env = make(["audit:budget=2,costs=1;2;1;2;1;2;1;2;1;2"])
    assert make([env.spec()]).spec() == env.spec() == "audit:budget=2.0,costs=1;2;1;2;1;2;1;2;1;2"
    with pytest.raises(ValueError, match="not audits within a budget"):
        env.unwrapped.game.setting(env.protocol)


SCALE_FIELDS = ("phi", "w", "delta", "q0", "c_std", "score_noise", "challenge_noise", "kappa", "z0")
"""The participation game's scale parameters bounded above by SCALE_MAX (``c_mean`` and ``outside_option`` on
both sides): larger values overflowed its float32 observations (issue 17)."""


@pytest.mark.parametrize("field", SCALE_FIELDS + ("c_mean", "outside_option"))
def test_scale_parameters_beyond_scale_max_are_refused_by_name(field):
    from fedgames.envs.config import SCALE_MAX

    low = "-1e\\+15" if field in ("c_mean", "outside_option") else "0"
    for value in (1e300, 2 * SCALE_MAX) + ((-1e300,) if low != "0" else ()):
        with pytest.raises(ValueError, match=rf"^{field} must be a finite number in [\[(]{low}, 1e\+15\], got"):
            fedgames.make("participation_v0", rounds=3, **{field: value})


@pytest.mark.parametrize("field", ["score_noise", "challenge_noise"])
def test_noise_levels_below_scale_min_are_refused_by_name(field):
    with pytest.raises(ValueError, match=rf"^{field} must be 0 \(noiseless\) or in \[1e-15, 1e\+15\], got 1e-300"):
        fedgames.make("participation_v0", rounds=3, **{field: 1e-300})


@pytest.mark.parametrize("welfare", ["exponential", "s_shaped"])
@pytest.mark.parametrize("sign", [1, -1])
def test_every_scale_parameter_at_scale_max_plays_finite_without_a_warning(welfare, sign):
    """At the bound itself, every scale parameter at once (costs and outside options at either sign, the S-shaped
    curve with a step-like ``h``), under audits, challenge mixing and a side payment: observations inside their
    float32 space and rewards finite, with no RuntimeWarning (warnings are errors here) and no divergence."""
    import warnings

    from fedgames.envs.config import SCALE_MAX as M

    config = dict(rounds=3, phi=M, w=M, delta=M, q0=M, c_std=M, score_noise=M, challenge_noise=M, kappa=M, z0=M)
    config |= dict(c_mean=sign * M, outside_option=-sign * M, welfare=welfare, h=1e300)
    mechanisms = [("audit", {"k": 2, "S": 10.0}), ("challenge_mixing", {"pi": 0.5}), ("side_payment", {"C": 2.0})]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = fedgames.make("participation_v0", mechanisms=mechanisms, **config)
        observations, _ = env.reset(seed=0)
        env.action_space("player_0").seed(0)
        played = 0
        while env.agents:
            for agent, obs in observations.items():
                assert env.observation_space(agent).contains(obs), (agent, obs)
            actions = {a: env.action_space(a).sample() for a in env.agents}
            observations, rewards, _, _, infos = env.step(actions)
            played += 1
            assert all(np.isfinite(r) for r in rewards.values()), rewards
            assert not any(info["diverged"] for info in infos.values())
    assert played == 3
