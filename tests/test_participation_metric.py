"""The reported metric's aggregation under contamination ([G] Prop. 9.3): the closed forms of
``fedgames.envs.participation.metric_theory`` against direct sampling and against the env
(``fedgames reproduce aggregation-frontier``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedgames.envs.participation import metric_theory as mt
from fedgames.eval.aggregation_frontier import reproduce


@pytest.mark.parametrize("rule, fraction", [("mean", 0.0), ("trimmed_mean", 0.2), ("median", 0.0)])
@pytest.mark.parametrize("n", [11, 12])
def test_the_gaming_bias_is_exact_at_any_number_of_participants(rule, fraction, n):
    """At 11 or 12 participants, far from the large-n regime, 200,000 samples of the L-statistic have the mean
    :func:`metric_bias` gives, within 4 standard errors."""
    rng = np.random.default_rng(n)
    eps, b, tau = 0.3, 0.5, 0.1
    scores = b * (rng.random((200_000, n)) < eps) + tau * rng.standard_normal((200_000, n))
    f = mt.trimmed_count(rule, n, fraction)
    metric = np.sort(scores, axis=1)[:, f : n - f].mean(1)
    se = metric.std(ddof=1) / math.sqrt(metric.size)
    assert abs(metric.mean() - mt.metric_bias(rule, n, eps, b, tau, fraction)) < 4 * se


def test_the_trimming_counts_are_the_aggregators():
    assert [mt.trimmed_count("median", n) for n in (11, 12)] == [5, 5]
    assert mt.trimmed_count("trimmed_mean", 101, 0.25) == 25 and mt.trimmed_count("mean", 7) == 0
    with pytest.raises(ValueError, match="rule must be one of"):
        mt.trimmed_count("krum", 7)
    with pytest.raises(ValueError, match="fraction"):
        mt.trimmed_count("trimmed_mean", 7, 0.5)


def test_reproduce_aggregation_frontier(tmp_path):
    """In the env (1001 participants, each gaming with probability eps): the metric's gaming bias is the exact one
    and its spread the large-n one, within 4 standard errors at every point; and the trade-off of Prop. 9.3: with
    nobody gaming the mean has the smallest spread (no bias for any rule), at eps = 0.1 a 0.2-trimmed mean beats the
    mean in both bias and spread, at eps = 0.3 the median has the smallest bias and beats the mean in both."""
    results = reproduce(
        tmp_path,
        contamination=(0.0, 0.1, 0.3),
        rules=(("mean", 0.0), ("trimmed_mean", 0.2), ("median", 0.0)),
        episodes=600,
    )
    points = {(p["rule"], p["eps"]): p for p in results["points"]}
    for p in points.values():
        assert abs(p["bias_sim"] - p["bias"]) < 4 * p["bias_se"]
        assert abs(p["sd_sim"] - p["sd"]) < 4 * p["sd_se"]
    assert points[("mean", 0.0)]["sd"] < points[("trimmed_mean", 0.0)]["sd"] < points[("median", 0.0)]["sd"]
    assert all(abs(points[(rule, 0.0)]["bias"]) < 1e-9 for rule in ("mean", "trimmed_mean", "median"))
    for eps, robust in ((0.1, "trimmed_mean"), (0.3, "median")):
        assert points[(robust, eps)]["bias"] < points[("mean", eps)]["bias"]
        assert points[(robust, eps)]["sd"] < points[("mean", eps)]["sd"]
    assert points[("median", 0.3)]["bias"] == min(points[(r, 0.3)]["bias"] for r in ("mean", "trimmed_mean", "median"))
    assert {f.name for f in tmp_path.iterdir()} == {"results.json", "frontier.csv", "frontier.png"}
    assert json.loads((tmp_path / "results.json").read_text())["points"] == results["points"]


def test_the_cli_reproduces_and_reports_every_point(tmp_path, monkeypatch, capsys):
    """``fedgames reproduce aggregation-frontier`` and ``gaming-design`` run the experiments (here on small grids)
    and print one line per point."""
    from fedgames.cli import main
    from fedgames.eval import aggregation_frontier, gaming_design

    small = {
        aggregation_frontier: {"contamination": (0.0, 0.2), "rules": (("mean", 0.0), ("median", 0.0)), "episodes": 200},
        gaming_design: {
            "pis": (0.0, 0.6),
            "sanctions": (0.0,),
            "gain_episodes": 50,
            "welfare_episodes": 2,
            "config": {"n_players": 200, "c_mean": 0.9, "c_std": 0.3},
        },
    }
    for module, grid in small.items():
        full = module.reproduce
        monkeypatch.setattr(module, "reproduce", lambda out, _full=full, _grid=grid, **kw: _full(out, **_grid, **kw))
    for experiment, files, points in (("aggregation-frontier", "frontier.png", 4), ("gaming-design", "design.png", 2)):
        out = tmp_path / experiment
        assert main(["reproduce", experiment, "--out", str(out), "--quiet"]) == 0
        printed = capsys.readouterr().out.splitlines()
        assert len([line for line in printed if line.startswith("  ")]) == points and (out / files).exists()
