"""``reproduce honesty-b3``: outputs, schema, rewards from the recorded deviations and resume at a micro scale; the
paper's qualitative result at the ``tiny`` scale (group A's grid ends)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from scipy.stats import t as student_t

from fedgames.envs.fedsgd.game import FedSGDGame
from fedgames.eval.honesty_b3 import (
    SCALES,
    Scale,
    _group_rewards,
    _simulate,
    build,
    reproduce,
    settings,
    unit_payment_protocol,
)

MICRO = Scale(writers=6, mean_samples=4, sample_sigma=0.35, rounds=3, runs=2, alphas=(0.0, 2.0), penalties=(0.0, 1e-3))


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    out = tmp_path_factory.mktemp("b3")
    return out, reproduce(MICRO, out, progress=False)


def test_outputs_and_schema(micro):
    out, results = micro
    for name in (
        "results.json",
        "curves.csv",
        "runs.csv",
        "reward_vs_alpha_A.png",
        "reward_vs_alpha_B.png",
        "honest_penalties.png",
    ):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert 0.0 <= results["clean_accuracy"]["mean"] <= 1.0
    curves = results["curves"]
    assert {(c["group"], c.get("alpha_B", c.get("alpha_A")), c["C"]) for c in curves} == {
        (g, f, C) for g in "AB" for f in (0.0, 1.0) for C in MICRO.penalties
    }
    for c in curves:
        assert c["alpha"] == list(MICRO.alphas)
        assert len(c["reward_mean"]) == len(c["reward_se"]) == len(MICRO.alphas)
        assert c["runs"] == [MICRO.runs] * len(MICRO.alphas)  # runs behind each point: here none diverged
    assert results["diverged_runs"] == 0
    assert len(list((out / "runs").glob("*.json"))) == len(settings(MICRO)) * MICRO.runs


def test_rewards_follow_from_the_recorded_payments(micro):
    """With C = 0 the reward is the test loss; with C > 0 each player's reward drops by C times its payment at
    C = 1, and the balanced payments of all players sum to zero."""
    out, results = micro
    record = json.loads((out / "runs" / "a2_b0_s0.json").read_text())
    net = np.array(record["payment"])
    assert abs(net.sum()) <= 1e-5 * (1 + np.abs(net).sum())
    free = next(c for c in results["curves"] if c["group"] == "A" and c["alpha_B"] == 0.0 and c["C"] == 0.0)
    losses = [json.loads((out / "runs" / f"a2_b0_s{s}.json").read_text())["test_loss"] for s in range(MICRO.runs)]
    assert free["reward_mean"][1] == pytest.approx(np.mean(losses))
    _, in_a, _, _ = build(MICRO)
    C = MICRO.penalties[1]
    charged = next(c for c in results["curves"] if c["group"] == "A" and c["alpha_B"] == 0.0 and c["C"] == C)
    runs = [json.loads((out / "runs" / f"a2_b0_s{s}.json").read_text()) for s in range(MICRO.runs)]
    nets = [np.array(r["payment"])[in_a].mean() for r in runs]
    assert np.mean(nets) != 0.0  # group A's noise makes it a net payer: the C term is seen
    assert charged["reward_mean"][1] == pytest.approx(np.mean(losses) - C * np.mean(nets), rel=1e-12)


def test_resume_recomputes_only_missing_runs(micro):
    out, _ = micro
    files = sorted((out / "runs").glob("*.json"))
    stamps = {f.name: f.stat().st_mtime_ns for f in files}
    before = json.loads(files[0].read_text())
    files[0].unlink()
    reproduce(MICRO, out, progress=False)
    after = {f.name: f.stat().st_mtime_ns for f in (out / "runs").glob("*.json")}
    assert set(after) == set(stamps)
    assert [name for name in stamps if after[name] != stamps[name]] == [files[0].name]
    replay = json.loads(files[0].read_text())  # common random numbers: the same draws, so the same run up to
    for key in ("test_loss", "payment"):  # the rounding of kernels that depend on the batch size
        scale = np.abs(before[key]).max()
        assert replay[key] == pytest.approx(before[key], rel=1e-4, abs=1e-4 * scale)


def test_payments_are_the_papers_from_the_deviations():
    """The runner's charge through the side_payment rule at C = 1 is [H] B.3's: per round, an active client pays
    its squared deviation ``||m_t^i - mbar_t||^2`` and receives half the other two active clients' (written out
    here from each round's deviations); a client never active pays nothing."""
    game, in_a, _, _ = build(MICRO)
    g = torch.Generator().manual_seed(3)
    state = game.start(2, g, common=True)
    alpha = torch.stack([torch.where(torch.as_tensor(in_a), 2.0, 0.0), torch.zeros(len(in_a))]).float()
    expected = torch.zeros_like(state.payments, dtype=torch.float64)
    for _ in range(4):
        game.play_round(state, alpha, g, unit_payment_protocol(game))
        deviation = state.last.sq_deviation.double()
        received = 0.5 * (deviation.sum(1, keepdim=True) - deviation)
        expected.scatter_add_(1, state.last.active, deviation - received)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(state.payments.double(), expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_records_written_before_the_protocol_charged_them_give_the_same_rewards():
    """A run record holding the squared deviations paid and received (the former format) gives the rewards of the
    payment ``paid - received``."""
    old = {"test_loss": 2.0, "paid": [3.0, 1.0, 0.5], "received": [1.0, 2.0, 1.5]}
    new = {"test_loss": 2.0, "payment": [2.0, -1.0, -1.0]}
    members = np.array([True, False, True])
    assert _group_rewards(old, members, 0.1) == _group_rewards(new, members, 0.1) == pytest.approx(2.0 - 0.1 * 0.5)


def test_differences_are_paired_by_seed(micro):
    """``diff_mean`` is the mean over seeds of (reward at alpha - reward at the first alpha) in the same seed."""
    out, results = micro
    free = next(c for c in results["curves"] if c["group"] == "A" and c["alpha_B"] == 0.0 and c["C"] == 0.0)
    loss = {
        (a, s): json.loads((out / "runs" / f"a{a:g}_b0_s{s}.json").read_text())["test_loss"]
        for a in MICRO.alphas
        for s in range(MICRO.runs)
    }
    paired = [loss[(2.0, s)] - loss[(0.0, s)] for s in range(MICRO.runs)]
    assert free["diff_mean"][0] == 0.0
    assert free["diff_mean"][1] == pytest.approx(np.mean(paired))
    assert free["diff_se"][1] == pytest.approx(np.std(paired, ddof=1) / np.sqrt(MICRO.runs))


def test_interrupted_seed_resumes_from_its_checkpoint_exactly(tmp_path, monkeypatch):
    """A job stopped in the middle of a seed (checkpointing every round) resumes from the checkpoint, not from
    round 0, and ends with exactly the records of the uninterrupted job; the checkpoint is removed once the seed's
    runs are written."""
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    reproduce(MICRO, reference, progress=False)
    played = []
    original = FedSGDGame.play_round

    def interrupted(self, state, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if len(played) == MICRO.rounds + 1:  # seed 0 done, seed 1 checkpointed after its first round
            raise KeyboardInterrupt
        played.append(state.round)
        return original(self, state, *args, **kwargs)

    monkeypatch.setattr(FedSGDGame, "play_round", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reproduce(MICRO, resumed, progress=False, checkpoint_minutes=1e-9)
    assert (resumed / "checkpoints" / "seed_1.pt").exists()
    assert not (resumed / "checkpoints" / "seed_0.pt").exists()
    played.clear()
    monkeypatch.setattr(
        FedSGDGame,
        "play_round",
        lambda self, state, *a, **k: (played.append(state.round), original(self, state, *a, **k))[1],
    )
    reproduce(MICRO, resumed, progress=False, checkpoint_minutes=1e-9)
    assert played == list(range(1, MICRO.rounds))  # seed 1 continued after its first round
    assert not any((resumed / "checkpoints").iterdir())
    for run in sorted((reference / "runs").glob("*.json")):
        assert json.loads((resumed / "runs" / run.name).read_text()) == json.loads(run.read_text()), run.name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"alpha_A": 0.0, "alpha_B"', "unreadable run record"),
        ("[1, 2]", "not a run record"),
        ("null", "not a run record"),
        ("DROP test_loss", "not a run record"),
        ('SET test_loss "x"', "not a run record"),
        ("SET payment [1.0]", "a run of 1 clients, this reproduction has 6"),
    ],
)
def test_a_corrupt_run_record_is_refused_by_name(micro, tmp_path, content, message):
    """Audit of issue 17: a truncated, mistyped or incomplete run file in ``runs/`` was a traceback (AttributeError,
    KeyError, TypeError, IndexError) or an error not naming the file; now a ValueError naming it."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(micro[0], out)
    target = sorted((out / "runs").glob("*.json"))[0]
    record = json.loads(target.read_text())
    if content.startswith("DROP "):
        record.pop(content.split()[1])
        content = json.dumps(record)
    elif content.startswith("SET "):
        _, key, value = content.split(" ", 2)
        content = json.dumps(record | {key: json.loads(value)})
    target.write_text(content)
    with pytest.raises(ValueError, match=f"{target.name}: .*{re.escape(message)}"):
        reproduce(MICRO, out, progress=False)


@pytest.mark.parametrize("content", [b"garbage", "LIST"])
def test_a_corrupt_checkpoint_is_refused_by_name_and_orphans_are_removed(tmp_path, content):
    """A seed's checkpoint that is not one (bytes that are no torch file, a list) was a traceback; now a ValueError
    naming it. The temporary files a save killed mid-write left in checkpoints/ and runs/ are removed at the start
    (a seed whose runs finish before its next save never writes its checkpoint again)."""
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "runs").mkdir()
    orphans = [out / "checkpoints" / ".seed_0.pt.k3j2.tmp", out / "runs" / ".a0_b0_s0.json.zz.tmp"]
    for orphan in orphans:
        orphan.write_text("half")
    checkpoint = out / "checkpoints" / "seed_0.pt"
    if content == "LIST":
        torch.save([1, 2], checkpoint)
    else:
        checkpoint.write_bytes(content)
    with pytest.raises(ValueError, match=r"seed_0\.pt: not a checkpoint of this reproduction"):
        reproduce(MICRO, out, progress=False)
    assert not any(orphan.exists() for orphan in orphans)


def test_checkpoint_interval_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_minutes must be > 0"):
        reproduce(MICRO, tmp_path, checkpoint_minutes=0)


def test_unknown_scale():
    with pytest.raises(ValueError, match="scale"):
        reproduce("huge", "/nonexistent")


def test_tiny_scale_shows_the_papers_qualitative_result(tmp_path):
    """[H] B.3 with the ``tiny`` data and horizon, the ends of group A's grid (alpha_A = 0 and the largest, alpha_B
    = 0), 4 seeds, each pair of runs with common random numbers: without a penalty group A gains by attacking (its
    reward, the shared test loss, rises: the paired differences' one-sided t test at 5%, 3 degrees of freedom);
    with the grid's largest C it loses (the same test)."""
    scale = SCALES["tiny"]
    game, in_a, test_x, test_y = build(scale)
    top = max(scale.alphas)
    seeds = range(4)
    for s in seeds:
        _simulate(
            game,
            [(0.0, 0.0, s), (top, 0.0, s)],
            in_a,
            scale.rounds,
            test_x,
            test_y,
            tmp_path,
            torch.Generator().manual_seed(s),
            progress=False,
            checkpoint_seconds=math.inf,
        )
    record = {
        (a, s): json.loads((tmp_path / "runs" / f"a{a:g}_b0_s{s}.json").read_text()) for a in (0.0, top) for s in seeds
    }
    for C, sign in ((0.0, 1.0), (max(scale.penalties), -1.0)):
        gains = np.array(
            [_group_rewards(record[(top, s)], in_a, C) - _group_rewards(record[(0.0, s)], in_a, C) for s in seeds]
        )
        t_statistic = sign * gains.mean() / (gains.std(ddof=1) / np.sqrt(len(gains)))
        assert t_statistic > student_t.ppf(0.95, len(gains) - 1), (C, gains)
