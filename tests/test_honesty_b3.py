"""``reproduce honesty-b3`` at a micro scale: outputs, schema, rewards from the recorded deviations, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedgames.eval.honesty_b3 import Scale, reproduce, settings

MICRO = Scale(writers=6, mean_samples=4, sample_sigma=0.35, rounds=3, runs=2, alphas=(0.0, 2.0), penalties=(0.0, 1e-3), batch_runs=4)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    out = tmp_path_factory.mktemp("b3")
    return out, reproduce(MICRO, out, progress=False)


def test_outputs_and_schema(micro):
    out, results = micro
    for name in ("results.json", "curves.csv", "runs.csv", "reward_vs_alpha_A.png", "reward_vs_alpha_B.png",
                 "honest_penalties.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert 0.0 <= results["clean_accuracy"]["mean"] <= 1.0
    curves = results["curves"]
    assert {(c["group"], c.get("alpha_B", c.get("alpha_A")), c["C"]) for c in curves} == {
        (g, f, C) for g in "AB" for f in (0.0, 1.0) for C in MICRO.penalties}
    for c in curves:
        assert c["alpha"] == list(MICRO.alphas)
        assert len(c["reward_mean"]) == len(c["reward_se"]) == len(MICRO.alphas)
    assert len(list((out / "runs").glob("*.json"))) == len(settings(MICRO)) * MICRO.runs


def test_rewards_follow_from_the_recorded_deviations(micro):
    """With C = 0 the reward is the test loss; with C > 0 each player's reward drops by C (paid - received), and
    the group means of (paid - received) over all players sum to zero with the group sizes as weights."""
    out, results = micro
    record = json.loads((out / "runs" / "a2_b0_s0.json").read_text())
    net = np.array(record["paid"]) - np.array(record["received"])
    assert abs(net.sum()) <= 1e-5 * (1 + np.abs(np.array(record["paid"])).sum())
    free = next(c for c in results["curves"] if c["group"] == "A" and c["alpha_B"] == 0.0 and c["C"] == 0.0)
    losses = [json.loads((out / "runs" / f"a2_b0_s{s}.json").read_text())["test_loss"] for s in range(MICRO.runs)]
    assert free["reward_mean"][1] == pytest.approx(np.mean(losses))


def test_resume_recomputes_only_missing_runs(micro):
    out, _ = micro
    files = sorted((out / "runs").glob("*.json"))
    stamps = {f.name: f.stat().st_mtime_ns for f in files}
    files[0].unlink()
    reproduce(MICRO, out, progress=False)
    after = {f.name: f.stat().st_mtime_ns for f in (out / "runs").glob("*.json")}
    assert set(after) == set(stamps)
    assert [name for name in stamps if after[name] != stamps[name]] == [files[0].name]


def test_unknown_scale():
    with pytest.raises(ValueError, match="scale"):
        reproduce("huge", "/nonexistent")
