"""The server-side monitor of the participation game (SPEC §9): its warnings come before a collapse, and on stable
honest runs they stay silent at the stated false-alarm level."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fedgames
from fedgames.agents import MyopicParticipant
from fedgames.envs.batch import episode_batch
from fedgames.envs.participation.monitor import SIGNALS, Monitor, game_monitor
from fedgames.eval.domino import DOMINO_CONFIG

SLOW = {**DOMINO_CONFIG, "c_std": 0.35}
"""A flatter retention map: the threshold (about 0.631) repels slowly (``G'`` about 1.4), so a collapse from just
below it takes several rounds."""


def monitored_runs(config: dict, start: float, u: float | str, episodes: int, n: int = 1000, rounds: int = 20):
    """``episodes`` runs of myopic clients from ``start``: the monitor (fed the server's view only) and the
    participation paths ``(rounds, episodes)``."""
    env = fedgames.make("participation_v0", n_players=n, rounds=rounds, initial_participation=start, **config)
    batch = episode_batch(env, episodes, np.random.default_rng(int(1000 * start)))
    observations, policy = batch.reset(), MyopicParticipant(env, u)
    monitor = game_monitor(env.unwrapped.game, env.protocol, batch=episodes)
    paths = []
    for _ in range(rounds):
        step = batch.step(policy.act(observations, np.random.default_rng(0)))
        observations, messages = step.observations, step.outcome.messages
        monitor.update(step.outcome.present, messages[..., 1], messages[..., 2], step.outcome.aggregate[:, 0])
        paths.append(step.outcome.present.mean(1))
    return monitor, np.array(paths)


@pytest.mark.parametrize(
    "config, start, u, n, early",
    [
        (DOMINO_CONFIG, 0.54, 0.0, 1000, "participation_near_threshold"),
        (SLOW, 0.615, 0.0, 40_000, "retention_variance_rising"),
        (DOMINO_CONFIG, 1.0, "best", 1000, "gaming_detected"),
    ],
    ids=["below-threshold", "slow-collapse", "gaming"],
)
def test_the_warnings_fire_before_the_collapse(config, start, u, n, early):
    """Runs that collapse (participation below half the domino threshold, [G] Thm 7.2): started below the
    threshold, slowly from just below it (40,000 clients: each run's own threshold, which its cost draws move by
    about ``sqrt(x (1 - x) / N) / (G' - 1)``, stays above the start), or from full participation with everybody
    gaming. In every run some
    warning fires in an earlier round than the collapse, and so does the signal the scenario is about (near the
    threshold; the retention variance rising as the departure from the threshold speeds up; the GLS test)."""
    monitor, paths = monitored_runs(config, start, u, episodes=8, n=n)
    threshold = monitor.threshold
    assert threshold is not None
    collapsed = paths < threshold / 2
    assert collapsed[-1].all()  # every run collapses
    collapse_round = collapsed.argmax(0) + 1
    fired = np.stack([monitor.first[name] for name in SIGNALS])
    earliest = np.where(fired > 0, fired, np.iinfo(int).max).min(0)
    assert np.all(earliest < collapse_round)
    assert np.all((monitor.first[early] > 0) & (monitor.first[early] < collapse_round))


def test_stable_honest_runs_raise_false_alarms_at_most_at_the_stated_level():
    """400 honest runs of 300 myopic clients from full participation settle at the high steady state: the two
    dynamic signals stay silent, and each statistical one (the metric-welfare gap, the GLS test with Bonferroni
    over clients and rounds) fires in at most ``alpha`` of the runs, within 3 binomial standard errors."""
    episodes, alpha = 400, 0.05
    monitor, paths = monitored_runs(DOMINO_CONFIG, 1.0, 0.0, episodes, n=300, rounds=30)
    assert np.all(paths[-1] > monitor.threshold + monitor.margin)
    assert monitor.alpha == alpha
    for name in ("participation_near_threshold", "retention_variance_rising"):
        assert not np.any(monitor.first[name])
    se = math.sqrt(alpha * (1 - alpha) / episodes)
    for name in ("metric_welfare_gap", "gaming_detected"):
        assert np.mean(monitor.first[name] > 0) <= alpha + 3 * se


def test_the_env_reports_the_signals_in_infos():
    """``infos[agent]["monitor"]``: every signal, ``None`` while silent, else the round it fired and its value; a
    lone full gamer among honest clients is caught by the GLS test in the first round."""
    env = fedgames.make("participation_v0", n_players=8, rounds=3)
    env.reset(seed=1)
    for _ in range(3):
        actions = {a: np.array([1.0, 1.0 if a == "player_0" else 0.0], dtype=np.float32) for a in env.agents}
        infos = env.step(actions)[-1]
    report = infos["player_3"]["monitor"]
    assert set(report) == set(SIGNALS)
    assert report["gaming_detected"]["round"] == 1 and report["gaming_detected"]["value"] > 3
    assert report["participation_near_threshold"] is None


@pytest.mark.parametrize(
    "changes, name",
    [
        ({"alpha": 1.0}, "alpha"),
        ({"pi": -0.1}, "pi"),
        ({"threshold": 1.5}, "threshold"),
        ({"margin": -0.1}, "margin"),
        ({"falls": 1}, "falls"),
        ({"window": 1}, "window"),
        ({"factor": 0.5}, "factor"),
        ({"horizon": 0}, "horizon"),
    ],
)
def test_bad_monitor_settings_name_the_parameter(changes, name):
    with pytest.raises(ValueError, match=name):
        Monitor(**{"n_players": 5, "horizon": 10, **changes})


def test_the_domino_report_carries_the_warnings(tmp_path):
    """``reproduce domino``'s report: each run that collapses (falls below half the threshold) was warned in an
    earlier round, or in round 1 where it collapsed at once (the server sees nothing before it); the runs that
    recover to the high steady state raised no warning."""
    from fedgames.eval.domino import reproduce

    results = reproduce(tmp_path, n_players=1000, rounds=15)
    threshold = results["threshold"]
    for run in results["runs"]:
        fired = [w["round"] for w in run["warnings"].values() if w is not None]
        if run["start"] < threshold / 2:  # collapsed from the start
            assert run["final"] < threshold / 2 and fired
        elif run["final"] < threshold / 2:
            collapse = next(t for t, x in enumerate(run["path"]) if x < threshold / 2)
            assert fired and min(fired) < max(collapse, 2)  # the server's first view is round 1
        else:
            assert run["final"] > threshold and not fired
