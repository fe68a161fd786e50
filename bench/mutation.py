"""Mutation testing of the closed forms and the mechanisms with cosmic-ray (issue 17, item 7; not run in CI).

Usage (from the repository root; ``pip install cosmic-ray`` first)::

    python bench/mutation.py                         # every module below, into build/mutation/
    python bench/mutation.py --modules envs/protocol.py mechanisms/side_payment.py
    python bench/mutation.py --sample 0.3 --seed 0   # a random 30% of each module's mutants
    python bench/mutation.py --rerun-survivors       # again, over the survivors of the last run only

What it does, and why:

- The mutants are made in a **detached git worktree** of ``HEAD`` (a temporary folder), never in this checkout:
  cosmic-ray edits the module's file in place. In the worktree ``fedgames/<layer>`` are symbolic links to the
  layers (``envs``, ``mechanisms``, ...), so the tests there import the worktree's (mutated) files, not the
  editable install's; the script checks it. ``--tests-from`` copies another checkout's ``tests/`` over it (to
  measure tests not committed yet).
- Each module is mutated by cosmic-ray's ``core`` operators, restricted to one alternative per operator
  (:data:`OPERATORS`: ``+``<->``-``, ``*``<->``/``, ``**`` -> ``*``, each comparison to its boundary twin or its
  negation, numbers, ``not``, ``and``/``or``, ``True``/``False``, loops run zero times, decorators removed). The
  other alternatives (``+`` -> ``<<``, ``|``, ``%``, ...) are, on floats and arrays, type errors that any test
  kills; they would only inflate the score.
- Each mutant is tested by the module's fast tests only (:data:`MODULES`), with ``pytest -x``. The tests run in a
  process forked from a server that has already imported numpy, scipy, torch, PettingZoo and pytest (but not
  fedgames), which makes a mutant cost its tests, not ~5 s of imports; byte-code caching is off, so a mutated
  file is always read from its source.
- A mutant is *killed* when the tests fail (or time out), *survived* when they pass. The report
  (``build/mutation/report.json`` and ``survivors.md``) gives the score per module and every survivor's diff, to be
  classified by hand as equivalent (no observable change) or as a missing test (see docs/testing.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("envs", "mechanisms", "agents", "train", "eval")

OPERATORS = (
    "NumberReplacer",
    "ReplaceBinaryOperator_Add_Sub",
    "ReplaceBinaryOperator_Sub_Add",
    "ReplaceBinaryOperator_Mul_Div",
    "ReplaceBinaryOperator_Div_Mul",
    "ReplaceBinaryOperator_Pow_Mul",
    "ReplaceComparisonOperator_Lt_LtE",
    "ReplaceComparisonOperator_LtE_Lt",
    "ReplaceComparisonOperator_Gt_GtE",
    "ReplaceComparisonOperator_GtE_Gt",
    "ReplaceComparisonOperator_Eq_NotEq",
    "ReplaceComparisonOperator_NotEq_Eq",
    "ReplaceComparisonOperator_Is_IsNot",
    "ReplaceComparisonOperator_IsNot_Is",
    "ReplaceComparisonOperator_In_NotIn",
    "ReplaceComparisonOperator_NotIn_In",
    "ReplaceUnaryOperator_Delete_USub",
    "ReplaceUnaryOperator_Delete_Not",
    "AddNot",
    "ReplaceTrueWithFalse",
    "ReplaceFalseWithTrue",
    "ReplaceAndWithOr",
    "ReplaceOrWithAnd",
    "ZeroIterationForLoop",
    "RemoveDecorator",
    "ReplaceBreakWithContinue",
    "ReplaceContinueWithBreak",
)
"""The cosmic-ray ``core/`` operators kept (one alternative per operator)."""

SLOW_PARTICIPATION = "not symmetric_manipulation_is_a_best_reply and not coalition_internalises"
MODULES: dict[str, list[str]] = {
    "envs/protocol.py": ["tests/test_protocol.py", "tests/test_mean_estimation_env.py", "tests/test_bad_input.py"],
    "envs/fedsgd/theory.py": [
        "tests/test_fedsgd_theory.py",
        "tests/test_fedsgd_bound_by_hand.py",
        "tests/test_fedsgd_nash.py::test_thm_6_1_bound_formula",
        "tests/test_fedsgd_nash.py::test_thm_6_1_bound_bad_input",
    ],
    "envs/mean_estimation/theory.py": [
        "tests/test_theory.py",
        "tests/test_agents.py",
        "tests/test_grid_oracle.py",
        "tests/test_predicted_equilibrium.py",
    ],
    "envs/participation/theory.py": [
        "tests/test_participation_theory.py",
        "tests/test_participation_closed_forms.py",
        "tests/test_participation_theory_values.py",
        "-k",
        SLOW_PARTICIPATION,
    ],
    "envs/participation/metric_theory.py": ["tests/test_participation_metric.py", "-k", "not reproduce and not cli"],
    "mechanisms/aggregators.py": [
        "tests/test_aggregators.py",
        "tests/test_aggregators_torch.py",
        "tests/test_aggregator_parameters.py",
    ],
    "mechanisms/audit.py": [
        "tests/test_participation_env.py",
        "tests/test_participation_detection.py",
        "tests/test_audit_exact.py",
        "-k",
        "audit or test_participation_detection",
    ],
    "mechanisms/base.py": ["tests/test_mean_estimation_env.py", "tests/test_registry.py"],
    "mechanisms/bounded_attack.py": ["tests/test_mean_estimation_env.py", "tests/test_bad_input.py"],
    "mechanisms/noisy_response.py": ["tests/test_mean_estimation_env.py", "tests/test_theory.py"],
    "mechanisms/robust_aggregation.py": ["tests/test_mean_estimation_env.py", "tests/test_bad_input.py"],
    "mechanisms/side_payment.py": ["tests/test_protocol.py", "tests/test_theory.py"],
    "mechanisms/specs.py": ["tests/test_registry.py", "tests/test_bad_input.py"],
}
"""Each mutated module and the fast tests that judge its mutants."""

PREIMPORTS = ("numpy", "scipy.stats", "scipy.optimize", "scipy.special", "torch", "gymnasium", "pettingzoo", "pytest")


# ---------------------------------------------------------------------------------------------------------------
# The test server (forks one pytest per mutant) and its client (cosmic-ray's test command)
# ---------------------------------------------------------------------------------------------------------------


def serve(sock_path: str, root: str, timeout: float) -> None:
    """Answer each connection's pytest arguments with the exit code of a pytest forked for them."""
    os.chdir(root)
    sys.path.insert(0, root)
    sys.dont_write_bytecode = True
    for name in PREIMPORTS:
        __import__(name)
    assert not any(m == "fedgames" or m.startswith("fedgames.") for m in sys.modules), "fedgames pre-imported"
    import pytest

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    while True:
        conn, _ = server.accept()
        with conn:
            args = json.loads(conn.makefile().readline())
            if args == ["quit"]:
                return
            pid = os.fork()
            if pid == 0:
                server.close()
                signal.alarm(int(timeout))
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                os.dup2(null, 2)
                code = pytest.main(["-q", "-x", "-p", "no:cacheprovider", *args])
                os._exit(int(code))
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            conn.sendall(f"{code}\n".encode())


