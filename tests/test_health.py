"""Numerical health (fedgames.envs.health): every game flags the first non-finite quantity and round of an
episode, ends it, and gives it rewards of 0; the evaluation tools leave such episodes out of their means."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fedgames
from fedgames.envs.health import QUANTITIES, Health, nonfinite_rows
from fedgames.envs.mean_estimation.game import MeanEstimationGame, World


def test_nonfinite_rows_numpy_and_torch():
    values = np.ones((4, 3, 2))
    values[1, 2, 0], values[3, 0, 1] = np.nan, -np.inf
    expected = [False, True, False, True]
    assert nonfinite_rows(values).tolist() == expected
    assert nonfinite_rows(torch.as_tensor(values, dtype=torch.float32)).tolist() == expected


def test_first_quantity_and_round_are_kept():
    health = Health.start(3)
    reward = np.array([[1.0], [np.inf], [np.nan]])
    loss = np.array([[1.0], [1.0], [np.nan]])
    assert health.check(2, loss=loss, payment=None, reward=reward).tolist() == [False, True, True]
    assert health.record(0) is None
    assert health.record(1) == {"quantity": "reward", "round": 2}
    assert health.record(2) == {"quantity": "loss", "round": 2}  # the first quantity in a round's order
    health.check(3, parameters=np.full((3, 1), np.nan))  # later rounds do not overwrite the first record
    assert health.record(1) == {"quantity": "reward", "round": 2}
    assert health.record(0) == {"quantity": "parameters", "round": 3}
    assert health.infos(1) == {"diverged": True, "divergence": {"quantity": "reward", "round": 2}}
    assert health.summary() == {
        "episodes": 3,
        "diverged": 3,
        "first_quantity": {"parameters": 1, "loss": 1, "reward": 1},
        "earliest_round": 2,
    }


def test_silence_concatenate_and_note():
    health = Health.start(2)
    assert health.note() is None and health.infos(0) == {"diverged": False}
    health.flag(1, "payment", np.array([False, True]))
    assert health.silence(np.array([[1.0, 2.0], [np.nan, 3.0]])).tolist() == [[1.0, 2.0], [0.0, 0.0]]
    both = Health.concatenate([health, Health.start(3)])
    assert both.size == 5 and both.count == 1 and both.record(1) == {"quantity": "payment", "round": 1}
    assert "1 of 5 episodes diverged" in both.note() and "payment in 1" in both.note()
    with pytest.raises(ValueError, match="quantity"):
        health.flag(1, "weather", np.array([True, True]))


def test_mean_estimation_overflowing_error_is_flagged():
    """Estimates near 1e200 are finite, their squared error overflows: the loss is the first quantity that went
    bad, the episode's rewards are 0, and a healthy episode in the same batch is untouched."""
    game = MeanEstimationGame(n_players=3, dim=1)
    xbar = np.array([[[0.1], [0.2], [0.4]], [[1e200], [1e200], [1e200]]])
    world = World(mu=np.zeros((2, 1)), xbar=xbar, sample_var=np.ones((2, 3)), sigma2=np.ones((2, 3)))
    actions = np.zeros((2, 3, 3))
    actions[0, :, 1] = 1.0  # beta = 1: each keeps its own sample mean, so the healthy rewards differ from 0
    outcome = game.play(game.protocol(), world, actions, np.random.default_rng(0))
    assert outcome.health.diverged.tolist() == [False, True]
    assert outcome.health.record(1) == {"quantity": "loss", "round": 1}
    assert np.all(outcome.rewards[1] == 0.0) and np.all(np.isfinite(outcome.rewards))
    assert np.all(outcome.rewards[0] != 0.0)


def fedsgd_run(**config):
    env = fedgames.make("fedsgd_v0", **config)
    env.reset(seed=0)
    steps = []
    while env.agents:
        steps.append(env.step({a: np.array([env.unwrapped.game.alpha_max], np.float32) for a in env.agents}))
    return steps


