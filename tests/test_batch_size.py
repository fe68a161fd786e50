"""``batch_size``, the episodes the Monte Carlo tools play at once, end to end: the env's default (65,536 for a
one-round game; from the model's size for ``fedsgd_v0``), play in batches of at most ``batch_size`` in
``simulate``, ``summarize_policy``, the oracles, ``nash_check``, ``compare_with_theory``, ``fedgames check`` and
``fedgames simulate``, results reproducible by seed and batch size and equal to one batch's when the batch covers
every episode, common random numbers kept in the Nash check, and bad values (below 1, beyond the memory budget)
refused before any work with an error naming ``batch_size``.

A spy on the env's batch constructor records the size of every batch played. ~10 s on one core.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace

import numpy as np
import pytest

import fedgames
from fedgames.agents import ConstantPolicy, RandomPolicy, profile_policies
from fedgames.cli import _n_envs, main
from fedgames.envs.batch import BATCH_SIZE, learner_games, resolve_batch_size
from fedgames.envs.contract import game_of
from fedgames.envs.fedsgd.fedsgd import MESSAGE_ENTRIES, FedSGDEnv
from fedgames.envs.mean_estimation import theory
from fedgames.eval.agreement import Row, compare_with_theory, rounding_floors
from fedgames.eval.montecarlo import simulate
from fedgames.eval.nash import nash_check
from fedgames.eval.strategy import summarize_policy
from fedgames.memory import size_text
from fedgames.train import oracles
from fedgames.train.multi_agent import strategy_summary, train_independent
from fedgames.train.oracles import GridOracle, LearnedOracle, OracleResult

N = 4
FEDSGD = dict(
    objective="quadratic",
    n_players=N,
    rounds=3,
    lr="decaying",
    eta=100.0,
    radius=3.0,
    weighting="uniform",
    noise_norm="global",
    alpha_max=10.0,
    lam=0.5,
    samples_per_client=5,
)
PENALTY = "side_payment:C=4.0,balanced=true"
PLAYER = "player_0"


def fedsgd(mechanisms=(), **overrides):
    return fedgames.make("fedsgd_v0", mechanisms=list(mechanisms), **(FEDSGD | overrides))


def mean_estimation(mechanisms=()):
    return fedgames.make("mean_estimation_v0", mechanisms=list(mechanisms), n_players=3, dim=2, bias_max=0.0)


def honest(env):
    return {agent: ConstantPolicy([0.0]) for agent in env.possible_agents}


def with_random_player(env):
    """The honest profile with ``PLAYER`` acting at random (so every episode's draws matter)."""
    policies = profile_policies(theory.honest_profile(theory.Setting.from_env(env), 2), env.possible_agents)
    return policies | {PLAYER: RandomPolicy(env.action_space(PLAYER))}


def spy_batch_sizes(monkeypatch, owner) -> list[int]:
    """Record the size of every episode batch a ``fedsgd_v0`` env makes (``owner``: one env, or the class)."""
    sizes: list[int] = []
    make = owner.episode_batch

    def recording(*args):
        sizes.append(args[-2])
        return make(*args)

    monkeypatch.setattr(owner, "episode_batch", recording)
    return sizes


class Echo:
    """An oracle that replies with the candidate's own policy and remembers the ``batch_size`` it was given."""

    def __init__(self) -> None:
        self.batch_sizes: list[int | None] = []

    def best_response(self, env, player, policies, seed=0, batch_size=None):
        self.batch_sizes.append(batch_size)
        return OracleResult(policies[player], oracle="echo", proves="lower bound", budget={})


# ---------------------------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------------------------


def test_default_batch_size_comes_from_the_env():
    """One-round games keep 65,536; ``fedsgd_v0`` bounds a round's messages: 3 runs of the FEMNIST CNN (6.6M
    parameters, 3 clients), all 65,536 on the 2-parameter quadratic; a given ``batch_size`` wins."""
    assert resolve_batch_size(mean_estimation(), None) == BATCH_SIZE == 65_536
    assert resolve_batch_size(fedsgd([PENALTY]), None) == BATCH_SIZE  # through the mechanism wrapper
    cnn = fedsgd(objective="cnn", n_players=3, lr="constant", samples_per_client=2, device="cpu")
    parameters = sum(p.numel() for p in cnn.unwrapped.game.like.values())
    assert resolve_batch_size(cnn, None) == MESSAGE_ENTRIES // (3 * parameters) == 3
    assert resolve_batch_size(cnn, 7) == 7


def test_cli_learners_default_to_no_more_games_than_the_env_batch():
    """``--n-envs`` unset: 1024 one-round games, 256 multi-round ones, but only 3 FEMNIST CNN games at once."""
    unset = argparse.Namespace(n_envs=None)
    cnn = fedsgd(objective="cnn", n_players=3, lr="constant", samples_per_client=2, device="cpu")
    assert [_n_envs(unset, env) for env in (mean_estimation(), fedsgd(), cnn)] == [1024, 256, 3]
    assert _n_envs(argparse.Namespace(n_envs=64), cnn) == 64


def test_python_learners_default_to_no_more_games_than_the_env_batch():
    """The Python trainers' and the learned oracle's defaults (1024 games, 512 for parameter sharing) are capped the
    same way; given values win; bad ones are errors naming the parameter."""
    cnn = fedsgd(objective="cnn", n_players=3, lr="constant", samples_per_client=2, device="cpu")
    assert [learner_games(env, None, 1024) for env in (mean_estimation(), fedsgd(), cnn)] == [1024, 1024, 3]
    assert learner_games(cnn, 8, 1024) == 8
    assert [LearnedOracle("ppo").games(env) for env in (fedsgd(), cnn)] == [1024, 3]
    assert LearnedOracle("ppo", n_envs=16).games(cnn) == 16
    with pytest.raises(ValueError, match=r"n_games must be an integer >= 1, got 0"):
        learner_games(cnn, 0, 512, "n_games")
    with pytest.raises(ValueError, match="n_envs"):
        train_independent(mean_estimation(), rounds=1, steps_per_round=8, n_envs=-1)


def test_simulate_plays_the_default_batches(monkeypatch):
    """Without a ``batch_size`` the env's default bounds every batch (here made 3 runs of the quadratic)."""
    env = fedsgd()
    monkeypatch.setattr("fedgames.envs.fedsgd.fedsgd.MESSAGE_ENTRIES", 3 * N * 2)
    sizes = spy_batch_sizes(monkeypatch, env.unwrapped)
    assert simulate(env, honest(env), 8).rewards.shape == (8, N)
    assert sizes == [3, 3, 2]


# ---------------------------------------------------------------------------------------------------------------
# Play in batches: simulate, summarize_policy, compare_with_theory
# ---------------------------------------------------------------------------------------------------------------


def test_simulate_in_batches_is_reproducible_and_draws_fresh_episodes(monkeypatch):
    env = fedsgd([PENALTY])
    policies = honest(env) | {PLAYER: ConstantPolicy([2.0])}
    sizes = spy_batch_sizes(monkeypatch, env.unwrapped)
    chunked = simulate(env, policies, 10, seed=5, batch_size=4)
    assert sizes == [4, 4, 2]
    assert chunked.rewards.shape == chunked.payments.shape == (10, N)
    assert not np.array_equal(chunked.rewards[:4], chunked.rewards[4:8])  # each batch its own episodes
    np.testing.assert_array_equal(chunked.rewards, simulate(env, policies, 10, seed=5, batch_size=4).rewards)
    whole = simulate(env, policies, 10, seed=5, batch_size=10)
    np.testing.assert_array_equal(whole.rewards, simulate(env, policies, 10, seed=5).rewards)  # one batch each
    assert sizes[3:] == [4, 4, 2, 10, 10]


def test_simulate_in_small_batches_has_the_same_distribution():
    env = mean_estimation(["side_payment:C=0.4,balanced=true"])
    policies = with_random_player(env)
    small = simulate(env, policies, 20_000, seed=1, batch_size=1_000)
    large = simulate(env, policies, 20_000, seed=1)
    for field in ("rewards", "sq_error", "payments"):
        (m_small, se_small), (m_large, se_large) = small.mean_and_se(field), large.mean_and_se(field)
        assert np.all(np.abs(m_small - m_large) < 4 * np.hypot(se_small, se_large)), field


def test_summarize_policy_honours_episodes_in_batches(monkeypatch):
    """Multi-round: ``episodes`` episodes in batches of ``batch_size``, reproducible; one batch covering them all
    gives the default's (one-batch) summary."""
    env = fedsgd()
    policy = RandomPolicy(env.action_space(PLAYER))
    sizes = spy_batch_sizes(monkeypatch, env.unwrapped)
    chunked = summarize_policy(env, PLAYER, policy, episodes=10, seed=2, profile=honest(env), batch_size=4)
    assert sizes == [4, 4, 2]
    assert set(chunked) == {"alpha", "alpha_last"} and 0.0 < chunked["alpha"] < 10.0
    assert chunked == summarize_policy(env, PLAYER, policy, episodes=10, seed=2, profile=honest(env), batch_size=4)
    assert summarize_policy(
        env, PLAYER, policy, episodes=10, seed=2, profile=honest(env), batch_size=64
    ) == summarize_policy(env, PLAYER, policy, episodes=10, seed=2, profile=honest(env))


def test_training_strategy_summary_plays_in_batches(monkeypatch):
    """The trainers' per-checkpoint summary: ``episodes`` in batches of ``batch_size``, reproducible; one batch
    covering them all gives the default's."""
    env = fedsgd()
    policies = {agent: RandomPolicy(env.action_space(agent)) for agent in env.possible_agents}
    sizes = spy_batch_sizes(monkeypatch, env.unwrapped)
    chunked = strategy_summary(env, policies, episodes=10, seed=2, batch_size=4)
    assert sizes == [4, 4, 2] and set(chunked[0]) == set(env.possible_agents) and chunked[1] is None
    assert chunked == strategy_summary(env, policies, episodes=10, seed=2, batch_size=4)
    assert strategy_summary(env, policies, episodes=10, seed=2, batch_size=64) == strategy_summary(
        env, policies, episodes=10, seed=2
    )


def test_summarize_policy_in_small_batches_has_the_same_distribution():
    """One-round: 20,000 uniform alphas in [0, 5] in batches of 1,000 have the mean of one batch's, within 4 SE."""
    env = mean_estimation()
    policy = RandomPolicy(env.action_space(PLAYER))
    small = summarize_policy(env, PLAYER, policy, episodes=20_000, seed=3, batch_size=1_000)
    large = summarize_policy(env, PLAYER, policy, episodes=20_000, seed=3)
    se = 5.0 / np.sqrt(12 * 20_000)
    assert abs(small["alpha"] - large["alpha"]) < 4 * np.sqrt(2) * se


def test_compare_with_theory_in_batches_agrees_and_records_the_batch_size():
    env = mean_estimation(["side_payment:C=0.4,balanced=true"])
    profile = theory.honest_profile(theory.Setting.from_env(env), 2)
    report = compare_with_theory(env, profile, episodes=20_000, seed=0, batch_size=5_000)
    assert report.batch_size == 5_000 and report.to_dict()["batch_size"] == 5_000
    assert "20000 episodes (5000 at a time)" in report.to_markdown()
    assert report.all_agree


def test_agreement_states_its_resolution_and_misses_nothing_twice_as_large():
    """The report's resolution r (4 SE relative to the prediction, the worst row) shrinks as 1/sqrt(episodes), and
    closed forms off by 2r are caught in every row (|z| about 8)."""
    env = mean_estimation(["side_payment:C=0.4,balanced=true"])
    profile = theory.honest_profile(theory.Setting.from_env(env), 2)
    small, large = (compare_with_theory(env, profile, episodes=n, seed=1) for n in (2_000, 32_000))
    assert large.resolution == pytest.approx(small.resolution / 4, rel=0.1)
    # a prediction that is zero up to rounding (balanced payments at honesty) has no relative error to miss
    rounding_zero = Row("player_0", "payment", 3e-18, 1e-4, 2e-3)
    assert replace(small, rows=small.rows + [rounding_zero]).resolution == small.resolution
    assert f"less than {small.resolution:.2%}" in small.verdict() and small.verdict() in small.to_markdown()
    wrong = replace(small, rows=[replace(r, predicted=r.predicted * (1 + 2 * small.resolution)) for r in small.rows])
    assert not any(r.agrees for r in wrong.rows if r.predicted != 0)
    assert wrong.verdict().startswith("SOME closed forms disagree")


def test_agreement_at_a_zero_prediction_is_stated_in_absolute_terms():
    """Issue 17: the quick-start's balanced payments and rewards are predicted 0 (-1.4e-17 by rounding); the verdict
    gives them an absolute resolution, 4 SE of the worst such row, and no relative one (it used to print
    7365836678464353.00%)."""
    env = fedgames.make("mean_estimation_v0", mechanisms=["side_payment:C=0.4,balanced=true"], n_players=4)
    setting = theory.Setting.from_env(env)
    profile, _ = theory.predicted_equilibrium(setting, 2, 5.0)
    report = compare_with_theory(env, profile, episodes=20_000, seed=0)
    zeros = [r for r in report.rows if r.quantity in ("payment", "reward")]
    assert zeros and all(abs(r.predicted) < 1e-12 for r in zeros)
    assert report.absolute_resolution == max(4 * r.standard_error for r in zeros)
    assert report.resolution == max(4 * r.standard_error / r.predicted for r in report.rows if r not in zeros)
    assert report.resolution < 0.05
    verdict = report.verdict()
    assert f"one predicting 0 (payment, reward) off by less than {report.absolute_resolution:.2g}" in verdict
    assert f"less than {report.resolution:.2%} of its value" in verdict
    assert json.loads(report.to_json())["absolute_resolution"] == report.absolute_resolution


def test_a_prediction_that_is_zero_up_to_rounding_agrees_within_the_rounding():
    """Issue 17: ``fedgames simulate mean_estimation_v0 -e n_players=1000`` said "SOME closed forms disagree": the
    honest rewards are predicted -5.4e-20 (terms of 3.5e-4 that cancel) and observed within a few 1e-22 of 0, z
    about 200 because the episodes' rewards cancel as exactly. A prediction that is 0 up to rounding (1e-9 of the
    largest prediction) agrees within that much; a real gap beyond it, or any gap at a nonzero prediction, is still
    judged by z."""
    env = fedgames.make("mean_estimation_v0", n_players=1000, dim=1)
    profile = theory.honest_profile(theory.Setting.from_env(env), 1)
    report = compare_with_theory(env, profile, episodes=2_000, seed=0)
    rewards = [r for r in report.rows if r.quantity == "reward"]
    largest = max(abs(r.predicted) for r in report.rows)
    assert all(r.rounding == 1e-9 * largest and abs(r.predicted) < 1e-18 for r in rewards)
    assert any(abs(r.z) >= 4 for r in rewards) and all(r.agrees and r.within_rounding for r in rewards)
    assert report.all_agree and "one predicting 0 (reward) off by less than" in report.verdict()
    assert "yes (0 up to rounding)" in report.to_markdown()
    assert all(r.rounding == 0 for r in report.rows if r.quantity == "sq_error")
    off = replace(rewards[0], observed=rewards[0].predicted + 2 * rewards[0].rounding)
    assert not off.agrees and not replace(report, rows=[*report.rows, off]).all_agree
    tiny = Row("player_0", "sq_error", 1e-3, 1e-3 + 1e-15, 1e-17)  # a nonzero prediction: no rounding floor
    assert rounding_floors([tiny]) == [tiny] and not tiny.agrees


# ---------------------------------------------------------------------------------------------------------------
# The Nash check and its oracles
# ---------------------------------------------------------------------------------------------------------------


def test_nash_check_batches_every_simulation_and_keeps_common_random_numbers(monkeypatch):
    """The reply is the candidate: with candidate and reply on the same episodes, batch by batch, every paired
    difference is exactly 0. The oracle receives the batch size, and no batch of the check exceeds it (the
    strategy summaries included: as many episodes as the estimates, as they are fewer than 4096)."""
    env = fedsgd([PENALTY])
    sizes = spy_batch_sizes(monkeypatch, env.unwrapped)
    echo = Echo()
    report = nash_check(env, honest(env), echo, players=[PLAYER], episodes=40, batch_size=16)
    assert echo.batch_sizes == [16]
    # baseline, reply; candidate's, reply's summary (an absolute tolerance: no separate reward-scale episodes)
    assert max(sizes) == 16 and sum(sizes) == 4 * 40
    (check,) = report.players
    assert check.regret == 0.0 and check.ci == [0.0, 0.0] and check.verdict == "consistent"
    assert report.batch_size == 16 and "16 episodes at a time" in report.to_markdown()


def test_grid_check_in_small_batches_reaches_the_one_batch_verdict(monkeypatch):
    """Honesty under a balanced penalty (C = 4 > Thm 6.1's threshold): in batches of 16 as in one batch, the grid's
    best constant alpha is 0 and the regret exactly 0 (the reply is the candidate, on common random numbers)."""
    env = fedsgd([PENALTY])
    grid = GridOracle(components=("alpha",), points=3, episodes=48, lipschitz=None)
    sizes = spy_batch_sizes(monkeypatch, env.unwrapped)
    reports, largest = [], []
    for batch_size in (16, None):
        sizes.clear()
        reports.append(nash_check(env, honest(env), grid, players="symmetric", episodes=48, batch_size=batch_size))
        largest.append(max(sizes))
    assert largest == [16, 48]  # by default one batch per simulation
    for report in reports:
        (check,) = report.players
        assert check.verdict == "consistent" and check.regret == 0.0 and check.learned["alpha"] == 0.0
    assert [r.batch_size for r in reports] == [16, BATCH_SIZE]


def test_learned_oracle_validates_in_batches(monkeypatch):
    """A learned reply's validation episodes are simulated ``batch_size`` at a time."""
    env = fedsgd()
    oracle = LearnedOracle("ppo", timesteps=48, seeds=1, n_envs=8, validation_episodes=20)
    sizes = spy_batch_sizes(monkeypatch, env.unwrapped)
    oracle.best_response(env, PLAYER, honest(env), batch_size=6)
    assert set(sizes[:-4]) == {8} and sizes[-4:] == [6, 6, 6, 2]  # training's n_envs games, then validation


def test_cli_check_batch_size(tmp_path, monkeypatch):
    sizes = spy_batch_sizes(monkeypatch, FedSGDEnv)
    args = [
        "check",
        "fedsgd_v0",
        "-e",
        "n_players=4",
        "-e",
        "rounds=3",
        "-e",
        "lr=decaying",
        "-e",
        "eta=100",
        "-e",
        "radius=3",
        "-e",
        "lam=0.5",
        "-e",
        "samples_per_client=5",
        "-m",
        PENALTY,
        "--profile",
        "honest",
        "--oracle",
        "grid",
        "--grid-points",
        "3",
        "--grid-episodes",
        "24",
        "--episodes",
        "24",
        "--players",
        "symmetric",
        "--batch-size",
        "10",
        "--quiet",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["batch_size"] == 10 and "10 at a time" in data["method"]
    assert data["players"][0]["verdict"] == "consistent"
    assert max(sizes) == 10 and sizes.count(4) >= 2  # 24 episodes = 10 + 10 + 4


SIMULATE = [
    "simulate",
    "mean_estimation_v0",
    "-m",
    "side_payment:C=0.4,balanced=true",
    "-e",
    "n_players=3",
    "--profile",
    "theory",
    "--episodes",
    "2000",
    "--plot-episodes",
    "500",
    "--quiet",
]

EPISODE_BYTES = game_of(fedgames.make("mean_estimation_v0", n_players=3)).episode_bytes
"""What one episode of :data:`SIMULATE`'s game takes by the memory estimate."""


def spy_episode_batches(monkeypatch) -> list[int]:
    """Record the size of every episode batch the Monte Carlo play makes (any game)."""
    import fedgames.agents.rollout as rollout_module

    sizes: list[int] = []
    make = rollout_module.episode_batch

    def recording(env, size, rng):
        sizes.append(size)
        return make(env, size, rng)

    monkeypatch.setattr(rollout_module, "episode_batch", recording)
    return sizes


def simulated(tmp_path, name, *options) -> dict:
    """``fedgames simulate`` (:data:`SIMULATE`) with ``options`` into ``tmp_path / name``: its report.json."""
    out = tmp_path / name
    assert main([*SIMULATE, *options, "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())


def observed(report: dict) -> list[tuple[str, str, float, float]]:
    return [(r["agent"], r["quantity"], r["observed"], r["standard_error"]) for r in report["rows"]]


def test_cli_simulate_batch_size(tmp_path, monkeypatch):
    """``fedgames simulate --batch-size N`` plays the comparison and each of the plot's 9 points N episodes at a
    time and records N; the same seed and N give the same report; an N covering the 2,000 episodes gives the
    default's (one batch) report; a smaller N plays other episodes whose means agree with it within 4 SE."""
    sizes = spy_episode_batches(monkeypatch)
    chunked = simulated(tmp_path, "chunked", "--batch-size", "300")
    assert sizes == [300] * 6 + [200] + ([300, 200] * 9)  # 2,000 compared, then 500 per point of the plot
    assert chunked["batch_size"] == 300 and chunked["episodes"] == 2000
    assert "2000 episodes (300 at a time)" in (tmp_path / "chunked" / "report.md").read_text()
    assert (tmp_path / "chunked" / "reward_vs_alpha.png").is_file()
    again = simulated(tmp_path, "again", "--batch-size", "300")
    assert again == chunked
    for name in ("report.md", "agreement.csv"):  # byte for byte
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "chunked" / name).read_bytes()
    sizes.clear()
    whole, default = simulated(tmp_path, "whole", "--batch-size", "2000"), simulated(tmp_path, "default")
    assert sizes == [2000] + [500] * 9 + [2000] + [500] * 9
    assert whole["batch_size"] == 2000 and default["batch_size"] == BATCH_SIZE
    assert observed(whole) == observed(default)
    assert observed(chunked) != observed(whole)  # other episodes ...
    for small, large in zip(chunked["rows"], whole["rows"]):  # ... of the same distribution
        gap = abs(small["observed"] - large["observed"])
        assert gap < 4 * np.hypot(small["standard_error"], large["standard_error"]), small
    assert chunked["all_agree"] and whole["all_agree"]


def test_cli_simulate_default_batch_is_lowered_to_the_memory_budget(tmp_path, monkeypatch):
    """Under a memory budget of 100 episodes the default batch is 100 (the 2,000 episodes in 20 batches)."""
    monkeypatch.setattr("fedgames.memory.memory_budget", lambda: 100 * EPISODE_BYTES)
    sizes = spy_episode_batches(monkeypatch)
    report = simulated(tmp_path, "budget", "--no-plot")
    assert report["batch_size"] == 100 and sizes == [100] * 20


def test_the_default_batch_is_checked_once_against_a_shrinking_memory_budget(tmp_path, monkeypatch):
    """Free memory read again a little lower (another process allocating) must not refuse the default batch that
    the first reading set: the resolved default (a ``BatchSize``) is passed on unchecked, here through the CLI's
    early check, the agreement report and ``simulate``; the report records the batch actually played."""
    budgets = iter(range(1000, 0, -1))
    monkeypatch.setattr("fedgames.memory.memory_budget", lambda: next(budgets) * EPISODE_BYTES)
    sizes = spy_episode_batches(monkeypatch)
    report = simulated(tmp_path, "shrinking", "--no-plot")
    assert sizes and set(sizes[:-1]) == {report["batch_size"]} and sum(sizes) == report["episodes"]
    env = mean_estimation()
    resolved = resolve_batch_size(env, None)
    assert resolve_batch_size(env, resolved) is resolved  # not read again
    with pytest.raises(ValueError, match="batch_size="):
        resolve_batch_size(env, int(resolved))  # a plain integer is checked: the budget has shrunk since


def test_learner_games_beyond_the_memory_budget_are_refused_before_any_work(capsys, monkeypatch):
    """``fedgames train --n-envs 1000000000`` was OOM-killed after 54 s: games per learning step are checked against
    the memory budget as a batch is, the message naming ``n_envs`` (``n_games`` for parameter sharing) with the
    estimate and the largest value that fits, one line with exit code 2, before any model is built."""
    from fedgames.train.multi_agent import train_shared

    monkeypatch.setattr("fedgames.memory.memory_budget", lambda: 100 * EPISODE_BYTES)
    env = mean_estimation()
    assert learner_games(env, 100, 1024) == 100 and learner_games(env, None, 1024) == 100
    with pytest.raises(ValueError, match=r"n_games=101 needs about .* use n_games <= 100"):
        train_shared(env, total_steps=8, n_games=101)
    monkeypatch.setattr(
        "fedgames.train.multi_agent.IndependentLearners", lambda *a, **k: pytest.fail("training started")
    )
    assert main(["train", "mean_estimation_v0", "--n-envs", "1000000000", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(
        r"fedgames: error: n_envs=1000000000 needs about .* use n_envs <= 100", err[0]
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "batch_size must be an integer >= 1, got 0"),
        ("-5", "batch_size must be an integer >= 1, got -5"),
        (
            "1000",
            re.escape(
                f"batch_size=1000 needs about {size_text(1000 * EPISODE_BYTES)} ({size_text(EPISODE_BYTES)} an "
                f"episode), more than the memory budget of {size_text(100 * EPISODE_BYTES)}: use batch_size <= 100"
            ),
        ),
    ],
)
def test_cli_simulate_bad_batch_size_is_refused_before_any_work(tmp_path, capsys, monkeypatch, value, message):
    """A batch size below 1, or beyond the memory budget (here 100 episodes' worth: the message gives the estimate
    and the largest batch that fits), is one line ``fedgames: error: ...`` with exit code 2; nothing is simulated
    and no report is written."""
    import fedgames.eval.agreement

    def never(*args, **kwargs):
        raise AssertionError("the computation started")

    monkeypatch.setattr(fedgames.eval.agreement, "compare_with_theory", never)
    monkeypatch.setattr("fedgames.memory.memory_budget", lambda: 100 * EPISODE_BYTES)
    assert main([*SIMULATE, "--batch-size", value, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedgames: error: ") and re.search(message, err[0]), err
    assert not (tmp_path / "out" / "report.json").exists()


def test_cli_simulate_batch_size_must_be_an_integer(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*SIMULATE, "--batch-size", "2.5"])
    assert exit_info.value.code == 2 and "--batch-size: invalid int value: '2.5'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Bad values
# ---------------------------------------------------------------------------------------------------------------

BAD = [0, -3, 2.5, 4.0, True, np.bool_(False), "8"]


GRID = GridOracle(points=2, episodes=10)
LEARNER = LearnedOracle("ppo", timesteps=10**9, n_envs=4)
CALLS = {
    "simulate": lambda env, b: simulate(env, with_random_player(env), 10, batch_size=b),
    "summarize_policy": lambda env, b: summarize_policy(env, PLAYER, ConstantPolicy([1.0, 0.0]), batch_size=b),
    "compare_with_theory": lambda env, b: compare_with_theory(
        env, theory.honest_profile(theory.Setting.from_env(env), 2), episodes=10, batch_size=b
    ),
    "nash_check": lambda env, b: nash_check(env, with_random_player(env), GRID, episodes=10, batch_size=b),
    "grid oracle": lambda env, b: GRID.best_response(env, PLAYER, with_random_player(env), batch_size=b),
    "learned oracle": lambda env, b: LEARNER.best_response(env, PLAYER, with_random_player(env), batch_size=b),
}


@pytest.mark.parametrize("function", list(CALLS))
@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_bad_batch_size_is_a_value_error_naming_it(function, bad, monkeypatch):
    """Refused before anything is played or trained (the learner's billion timesteps never start)."""

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking batch_size")

    monkeypatch.setattr(oracles, "BestResponseVecEnv", no_training)
    with pytest.raises(ValueError, match=rf"batch_size must be an integer >= 1, got {re.escape(repr(bad))}"):
        CALLS[function](mean_estimation(), bad)


def test_cli_bad_batch_size_exits_2(capsys):
    args = ["check", "mean_estimation_v0", "--oracle", "grid", "--batch-size", "0", "--quiet"]
    assert main(args) == 2
    assert "batch_size must be an integer >= 1, got 0" in capsys.readouterr().err