def ask(sock_path: str, args: list[str]) -> int:
    """Send ``args`` to the server; its pytest's exit code (negative: killed by that signal)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(sock_path)
        conn.sendall((json.dumps(args) + "\n").encode())
        return int(conn.makefile().readline())


def changed_lines(module: str) -> set[int]:
    """The lines of ``module`` (as committed) that the mutant on disk changes (``git diff -U0``)."""
    diff = subprocess.run(["git", "diff", "-U0", "--", module], capture_output=True, text=True, check=True).stdout
    lines = set()
    for hunk in (line for line in diff.splitlines() if line.startswith("@@")):
        start, _, count = hunk.split()[1][1:].partition(",")
        lines.update(range(int(start), int(start) + max(int(count or 1), 1)))
    return lines


def covering_tests(module: str, coverage_map: str, tests: list[str]) -> list[str] | None:
    """The tests that run the mutated lines (from :func:`line_coverage`'s map): ``tests`` when a line runs at import
    only (a ``def``, a default, a constant), ``None`` when no test runs any of them."""
    runs: dict[str, list[str]] = json.loads(Path(coverage_map).read_text())
    hits = [runs.get(str(line)) for line in changed_lines(module)]
    if all(h is None for h in hits):
        return None
    if any(h == [] for h in hits):
        return tests
    return sorted({t for h in hits if h for t in h})


def line_coverage(root: Path, module: str, tests: list[str], out: Path) -> Path:
    """Which tests run each line of ``module``: ``{line: [test node ids]}`` (``[]``: run at import only), by one
    run of the tests under coverage.py with its ``test_function`` contexts."""
    name = module.replace("/", "_").removesuffix(".py")
    rc, data_file = out / f"{name}.coveragerc", out / f"{name}.coverage"
    rc.write_text("[run]\ndynamic_context = test_function\n")
    command = [sys.executable, "-m", "coverage", "run", f"--rcfile={rc}", f"--data-file={data_file}"]
    command += [f"--include=*/{module}", "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(command, cwd=root, check=True, capture_output=True, env=env)
    import coverage

    data = coverage.CoverageData(str(data_file))
    data.read()
    (measured,) = [f for f in data.measured_files() if f.endswith(module)]
    runs = {}
    for line, contexts in data.contexts_by_lineno(measured).items():
        names = []
        for context in contexts:
            if context:  # "test_module.test_function" or "test_module.Class.test_method"
                test_module, _, qualname = context.partition(".")
                names.append(f"tests/{test_module}.py::" + qualname.replace(".", "::"))
        runs[str(line)] = sorted(set(names))
    path = out / f"{name}.lines.json"
    path.write_text(json.dumps(runs))
    data_file.unlink()
    return path


# ---------------------------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------------------------


def make_worktree(path: Path, tests_from: Path | None) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), "HEAD"], check=True)
    for layer in LAYERS:
        (path / "fedgames" / layer).symlink_to(f"../{layer}")
    if tests_from is not None:
        shutil.rmtree(path / "tests")
        shutil.copytree(tests_from / "tests", path / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    check = "import fedgames.envs.protocol as p; print(p.__file__)"
    where = subprocess.run([sys.executable, "-c", check], cwd=path, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(path)), f"the worktree imports {where.stdout.strip()}"


def session_config(module: str, tests: list[str], sock: str, coverage_map: Path, timeout: float) -> str:
    client = [sys.executable, str(Path(__file__).resolve()), "ask", "--socket", sock]
    client = shlex.join(client + ["--module", module, "--coverage-map", str(coverage_map), "--", *tests])
    keep = "|".join(OPERATORS)
    return "\n".join(
        [
            "[cosmic-ray]",
            f'module-path = "{module}"',
            f"timeout = {timeout}",
            "excluded-modules = []",
            f"test-command = {json.dumps(client)}",
            "[cosmic-ray.distributor]",
            'name = "local"',
            "[cosmic-ray.filters.operators-filter]",
            f'exclude-operators = ["^(?!core/({keep})$)"]',
            "",
        ]
    )


def sample_out(db: Path, fraction: float, seed: int) -> None:
    """Mark all but a random ``fraction`` of the pending mutants as skipped (a documented sample)."""
    con = sqlite3.connect(db)
    pending = [
        r[0]
        for r in con.execute(
            "select job_id from work_items where job_id not in (select job_id from work_results) order by job_id"
        )
    ]
    drop = random.Random(seed).sample(pending, round(len(pending) * (1 - fraction)))
    con.executemany(
        "insert into work_results (worker_outcome, output, test_outcome, diff, job_id) values ('SKIPPED', null, null, "
        "null, ?)",
        [(j,) for j in drop],
    )
    con.commit()
    con.close()


def reset_survivors(db: Path) -> int:
    con = sqlite3.connect(db)
    count = con.execute("delete from work_results where test_outcome = 'SURVIVED'").rowcount
    con.commit()
    con.close()
    return count


def summarise(db: Path) -> dict:
    con = sqlite3.connect(db)
    rows = con.execute(
        "select s.operator_name, s.start_pos_row, r.test_outcome, r.worker_outcome, r.diff, s.job_id from "
        "mutation_specs s join work_results r on s.job_id = r.job_id"
    ).fetchall()
    con.close()
    tested = [r for r in rows if r[3] != "SKIPPED"]
    killed = sum(r[2] == "KILLED" for r in tested)
    survivors = [
        {"job": r[5], "operator": r[0].removeprefix("core/"), "line": r[1], "diff": r[4]}
        for r in sorted(tested, key=lambda r: r[1])
        if r[2] == "SURVIVED"
    ]
    incompetent = sum(r[2] not in ("KILLED", "SURVIVED") for r in tested)
    return {"tested": len(tested), "killed": killed, "survived": len(survivors), "other": incompetent,
            "survivors": survivors}  # fmt: skip


def run_module(module: str, tests: list[str], work: Path, out: Path, args: argparse.Namespace) -> dict:
    sock = str(work / "server.sock")
    Path(sock).unlink(missing_ok=True)  # the previous module's server's
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", "--socket", sock, "--root", str(work), "--timeout", str(args.timeout)],
        env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        while not os.path.exists(sock):
            time.sleep(0.2)
        baseline = ask(sock, tests)
        if baseline != 0:
            raise SystemExit(f"{module}: the unmutated tests fail (pytest exit {baseline})")
        name = module.replace("/", "_").removesuffix(".py")
        db, config = out / f"{name}.sqlite", out / f"{name}.toml"
        coverage_map = line_coverage(work, module, tests, out)
        config.write_text(session_config(module, tests, sock, coverage_map, args.timeout))
        env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
        if args.rerun_survivors and db.exists():
            print(f"{module}: {reset_survivors(db)} survivors again")
        else:
            db.unlink(missing_ok=True)
            subprocess.run(["cosmic-ray", "init", str(config), str(db)], cwd=work, check=True, env=env)
            subprocess.run(["cr-filter-operators", str(db), str(config)], cwd=work, check=True, env=env)
            if args.sample < 1:
                sample_out(db, args.sample, args.seed)
        start = time.time()
        subprocess.run(["cosmic-ray", "exec", str(config), str(db)], cwd=work, check=True, env=env)
        summary = summarise(db) | {"tests": tests, "seconds": round(time.time() - start)}
    finally:
        if os.path.exists(sock):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(sock)
                conn.sendall(b'["quit"]\n')
        server.wait()
    print(f"{module}: {summary['killed']} killed / {summary['tested']} tested, {summary['survived']} survived")
    return summary


def write_report(out: Path, results: dict[str, dict]) -> None:
    old = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    results = old | results
    (out / "report.json").write_text(json.dumps(results, indent=1))
    lines = ["# Surviving mutants", ""]
    for module, r in results.items():
        lines += [f"## {module}: {r['killed']} killed of {r['tested']} ({r['survived']} survived)", ""]
        for s in r["survivors"]:
            head = f"### line {s['line']} {s['operator']} (job {s['job']})"
            lines += [head, "", "```diff", s["diff"].strip(), "```", ""]
    (out / "survivors.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("serve")
    s.add_argument("--socket", required=True)
    s.add_argument("--root", required=True)
    s.add_argument("--timeout", type=float, default=120)
    a = sub.add_parser("ask")
    a.add_argument("--socket", required=True)
    a.add_argument("--module")
    a.add_argument("--coverage-map")
    a.add_argument("tests", nargs="*")
    parser.add_argument("--modules", nargs="*", default=list(MODULES), help="modules to mutate (keys of MODULES)")
    parser.add_argument("--sample", type=float, default=1.0, help="fraction of each module's mutants to test")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant before it counts killed")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "mutation")
    parser.add_argument("--tests-from", type=Path, default=None, help="copy this checkout's tests/ into the worktree")
    parser.add_argument("--rerun-survivors", action="store_true", help="test only the last run's survivors again")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.socket, args.root, args.timeout)
        return
    if args.command == "ask":
        tests = covering_tests(args.module, args.coverage_map, args.tests) if args.module else args.tests
        sys.exit(0 if tests is None or ask(args.socket, tests) == 0 else 1)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown modules {unknown}; choose from {list(MODULES)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # killed: still remove the worktree
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fedgames-mutation-")) / "tree"
    make_worktree(work, args.tests_from)
    try:
        results = {m: run_module(m, MODULES[m], work, args.out, args) for m in args.modules}
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work)], check=False)
        shutil.rmtree(work.parent, ignore_errors=True)
    write_report(args.out, results)


if __name__ == "__main__":
    main()