@pytest.mark.parametrize(
    ("config", "quantity"),
    [
        ({"objective": "quadratic", "lr_value": 1e6, "rounds": 5, "alpha_max": 10.0}, "loss"),
        ({"alpha_max": 1e30, "rounds": 3}, "loss"),  # the model's loss overflows a round before its parameters
        ({"alpha_max": 3e38, "rounds": 3}, "parameters"),
    ],
)
def test_fedsgd_reproductions_are_flagged(config, quantity):
    """Issue 17's reproductions: finite parameters with an overflowing float32 loss, and an alpha_max whose noise
    overflows the model. Both end the episode with ``diverged`` and the first quantity that went bad named; every
    reward returned is finite."""
    steps = fedsgd_run(**config)
    infos = steps[-1][4]
    for info in infos.values():
        assert info["diverged"] is True
        assert info["divergence"]["quantity"] == quantity
        assert info["divergence"]["round"] == len(steps)
    assert all(np.isfinite(r) for step in steps for r in step[1].values())
    assert not any(info["diverged"] for step in steps[:-1] for info in step[4].values())


DIVERGING = {"objective": "quadratic", "lr_value": 1e6, "rounds": 5, "n_players": 3}


def test_monte_carlo_counts_diverged_episodes_and_leaves_them_out():
    """Batched play of the diverging FedSGD run: every episode is counted as diverged, the returns stay finite,
    and the means over the (no) healthy episodes are NaN rather than a mean of silenced zeros."""
    from fedgames.agents import ConstantPolicy
    from fedgames.eval.montecarlo import simulate

    env = fedgames.make("fedsgd_v0", **DIVERGING)
    results = simulate(env, {a: ConstantPolicy([10.0]) for a in env.possible_agents}, 4, seed=0)
    assert results.diverged == 4 and not results.kept.any()
    assert results.health.summary()["first_quantity"] == {"loss": 4}
    assert np.all(np.isfinite(results.rewards))
    assert np.all(np.isnan(results.mean_and_se("rewards")[0]))
    healthy = simulate(
        fedgames.make("fedsgd_v0", rounds=2, n_players=3),
        {a: ConstantPolicy([0.0]) for a in env.possible_agents},
        4,
        seed=0,
    )
    assert healthy.diverged == 0 and np.all(np.isfinite(healthy.mean_and_se("rewards")[0]))


def test_nash_check_on_diverging_episodes_is_inconclusive_with_a_note():
    """Issue 17: ``fedgames check`` reported NashConv = nan with every player inconclusive and no note. Now the
    diverged pairs are counted and left out, and the report says so instead of printing NaN."""
    from fedgames.envs.contract import game_of
    from fedgames.eval.nash import nash_check
    from fedgames.train.oracles import GridOracle

    env = fedgames.make("fedsgd_v0", **DIVERGING)
    oracle = GridOracle(components=("alpha",), points=2, episodes=4, refine=False, lipschitz=None)
    with pytest.warns(UserWarning, match="episodes=4"):
        report = nash_check(env, game_of(env).honest_policies(env.protocol), oracle, players=["player_0"], episodes=4)
    player = report.players[0]
    assert player.verdict == "inconclusive" and report.verdict == "inconclusive"
    assert player.diverged == {"grid": 4}
    assert any("4 of 4 paired episodes diverged" in note for note in player.notes)
    text = report.to_markdown()
    assert "nan" not in text.lower() and "NashConv = n/a" in text


def test_participation_overflowing_payment_is_flagged():
    """A side payment ``C (y_i - M)^2`` with ``C = 1e300``: finite in float64 but past float32, the precision the
    players observe payments in. The episode ends at once, diverged through its payment in round 1, with rewards
    and observed payments of 0 (the observation inside its space, no overflow warning: warnings are errors here);
    the batch flags the same episodes."""
    from fedgames.envs.batch import episode_batch

    env = fedgames.make("participation_v0", rounds=3, mechanisms=[("side_payment", {"C": 1e300})])
    env.reset(seed=0)
    observations, rewards, terminations, _, infos = env.step({a: np.array([1.0, 0.0], np.float32) for a in env.agents})
    assert all(terminations.values()) and not env.agents
    assert all(info["divergence"] == {"quantity": "payment", "round": 1} for info in infos.values())
    assert all(r == 0.0 for r in rewards.values())
    assert all(
        env.observation_space(a).contains(o) and info["payment"] == 0.0
        for (a, o), info in zip(observations.items(), infos.values())
    )
    batch = episode_batch(env, 3, np.random.default_rng(0))
    batch.reset()
    step = batch.step(np.tile([1.0, 0.0], (3, len(env.possible_agents), 1)))
    assert step.health.count == 3 and np.all(step.rewards == 0.0) and np.all(step.payments == 0.0)


