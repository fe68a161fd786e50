"""The command line's errors before work and its results folders (issue 17.3, 17.6): the output folder checked
before anything is computed, bad input as one line and exit code 2 (a traceback only with ``--debug``), strict JSON
reports, a manifest of the run that wrote a folder, and no stale files from an earlier run."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from fedgames.cli import main
from fedgames.files import write_atomic
from fedgames.run_folder import MANIFEST, check_output_folder, recording

SIMULATE = ["simulate", "mean_estimation_v0", "--episodes", "2000", "--plot-episodes", "500", "--quiet"]


def strict(text: str):
    """``json.loads`` that refuses ``NaN`` / ``Infinity`` literals, as strict parsers do."""

    def refuse(literal: str):
        raise ValueError(f"non-standard JSON literal {literal}")

    return json.loads(text, parse_constant=refuse)


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedgames: error: "), captured.err
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# Errors before work
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["reproduce", "honesty-b3"],
        SIMULATE,
        ["check", "mean_estimation_v0", "--oracle", "grid", "--quick", "--quiet"],
        ["train", "mean_estimation_v0", "--quick", "--quiet"],
        ["reproduce", "domino"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_an_output_folder_that_cannot_be_written_fails_before_any_work(tmp_path, capsys, monkeypatch, command):
    """Issue 17: ``--out`` naming a file, or a path under a file, used to fail only when the results were written,
    after the whole run. Now it is refused at once (timed: under a second, though the runs take minutes), and the
    computation is never entered."""
    import fedgames.eval.agreement
    import fedgames.eval.domino
    import fedgames.eval.honesty_b3
    import fedgames.eval.nash
    import fedgames.train.multi_agent

    def never(*args, **kwargs):
        raise AssertionError("the computation started")

    for module, name in [
        (fedgames.eval.honesty_b3, "reproduce"),
        (fedgames.eval.domino, "reproduce"),
        (fedgames.eval.agreement, "compare_with_theory"),
        (fedgames.eval.nash, "nash_check"),
        (fedgames.train.multi_agent, "train_independent"),
    ]:
        monkeypatch.setattr(module, name, never)
    existing = tmp_path / "existing_file"
    existing.write_text("not a folder")
    for out, message in [(existing, "is a file"), (existing / "sub" / "dir", "lies under .*existing_file")]:
        start = time.perf_counter()
        assert main([*command, "--out", str(out)]) == 2
        assert time.perf_counter() - start < 1.0
        line = one_line_error(capsys)
        assert line.startswith(f"fedgames: error: --out {out}: ")
        assert re.search(message, line)
    assert existing.read_text() == "not a folder"
    # a folder where a result file goes, or a file where a folder of results goes (audit of issue 17)
    for name, kind, message in [
        ("report.json", "folder", "report.json is a folder where a result file is written"),
        ("checkpoints", "file", "checkpoints is a file where a folder of results is written"),
    ]:
        out = tmp_path / f"blocked_{kind}"
        out.mkdir()
        if kind == "folder":
            (out / name).mkdir()
        else:
            (out / name).write_text("x")
        assert main([*command, "--out", str(out)]) == 2
        assert one_line_error(capsys) == f"fedgames: error: --out {out}: {message}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_an_unwritable_output_folder_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main([*SIMULATE, "--out", str(locked / "results")]) == 2
        assert "cannot write in" in one_line_error(capsys)
    finally:
        locked.chmod(0o700)


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux's sysfs")
def test_a_folder_unwritable_even_for_root_is_refused(capsys):
    """sysfs refuses new entries to every user, root included (CI runs as root, where the test above is skipped)."""
    assert main([*SIMULATE, "--out", "/sys/kernel/fedgames-results"]) == 2
    assert "fedgames: error: --out /sys/kernel/fedgames-results: cannot write in /sys/kernel" in one_line_error(capsys)


def test_check_output_folder_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_output_folder(target) == target
    assert list(tmp_path.iterdir()) == []  # the probe is gone, no folder was made
    with pytest.raises(ValueError, match="--results .*is a file"):
        check_output_folder(__file__, option="--results")


def test_bad_input_is_one_line_and_debug_shows_the_traceback(capsys):
    assert main(["simulate", "mean_estimation_v0", "-e", "n_player=3"]) == 2
    assert "n_players" in one_line_error(capsys)  # the did-you-mean of the registry
    with pytest.raises(ValueError, match="n_players"):
        main(["simulate", "mean_estimation_v0", "-e", "n_player=3", "--debug"])


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ([*SIMULATE, "--plot-episodes", "0"], "argument --plot-episodes: must be an integer >= 2, got '0'"),
        (["check", "mean_estimation_v0", "--torch-threads", "0"], "argument --torch-threads: must be an integer >= 1"),
        (["reproduce", "domino", "--out", "x", "--torch-threads", "-1"], "argument --torch-threads"),
    ],
)
def test_counts_used_after_the_computation_are_checked_before_it(capsys, command, message):
    """``--plot-episodes`` is used after the simulation and ``--torch-threads 0`` was a ``RuntimeError`` traceback:
    both are refused while the command line is parsed (exit code 2)."""
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"alfa": 3}', "unknown key 'alfa'; did you mean 'alpha'"),
        ("[0.5, 0.5]", 'must hold a JSON object such as {"alpha": 0, "beta": 0}, got list'),
        ("null", "got null"),
        ('{"alpha": null}', "alpha takes numbers (one value or one per player), got None"),
        ('{"alpha": {"x": 1}}', "alpha takes numbers"),
        ("{not json", "Expecting property name"),
    ],
)
def test_a_json_profile_is_checked(tmp_path, capsys, content, message):
    """Issue 17: ``{"alfa": 3}`` silently played alpha = 0; a list or ``null`` was an ``AttributeError``, an object
    as a value a ``TypeError``."""
    profile = tmp_path / "profile.json"
    profile.write_text(content)
    assert main([*SIMULATE, "--profile", str(profile)]) == 2
    assert message in one_line_error(capsys)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["simulate", "mean_estimation_v0", "--profile", "alpha=99"], "alpha=99 is outside its allowed range [0, 5]"),
        (["train", "mean_estimation_v0", "--profile", "alpha=1;beta=-3"], "beta=-3 is outside its allowed range"),
        (["check", "participation_v0", "--profile", "u=2"], "u=2 is outside its allowed range [0, 1]"),
    ],
)
def test_a_profile_outside_the_action_space_is_refused_before_any_work(tmp_path, capsys, monkeypatch, command, message):
    """A constant profile outside the action space was refused by the env's first step, after the progress bar had
    started; now while the command line is read: one line, exit code 2, no episode played."""
    import fedgames.agents.rollout

    monkeypatch.setattr(fedgames.agents.rollout, "rollout", lambda *a, **k: pytest.fail("episodes were played"))
    assert main([*command, "--quiet", "--out", str(tmp_path / "out")]) == 2
    assert f"--profile: action of player_0: {message}" in one_line_error(capsys)


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried"),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    ],
)
def test_an_allocation_the_machine_refuses_is_one_line(capsys, monkeypatch, error):
    """A configuration past every estimate that torch or numpy cannot allocate (``samples_per_client=10**12``
    asked torch for 32 TB) is one line and exit code 2, not a traceback; ``--debug`` shows it."""
    import fedgames.eval.agreement

    def allocate(*args, **kwargs):
        raise error

    monkeypatch.setattr(fedgames.eval.agreement, "compare_with_theory", allocate)
    assert main(SIMULATE) == 2
    line = one_line_error(capsys)
    assert line.startswith("fedgames: error: out of memory (") and line.endswith("): use a smaller configuration")
    with pytest.raises(type(error)):
        main([*SIMULATE, "--debug"])


def test_another_runtime_error_is_a_bug_and_keeps_its_traceback(monkeypatch):
    import fedgames.eval.agreement

    def broken(*args, **kwargs):
        raise RuntimeError("a real bug")

    monkeypatch.setattr(fedgames.eval.agreement, "compare_with_theory", broken)
    with pytest.raises(RuntimeError, match="a real bug"):
        main(SIMULATE)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["domino", "--scale", "paper", "--device", "tpu"],
            "reproduce domino does not read --scale, --device (honesty-b3's options)",
        ),
        (
            ["retention-map", "--data-dir", "/x"],
            "reproduce retention-map does not read --data-dir (honesty-b3's options)",
        ),
        (["hysteresis", "--permanent-exit"], "reproduce hysteresis does not read --permanent-exit (domino's option)"),
    ],
)
def test_an_option_the_reproduction_does_not_read_is_refused(tmp_path, capsys, monkeypatch, options, message):
    """Audit of issue 17: ``reproduce domino --device tpu --data-dir /nonexistent`` ran to the end, the options
    ignored; now refused before any work."""
    import fedgames.eval.domino

    monkeypatch.setattr(fedgames.eval.domino, "reproduce", lambda *a, **k: pytest.fail("the computation started"))
    assert main(["reproduce", *options, "--out", str(tmp_path / "out")]) == 2
    assert one_line_error(capsys) == f"fedgames: error: {message}"


def test_an_env_id_that_is_not_a_string_is_a_type_error():
    import fedgames

    for bad in (3, None):
        with pytest.raises(TypeError, match=f"env_id must be a string such as 'mean_estimation_v0', got {bad}"):
            fedgames.make(bad)


# ---------------------------------------------------------------------------------------------------------------
# Results folders
# ---------------------------------------------------------------------------------------------------------------


def test_a_folder_records_its_run_and_a_new_run_leaves_no_stale_file(tmp_path, capsys):
    """The manifest names the command, its options, the seed, the version and every file written (with its
    SHA-256); a ``--no-plot`` rerun removes the figure the first run drew, and nothing that no manifest listed."""
    out = tmp_path / "results"
    assert main([*SIMULATE, "--seed", "3", "--out", str(out)]) == 0
    first = strict((out / MANIFEST).read_text())
    assert first["command"] == ["fedgames", *SIMULATE, "--seed", "3", "--out", str(out)]
    assert first["seed"] == 3 and first["config"]["episodes"] == 2000 and first["fedgames"]
    assert sorted(first["files"]) == ["agreement.csv", "report.json", "report.md", "reward_vs_alpha.png"]
    assert set(first["sha256"]) == set(first["files"]) and first["removed"] == []
    (out / "notes.txt").write_text("mine")
    assert main([*SIMULATE, "--no-plot", "--out", str(out)]) == 0
    second = strict((out / MANIFEST).read_text())
    assert sorted(second["files"]) == ["agreement.csv", "report.json", "report.md"]
    assert second["removed"] == ["reward_vs_alpha.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST, "agreement.csv", "notes.txt", "report.json", "report.md"]
    )
    strict((out / "report.json").read_text())
    capsys.readouterr()


def test_a_failed_run_keeps_the_previous_files_and_checkpoints_are_never_cleaned(tmp_path):
    """A run that fails leaves the earlier manifest and files; sub-folders (``checkpoints/``, B.3's ``runs/``) are
    resume data, which a resumed run does not rewrite: a manifest neither lists nor removes them."""
    with recording(tmp_path, ["first"], {}):
        write_atomic(tmp_path / "report.json", "{}")
        write_atomic(tmp_path / "checkpoints" / "state.json", "{}")
        write_atomic(tmp_path / "runs" / "a0_b0_s0.json", "{}")
    assert strict((tmp_path / MANIFEST).read_text())["files"] == ["report.json"]
    with pytest.raises(RuntimeError), recording(tmp_path, ["second"], {}):
        raise RuntimeError("crash")
    assert strict((tmp_path / MANIFEST).read_text())["command"] == ["first"]
    with recording(tmp_path, ["third"], {}):
        write_atomic(tmp_path / "other.json", "{}")
    assert not (tmp_path / "report.json").exists() and (tmp_path / "checkpoints" / "state.json").exists()
    assert (tmp_path / "runs" / "a0_b0_s0.json").exists()


def test_a_manifest_never_removes_a_file_outside_its_folder(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps({"files": ["../outside.txt", str(outside)]}))
    with recording(folder, ["run"], {}):
        pass
    assert outside.read_text() == "keep"


def test_training_writes_strict_json_and_resumes_into_its_folder(tmp_path, capsys):
    out = tmp_path / "train"
    command = ["train", "mean_estimation_v0", "--rounds", "1", "--steps", "256", "--n-envs", "64"]
    command += ["--eval-episodes", "256", "--quiet", "--out", str(out)]
    assert main(command) == 0
    manifest = strict((out / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["training.json", "training.png"]
    assert strict((out / "training.json").read_text())["history"][0]["round"] == 1
    assert main(command) == 0  # resumes: nothing to train, the checkpoints stay
    assert (out / "checkpoints" / "state.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == [f"player_{i}.round_0001.pt" for i in range(3)]
    capsys.readouterr()
