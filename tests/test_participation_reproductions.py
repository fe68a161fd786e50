"""The participation game's reproductions at small sizes (``fedgames reproduce detection-power | retention-map |
hysteresis``): the files, and the simulations against the theory beside them."""

from __future__ import annotations

import json
import math

import pytest

from fedgames.cli import main
from fedgames.eval import detection_power, hysteresis, retention_map


def test_detection_power(tmp_path):
    """[G] §10 as SPEC §8, aligned (``delta = gamma q0``): without challenges the power is ``alpha`` at every
    ``T``; with them it rises with ``T`` and ``pi``; every simulated rate within 4.5 standard errors of the exact
    power; ``T*`` infinite without challenges (``null`` in the strict JSON, named under ``non_finite``), else
    below the tail bound."""
    results = detection_power.reproduce(tmp_path, pis=(0.0, 0.5, 1.0), rounds=(1, 10, 40), us=(0.3, 0.6), runs=3000)
    for p in results["points"]:
        assert abs(p["power_sim"] - p["power"]) < 4.5 * p["power_se"]
        if p["pi"] == 0.0:
            assert p["power"] == pytest.approx(results["alpha"], abs=1e-12)
    by = {(p["u"], p["pi"], p["rounds"]): p["power"] for p in results["points"]}
    assert by[(0.3, 0.5, 1)] < by[(0.3, 0.5, 10)] < by[(0.3, 0.5, 40)] < by[(0.3, 1.0, 40)] < by[(0.6, 1.0, 40)]
    assert len(results["sample_sizes"]) == 6
    sizes = {s["pi"]: s for s in results["sample_sizes"] if s["u"] == 0.3}
    assert math.isinf(sizes[0.0]["T_star"]) and not sizes[0.0]["identifiable"]
    assert sizes[1.0]["T_star"] < sizes[0.5]["T_star"] < sizes[0.5]["T_tail_bound"]
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["sample_sizes"][0]["T_star"] is None and any("T_star" in n for n in written["non_finite"])
    assert (tmp_path / "power.csv").read_text().startswith("u,pi,rounds,power")
    assert (tmp_path / "detection_power.png").stat().st_size > 10_000


def test_retention_map(tmp_path):
    """[G] Fig. 3: one simulated round of 1000 myopic clients from each level is ``G(x)`` within 4.5 of its
    standard errors (``sqrt(G (1 - G) / (N episodes))``); three steady states, the middle one unstable and the
    threshold; higher costs raise the threshold."""
    results = retention_map.reproduce(tmp_path, n_players=1000, episodes=5, grid=6)
    for p in results["points"]:
        assert abs(p["simulated"] - p["G"]) < 4.5 * p["se_theory"] + 1e-12
    assert [s["stable"] for s in results["steady_states"]] == [True, False, True]
    assert results["threshold"] == results["steady_states"][1]["x"]
    thresholds = [entry["threshold"] for entry in results["family"]]
    assert thresholds == sorted(thresholds)
    assert {f.name for f in tmp_path.iterdir()} >= {"results.json", "map.csv", "retention_map.png"}


def test_hysteresis_sweeps_end_on_different_branches_where_theory_says(tmp_path):
    """[G] Fig. 2: sweeping ``c_mean`` up from cheap participation and back down, both the simulated clients and
    the mean-field map end each step above the domino threshold going up and below it coming down wherever the
    theory has two stable states; where it has one, both sweeps end at it. Paths from either side of the threshold
    end on its own side."""
    costs = (0.3, 0.5, 0.7, 0.85, 1.05)
    results = hysteresis.reproduce(tmp_path, n_players=1000, rounds=10, costs=costs, starts=(0.45, 0.7))
    up = {p["c_mean"]: p for p in results["sweep"] if p["direction"] == "up"}
    down = {p["c_mean"]: p for p in results["sweep"] if p["direction"] == "down"}
    bistable = [c for c in costs if up[c]["threshold"] is not None]
    assert bistable == [0.5, 0.7, 0.85]
    for c in bistable:
        for key in ("simulated", "mean_field"):
            assert up[c][key] > up[c]["threshold"] > down[c][key]
    for c in (0.3, 1.05):
        assert up[c]["low_branch"] == up[c]["high_branch"]
        for key in ("simulated", "mean_field"):
            assert abs(up[c][key] - down[c][key]) < 0.05 and abs(up[c][key] - up[c]["high_branch"]) < 0.05
    low, high = results["paths"]  # at the configuration's c_mean, 0.8: threshold 0.569, stable states 0 and 0.988
    assert low["path"][-1] < 0.05 and high["path"][-1] > 0.95
    assert abs(low["mean_field"][-1] - low["path"][-1]) < 0.05 and abs(high["mean_field"][-1] - high["path"][-1]) < 0.05
    assert {f.name for f in tmp_path.iterdir()} >= {"results.json", "sweep.csv", "paths.csv", "hysteresis.png"}


def test_the_cli_runs_a_reproduction(tmp_path, capsys):
    assert main(["reproduce", "detection-power", "--out", str(tmp_path), "--quiet"]) == 0
    assert "T* = inf" in capsys.readouterr().out
    assert (tmp_path / "detection_power.png").exists()