def test_training_view_counts_diverged_games():
    """The learners' batched view of the diverging FedSGD run: finite rewards, and every finished game counted
    as played and as diverged (what training reports)."""
    from fedgames.agents import ConstantPolicy
    from fedgames.train.best_response_env import BestResponseVecEnv

    env = fedgames.make("fedsgd_v0", **DIVERGING)
    others = {a: ConstantPolicy([10.0]) for a in env.possible_agents[1:]}
    vec = BestResponseVecEnv(env, "player_0", others, n_envs=3, seed=0)
    vec.reset()
    for _ in range(DIVERGING["rounds"]):
        vec.step_async(np.ones((3, 1)))
        _, rewards, dones, _ = vec.step_wait()
        assert np.all(np.isfinite(rewards))
    assert dones.all() and vec.games_played == 3 and vec.games_diverged == 3


def test_training_summary_leaves_diverged_episodes_out_and_says_so(tmp_path, monkeypatch, capsys):
    """What training records after each round, where half the evaluation episodes diverge: the strategy and reward
    means are exactly those of the other episodes (before, the diverged ones were averaged in as reward 0), each
    round records how many diverged and through what, and the console and training.json carry the note. Where all
    diverge (the FedSGD run above), every mean is NaN (``null`` in the JSON), never 0."""
    from fedgames.agents import ConstantPolicy, FixedPolicy
    from fedgames.cli import main
    from fedgames.eval.montecarlo import simulate
    from fedgames.train.summary import strategy_summary

    blow_up_sample_means(monkeypatch, every=2)
    env = fedgames.make("mean_estimation_v0", n_players=2, dim=1)
    policies = {"player_0": FixedPolicy(0.5, 0.2, [0.3]), "player_1": FixedPolicy(0.0, 0.0, [0.0])}
    players, divergence = strategy_summary(env, policies, episodes=64, seed=3)
    assert divergence == {"episodes": 64, "diverged": 32, "first_quantity": {"loss": 32}, "earliest_round": 1}
    episodes = simulate(env, policies, episodes=64, seed=3)  # the same episodes
    kept_means = episodes.mean_and_se("rewards")[0]
    assert [players[a]["reward"] for a in env.possible_agents] == kept_means.tolist()
    assert not np.allclose(kept_means, episodes.rewards.mean(axis=0))  # the silenced episodes are not averaged in
    assert players["player_0"]["alpha"] == 0.5 and players["player_0"]["bias_norm"] == pytest.approx(0.3)

    monkeypatch.undo()  # sample means of 1e200 are observed too: past float32, which no learner takes
    fedsgd = fedgames.make("fedsgd_v0", **DIVERGING)
    players, divergence = strategy_summary(fedsgd, {a: ConstantPolicy([10.0]) for a in fedsgd.possible_agents}, 4)
    assert divergence["diverged"] == 4 and all(np.isnan(list(p.values())).all() for p in players.values())

    config = [f"-e{k}={v}" for k, v in DIVERGING.items()]
    budget = ["--rounds", "1", "--steps", "16", "--n-envs", "4", "--eval-episodes", "8", "--quiet"]
    assert main(["train", "fedsgd_v0", *config, "--profile", "alpha=10", *budget, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    data = strict_json((tmp_path / "training.json").read_text())
    (record,) = data["history"]
    assert record["divergence"] == {"episodes": 8, "diverged": 8, "first_quantity": {"loss": 8}, "earliest_round": 4}
    assert all(p["reward"] is None and p["alpha"] is None for p in record["players"].values())
    note = "round 1: 8 of 8 episodes diverged (a non-finite value first: loss in 8; earliest in round 4)"
    assert data["notes"][0].startswith(note) and f"note: {note}" in printed
    assert "reward=n/a" in printed and "nan" not in printed


def blow_up_sample_means(monkeypatch, every: int) -> None:
    """Make every ``every``-th episode of each mean-estimation batch hold sample means of 1e200: finite, but their
    squared errors overflow (the loss diverges, the estimates stay finite), while the other episodes are untouched."""
    from fedgames.envs.mean_estimation.game import MeanEstimationGame

    draw = MeanEstimationGame.sample_world

    def sample_world(self, rng, batch):
        world = draw(self, rng, batch)
        world.xbar[::every] = 1e200
        return world

    monkeypatch.setattr(MeanEstimationGame, "sample_world", sample_world)


SIMULATE = [
    "simulate",
    "mean_estimation_v0",
    "-m",
    "side_payment:C=0.4,balanced=true",
    "-e",
    "n_players=3",
    "--episodes",
    "4000",
    "--no-plot",
    "--quiet",
]


def strict_json(text: str):
    def refuse(literal: str):
        raise ValueError(f"non-standard JSON literal {literal}")

    return json.loads(text, parse_constant=refuse)


def test_agreement_report_counts_diverged_episodes_and_leaves_them_out(tmp_path, monkeypatch, capsys):
    """``fedgames simulate`` where a quarter of the episodes diverge: the JSON and Markdown reports count them (the
    quantity that went bad first, the round) with a note, the means are those of the other 3,000 episodes exactly,
    they agree with the closed forms, and nothing prints NaN."""
    from fedgames.cli import main
    from fedgames.envs.contract import game_of
    from fedgames.eval.montecarlo import simulate

    blow_up_sample_means(monkeypatch, every=4)
    assert main([*SIMULATE, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    data = strict_json((tmp_path / "report.json").read_text())
    markdown = (tmp_path / "report.md").read_text()
    note = (
        "1000 of 4000 episodes diverged (a non-finite value first: loss in 1000; earliest in round 1) and are left "
        "out of the means"
    )
    assert data["diverged"] == 1000 and data["notes"] == [note]
    assert data["divergence"] == {
        "episodes": 4000,
        "diverged": 1000,
        "first_quantity": {"loss": 1000},
        "earliest_round": 1,
    }
    assert f"- note: {note}" in markdown and "(1000 of 4000 diverged episodes left out)" in markdown
    assert data["all_agree"] and "non_finite" not in data
    assert "nan" not in (markdown + printed).lower()
    env = fedgames.make("mean_estimation_v0", mechanisms=["side_payment:C=0.4,balanced=true"], n_players=3)
    played = simulate(env, game_of(env).honest_policies(env.protocol), 4000, seed=0)
    assert played.diverged == 1000 and played.kept.sum() == 3000
    rewards = played.rewards[played.kept].mean(axis=0)
    observed = [r["observed"] for r in data["rows"] if r["quantity"] == "reward"]
    np.testing.assert_allclose(observed, rewards, rtol=1e-12)


def test_agreement_report_without_healthy_episodes_gives_no_verdict(monkeypatch):
    """Every episode diverged: no quantity has an estimate; the verdict says so (no NaN, no "disagree"), the
    Markdown shows n/a, and the JSON is strict (the missing means are null, listed under non_finite)."""
    from fedgames.envs.mean_estimation import theory
    from fedgames.eval.agreement import compare_with_theory

    blow_up_sample_means(monkeypatch, every=1)
    env = fedgames.make("mean_estimation_v0", mechanisms=["side_payment:C=0.4,balanced=true"], n_players=3)
    report = compare_with_theory(env, theory.honest_profile(theory.Setting.from_env(env), 2), episodes=100)
    assert report.diverged == 100 and not any(r.estimated for r in report.rows) and not report.all_agree
    verdict = report.verdict()
    assert verdict.startswith("no verdict: 100 of 100 episodes diverged") and "nan" not in verdict.lower()
    assert (
        report.notes[1] == "no estimate of payment, reward, sq_error: fewer than 2 of the 100 episodes did not diverge"
    )
    markdown = report.to_markdown()
    assert "nan" not in markdown.lower() and "| n/a | n/a | n/a | n/a |" in markdown
    data = strict_json(report.to_json())
    assert data["diverged"] == 100 and all(r["observed"] is None and r["agrees"] is False for r in data["rows"])
    assert data["non_finite"]


PARTLY_DIVERGING = {"objective": "quadratic", "lr_value": 1e3, "rounds": 5, "lam": 0.5}
"""FedSGD on the quadratic where honest play stays finite (rewards near 1e32: the step size is far too large) and a
player's noise of alpha >= 5e4 makes most episodes' rewards overflow (at 1.5e5 and above, all of 200)."""


def test_grid_oracle_leaves_diverged_pairs_out_per_point_and_never_replies_from_nan():
    """Grid over alpha in {0, 5e4, 1e5} against honest play: each point's gain is the paired mean over the episodes
    that did not diverge (exactly, recomputed here), its diverged pairs are counted (the same count simulate gives),
    the reply is the best estimated point, and the result notes what was left out."""
    from fedgames.agents import ConstantPolicy
    from fedgames.eval.montecarlo import simulate
    from fedgames.train.oracles import GridOracle

    env = fedgames.make("fedsgd_v0", alpha_max=1e5, **PARTLY_DIVERGING)
    honest = {a: ConstantPolicy([0.0]) for a in env.possible_agents}
    oracle = GridOracle(components=("alpha",), points=3, episodes=200, refine=False, lipschitz=None)
    result = oracle.best_response(env, "player_0", honest, seed=3)
    candidate = simulate(env, honest, 200, seed=3)
    gains, counts = [], []
    for alpha in (0.0, 5e4, 1e5):
        played = simulate(env, honest | {"player_0": ConstantPolicy([alpha])}, 200, seed=3)
        kept = candidate.kept & played.kept
        counts.append(int((~kept).sum()))
        gains.append((played.rewards[kept, 0] - candidate.rewards[kept, 0]).mean())
    assert counts[0] == 0 and 100 < counts[1] < 200 and 100 < counts[2] < 200  # partly diverged, still estimated
    diverged = result.diverged
    assert (
        diverged["points"] == 3 and diverged["points_with_diverged"] == 2 and diverged["points_without_estimate"] == 0
    )
    assert diverged["pairs_left_out"] == sum(counts)
    assert [p["diverged"] for p in diverged["per_point"]] == counts[1:]
    assert [p["point"]["alpha"] for p in diverged["per_point"]] == [5e4, 1e5]
    best = int(np.argmax(gains))
    assert result.policy.action[0] == (0.0, 5e4, 1e5)[best]
    quantities: dict[str, int] = {}
    for alpha in (5e4, 1e5):  # the quantity each left-out pair went bad through first, the point's episode first
        played = simulate(env, honest | {"player_0": ConstantPolicy([alpha])}, 200, seed=3).health
        first = np.where(played.diverged, played.quantity, candidate.health.quantity)[
            ~(candidate.kept & ~played.diverged)
        ]
        for q in first:
            quantities[q] = quantities.get(q, 0) + 1
    assert diverged["first_quantity"] == quantities and sum(quantities.values()) == sum(counts)
    through = ", ".join(f"{q} in {quantities[q]}" for q in QUANTITIES if q in quantities)
    assert len(result.notes) == 1 and f"({sum(counts)} pairs in all; a non-finite value first" in result.notes[0]
    assert f": {through}; earliest in round {diverged['earliest_round']})" in result.notes[0]
    assert "at 2 of 3 points" in result.notes[0] and diverged["earliest_round"] >= 1


def test_grid_oracle_with_unestimated_points_gives_no_bound_and_the_check_says_why(tmp_path):
    """alpha in {0, 1.5e5, 3e5}: only alpha = 0 keeps an estimate, so it is the reply (the candidate's own play),
    and with a slope bound the cells of the diverged points are unbounded (no certificate: upper bound inf; a
    refining search says why it stopped). The Nash check is then inconclusive, and through the CLI it notes the
    grid's diverged points in the JSON and Markdown reports; neither prints a NaN."""
    from fedgames.agents import ConstantPolicy
    from fedgames.cli import main
    from fedgames.eval.nash import nash_check
    from fedgames.train.oracles import GridOracle

    env = fedgames.make("fedsgd_v0", alpha_max=3e5, **PARTLY_DIVERGING)
    honest = {a: ConstantPolicy([0.0]) for a in env.possible_agents}
    first = GridOracle(components=("alpha",), points=3, episodes=200, lipschitz={"alpha": 1.0}, refine=False)
    result = first.best_response(env, "player_0", honest, seed=0)
    assert result.policy.action.tolist() == [0.0]
    assert result.diverged["points_without_estimate"] == 2 and result.upper_bound == np.inf
    assert [c.estimated for c in result.cells] == [True, False, False]
    assert "2 point(s) have no estimate" in result.notes[1]
    bounded = GridOracle(components=("alpha",), points=3, episodes=200, lipschitz={"alpha": 1.0}, max_points=5)
    # with lam = 1 every gain is exactly 0 (one shared model): no point refutes, and the search halves alpha = 0's
    # cell, never the unestimated ones, until its budget is spent
    level = fedgames.make("fedsgd_v0", alpha_max=3e5, **(PARTLY_DIVERGING | {"lam": 1.0}))
    result = bounded.best_response(level, "player_0", honest, seed=0)
    assert result.search["stopped"] == "cells without an estimate left (their paired episodes diverged): no bound"
    assert result.upper_bound == np.inf and result.search["points_evaluated"] == 5
    reply = float(result.policy.action[0])
    assert all(p["estimated"] for p in result.diverged["per_point"] if p["point"]["alpha"] == reply)
    assert sum(not c.estimated for c in result.cells) == 2
    report = nash_check(level, honest, bounded, players=["player_0"], episodes=200)
    (check,) = report.players
    assert check.verdict == "inconclusive" and check.upper_bound == np.inf  # no certificate over the class
    text = report.to_markdown()
    assert "| none (diverged cells) |" in text and "no estimate: 200 of its paired episodes diverged" in text
    assert "nan" not in text.lower()
    args = ["check", "fedsgd_v0", "-e", "objective=quadratic", "-e", "lr_value=1000", "-e", "rounds=5"]
    args += ["-e", "alpha_max=3e5", "--oracle", "grid", "--grid-points", "3", "--grid-episodes", "200"]
    args += ["--episodes", "200", "--players", "symmetric", "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    out = tmp_path
    data = strict_json((out / "report.json").read_text())
    markdown = (out / "report.md").read_text()
    (player,) = data["players"]
    assert player["regret"] == 0.0 and player["learned"]["alpha"] == 0.0  # all gains 0 (lam = 1): the first point
    assert player["upper_bound"] is None  # fedsgd_v0 has no closed form: the CLI's grid has no slope bound
    assert any("grid: 2 point(s) have no estimate" in note for note in player["notes"])
    assert "grid: 2 point(s) have no estimate" in markdown and "nan" not in markdown.lower()


def test_learned_oracle_values_its_seeds_on_the_healthy_episodes():
    """A seed's validation value is its mean return over the episodes that did not diverge (not a mean with the
    silenced zeros), and ``-inf`` when none is left, so a diverging seed is never kept over one with a value."""
    from fedgames.agents import ConstantPolicy
    from fedgames.eval.montecarlo import simulate
    from fedgames.train.oracles import _player_value

    env = fedgames.make("fedsgd_v0", alpha_max=1e5, **PARTLY_DIVERGING)
    policies = {a: ConstantPolicy([0.0]) for a in env.possible_agents} | {"player_1": ConstantPolicy([5e4])}
    played = simulate(env, policies, 200, seed=1, batch_size=64)
    assert 0 < played.diverged < 198
    value = _player_value(env, policies, "player_1", 200, seed=1, batch_size=64)
    assert value == pytest.approx(played.rewards[played.kept, 1].mean(), rel=1e-12)
    assert value != pytest.approx(played.rewards[:, 1].mean(), rel=1e-6)
    everything = fedgames.make("fedsgd_v0", objective="quadratic", lr_value=1e6, rounds=5)
    constant = {a: ConstantPolicy([10.0]) for a in everything.possible_agents}
    assert _player_value(everything, constant, "player_0", 4, seed=0, batch_size=4) == -np.inf


def test_b3_console_summary_prints_no_nan():
    """``fedgames reproduce honesty-b3``'s console lines where every honest run and a curve's point diverged: n/a
    instead of NaN, the best alpha_A among the points with a mean, the notes."""
    from fedgames.cli import b3_summary

    results = {
        "clean_accuracy": {"mean": np.nan, "se": None, "chance": 1 / 62},
        "diverged_runs": 4,
        "notes": ["4 of 10 runs diverged"],
        "curves": [{"group": "A", "alpha_B": 0.0, "C": 0.5, "alpha": [0.0, 1.0, 2.0], "reward_mean": [0.1, None, 0.3]}],
    }
    assert b3_summary(results, "tiny") == [
        "honesty-b3 (tiny): clean test accuracy n/a ± n/a (chance 0.016); 4 diverged runs",
        "  note: 4 of 10 runs diverged",
        "  group A, alpha_B=0, C=0.5: reward 0.100 n/a 0.300  (best alpha_A = 2)",
    ]
    results["curves"][0]["reward_mean"] = [np.nan] * 3
    assert b3_summary(results, "tiny")[-1].endswith("reward n/a n/a n/a  (best alpha_A = n/a)")


def b3_records(out, scale, n_clients, diverged):
    """Run records of the B.3 reproduction for every setting and seed of ``scale`` in ``out / "runs"`` (made-up
    numbers: test loss ``1 + alpha_A / 10 + alpha_B / 100 + seed / 1000``, payments by client), those in
    ``diverged`` marked as the game marks a diverged run (non-finite loss and payments written as null)."""
    from fedgames.eval.honesty_b3 import _run_name, settings
    from fedgames.files import json_text

    (out / "runs").mkdir(parents=True)
    for a, b in settings(scale):
        for s in range(scale.runs):
            bad = (a, b, s) in diverged
            record = {
                "alpha_A": a,
                "alpha_B": b,
                "seed": s,
                "diverged": bad,
                "test_loss": np.nan if bad else 1 + a / 10 + b / 100 + s / 1000,
                "test_accuracy": np.nan if bad else 0.5 + s / 100,
                "payment": [np.nan if bad else (k - 2.5) * (a + b + 1) / 100 for k in range(n_clients)],
            }
            (out / "runs" / _run_name(a, b, s)).write_text(json_text(record))


def test_b3_reproduction_leaves_diverged_runs_out_with_a_note(tmp_path):
    """[H] B.3's summary over run records of which some diverged: each point's mean is over its other runs (by
    hand), its runs and diverged count them, a point with no run left has no mean (null in strict JSON) and is
    named in a note, the clean accuracy and honest penalties leave the diverged honest run out, and the console
    summary prints no NaN and picks the best alpha_A among the points with a mean."""
    from fedgames.cli import b3_summary
    from fedgames.eval.honesty_b3 import Scale, summarize

    scale = Scale(
        writers=6, mean_samples=4, sample_sigma=0.35, rounds=3, runs=3, alphas=(0.0, 2.0, 4.0), penalties=(0.0, 1e-3)
    )
    in_a = np.array([True, True, False, False, False, False])
    diverged = {(0.0, 0.0, 1), (2.0, 0.0, 0), (4.0, 0.0, 0), (4.0, 0.0, 1), (4.0, 0.0, 2)}
    b3_records(tmp_path, scale, len(in_a), diverged)
    results = summarize(tmp_path, scale, in_a, seed=0, data_dir=None)
    assert results["diverged_runs"] == 5
    (curve,) = [c for c in results["curves"] if c["group"] == "A" and c["alpha_B"] == 0.0 and c["C"] == 1e-3]
    assert curve["runs"] == [2, 2, 0] and curve["diverged"] == [1, 1, 3]

    def reward(a, s):  # group A's mean of f(theta_T) - C p^i, by hand
        return np.mean([1 + a / 10 + s / 1000 - 1e-3 * (k - 2.5) * (a + 1) / 100 for k in (0, 1)])

    assert curve["reward_mean"][0] == pytest.approx(np.mean([reward(0.0, 0), reward(0.0, 2)]), rel=1e-12)
    assert curve["reward_mean"][1] == pytest.approx(np.mean([reward(2.0, 1), reward(2.0, 2)]), rel=1e-12)
    assert np.isnan(curve["reward_mean"][2])
    assert results["clean_accuracy"]["runs"] == 2
    assert results["clean_accuracy"]["mean"] == pytest.approx(np.mean([0.5, 0.52]), rel=1e-12)
    notes = results["notes"]
    assert notes[0].startswith("5 of ") and "the clean accuracy and the honest penalties (1 honest runs)" in notes[0]
    assert "group A, alpha_B=0, C=0.001: alpha=4" in notes[1] and "group A, alpha_B=0, C=0: alpha=4" in notes[1]
    data = strict_json((tmp_path / "results.json").read_text())
    assert data["notes"] == notes and data["curves"][0]["reward_mean"][2] is None
    assert "diverged" in (tmp_path / "curves.csv").read_text().splitlines()[0]
    lines = b3_summary(data, "micro")
    assert not any("nan" in line.lower() for line in lines)
    assert lines[1] == f"  note: {notes[0]}"
    (shown,) = [line for line in lines if line.startswith("  group A, alpha_B=0, C=0.001")]
    assert shown.endswith(" n/a  (best alpha_A = 2)")  # alpha_A = 4 has no mean; 2 gains over 0
