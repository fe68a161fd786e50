"""``fedgames reproduce honesty-b3``: the honesty-penalty experiment of [H] App. B.3 (SPEC §2 "Experiment").

Writers are split at random into group A (1/3) and group B (2/3); every player of a group uses the group's
aggressiveness (``alpha_A``, ``alpha_B``) with per-tensor noise; ``T`` rounds with 3 random clients per round, the
dataset-size-weighted mean, learning rate 0.06, no projection. The server charges the ``side_payment`` mechanism's
balanced payments ([H] eq. 10 among the ``n_t = 3`` active clients: a client pays ``C ||m_t^i - mbar_t||^2`` and
receives half of the other two's) through the protocol's payment stage at ``C = 1`` (:data:`UNIT_PAYMENT`). Each
run records the test loss ``f(theta_T)`` and each client's total payment ``p^i`` at ``C = 1``; payments are linear
in ``C``, so the reward for any penalty weight follows after the run: ``R_p^i(C) = f(theta_T) - C p^i``, [H] B.3's
``f(theta_T) - sum_t I_t(i) C ||m_t^i - mbar_t||^2 + (1/2) sum_{k != i} sum_t I_t(i) I_t(k) C ||m_t^k - mbar_t||^2``
(the reward is the shared test loss, the ``shared_damage`` utility: an attacker gains from a worse model).

Settings: group-A curves (``alpha_A`` over the grid, ``alpha_B`` in {0, 1}) and group-B curves (``alpha_B`` over
the grid, ``alpha_A`` in {0, 1}), ``runs`` seeds each. The batched engine advances all settings of one seed
together with common random numbers (same initial model, active clients, batches and noise directions; the runs
differ only by their alphas), so the settings of a seed are paired: each curve also gives the reward difference
from its first grid point with the standard error of the paired differences over seeds. Every finished run is
written to ``DIR/runs/`` at once, so an interrupted job resumes without recomputing them (a seed's remaining runs
replay with the same random numbers: with common random numbers a run's draws do not depend on its batch; only
floating-point rounding, which depends on the batch size, differs). Within a seed the runs in progress are
checkpointed every few minutes (``DIR/checkpoints/``: parameters, payment records and the random generator's
state), and a resumed job continues from there exactly as if it had not stopped. Outputs:
``results.json``, ``curves.csv``, ``runs.csv`` and three PNGs.
"""

from __future__ import annotations

import json
import math
import pickle
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fedgames.envs.fedsgd.data import load_leaf_femnist, synthetic_femnist
from fedgames.envs.fedsgd.game import ClientData, FedSGDGame, RunState, resolve_device
from fedgames.envs.fedsgd.models import FemnistCNN
from fedgames.envs.protocol import Protocol
from fedgames.errors import first_line
from fedgames.files import csv_text, json_text, remove_orphans_in, write_atomic
from fedgames.mechanisms.side_payment import DeviationPayment


@dataclass(frozen=True)
class Scale:
    """The budget of one reproduction."""

    writers: int
    mean_samples: float
    sample_sigma: float
    rounds: int
    runs: int
    alphas: tuple[float, ...]
    penalties: tuple[float, ...]
    test_fraction: float = 0.1


SCALES = {
    "tiny": Scale(
        writers=24,
        mean_samples=48,
        sample_sigma=0.35,
        rounds=100,
        runs=3,
        alphas=(0.0, 4.5, 9.0),
        penalties=(0.0, 1e-4, 1e-3, 1e-2),
        test_fraction=0.5,
    ),
    "small": Scale(
        writers=120,
        mean_samples=60,
        sample_sigma=0.35,
        rounds=1500,
        runs=5,
        alphas=(0.0, 1.0, 3.0, 6.0, 9.0),
        penalties=(0.0, 5e-5, 2e-4, 1e-3),
    ),
    "paper": Scale(
        writers=3597,
        mean_samples=226,
        sample_sigma=0.35,
        rounds=10650,
        runs=10,
        alphas=tuple(float(a) for a in range(10)),
        penalties=(0.0, 5e-5, 1e-4, 2e-4),
    ),
}
"""``tiny``: the whole pipeline in minutes on 2 CPU cores (100 rounds: the CNN gets clearly above chance, far
from trained); ``small``: hours on a CPU, minutes on a GPU; ``paper``: [H]'s T = 10650 with 10 runs per setting,
for a GPU (with real FEMNIST from ``data_dir``, or the synthetic writers). Synthetic writer sizes follow real
FEMNIST's spread (LEAF: mean 227, standard deviation 89 samples per writer, a coefficient of variation 0.39, hence a
lognormal log-std 0.35): with a heavier tail, a few large writers dominate the size-weighted mean, deviate little
from it and collect the others' payments, which hides the penalty's effect on a small population."""

GROUP_A_SHARE = 1 / 3
LEARNING_RATE = 0.06
CLIENTS_PER_ROUND = 3
UNIT_PAYMENT = DeviationPayment(C=1.0, balanced=True)
"""The ``side_payment`` mechanism's balanced rule ([H] eq. 10) at ``C = 1``: what every run is charged."""


def unit_payment_protocol(game: FedSGDGame) -> Protocol:
    """``game``'s plain protocol with the balanced side payment at ``C = 1`` as its payment stage."""
    return game.protocol().with_stage(UNIT_PAYMENT, payment_rules=(UNIT_PAYMENT,))


def settings(scale: Scale) -> list[tuple[float, float]]:
    """``(alpha_A, alpha_B)`` pairs: the group-A curves and the group-B curves (shared points once)."""
    pairs = [(a, b) for b in (0.0, 1.0) for a in scale.alphas] + [(a, b) for a in (0.0, 1.0) for b in scale.alphas]
    return list(dict.fromkeys(pairs))


def _run_name(alpha_a: float, alpha_b: float, seed: int) -> str:
    return f"a{alpha_a:g}_b{alpha_b:g}_s{seed}.json"


def reproduce(
    scale: str | Scale,
    out: str | Path,
    data_dir: str | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    precision: str = "tf32",
    compile: bool | str = False,
    checkpoint_minutes: float = 5.0,
) -> dict[str, Any]:
    """Run (or resume) the B.3 experiment at ``scale`` into ``out``; return ``results.json``'s content.

    ``device``: ``auto`` (CUDA when available, else the CPU), ``cpu`` or ``cuda``. ``precision``: ``"tf32"``
    (default) uses TF32 tensor cores on CUDA, ``"float32"`` does not, ``"bfloat16"`` computes the client gradients
    under bf16 autocast (a GPU's fast path); ``compile`` compiles the rounds
    (:class:`~fedgames.envs.fedsgd.game.FedSGDGame`). ``checkpoint_minutes``: how often the runs in progress are
    saved (``inf``: never).
    """
    if isinstance(scale, str) and scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    if not checkpoint_minutes > 0:
        raise ValueError(f"checkpoint_minutes must be > 0 (inf: never), got {checkpoint_minutes}")
    budget = SCALES[scale] if isinstance(scale, str) else scale
    out = Path(out)
    for folder in ("checkpoints", "runs"):  # what a save killed mid-write left (its file may never be written again)
        remove_orphans_in(out / folder)
    device = str(resolve_device(device))
    game, in_a, test_x, test_y = build(budget, data_dir, device, seed, precision, compile)
    for run in range(budget.runs):
        pending = [(a, b, run) for a, b in settings(budget) if not (out / "runs" / _run_name(a, b, run)).exists()]
        if pending:
            generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + run)
            _simulate(
                game, pending, in_a, budget.rounds, test_x, test_y, out, generator, progress, 60 * checkpoint_minutes
            )
    return summarize(out, budget, in_a, seed, data_dir)


def build(
    scale: Scale,
    data_dir: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    precision: str = "tf32",
    compile: bool | str = False,
) -> tuple[FedSGDGame, np.ndarray, torch.Tensor, torch.Tensor]:
    """The experiment's game (FEMNIST CNN, 3 clients per round, per-tensor noise, size-weighted mean, lr 0.06), the
    group-A mask over its clients and the held-out data."""
    dataset = (
        load_leaf_femnist(data_dir, max_writers=scale.writers)
        if data_dir
        else synthetic_femnist(
            n_writers=scale.writers, seed=seed, mean_samples=scale.mean_samples, sample_sigma=scale.sample_sigma
        )
    )
    train, test = dataset.split(scale.test_fraction, seed=seed)
    clients = ClientData.from_arrays(train.x, train.y, train.writer, train.n_writers, device=device)
    game = FedSGDGame(
        FemnistCNN(),
        clients,
        active=CLIENTS_PER_ROUND,
        lr_value=LEARNING_RATE,
        noise_norm="per_tensor",
        weighting="size",
        alpha_max=max(scale.alphas + (1.0,)),
        precision=precision,
        compile=compile,
    )
    groups = np.random.default_rng(seed).permutation(clients.n_clients)
    in_a = np.zeros(clients.n_clients, dtype=bool)
    in_a[groups[: max(1, round(GROUP_A_SHARE * clients.n_clients))]] = True
    return game, in_a, torch.as_tensor(test.x, device=device), torch.as_tensor(test.y, device=device)


def _simulate(
    game: FedSGDGame,
    jobs: list[tuple[float, float, int]],
    in_a: np.ndarray,
    rounds: int,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    out: Path,
    generator: torch.Generator,
    progress: bool,
    checkpoint_seconds: float,
) -> None:
    """Advance one seed's runs together (common random numbers), from its checkpoint if it has one for these
    ``jobs``, saving one every ``checkpoint_seconds``; write each finished run to ``out/runs``."""
    device = test_x.device
    checkpoint = out / "checkpoints" / f"seed_{jobs[0][2]}.pt"
    state = _resume(checkpoint, jobs, rounds, generator, device) or game.start(len(jobs), generator, common=True)
    mask = torch.as_tensor(in_a, device=device)
    alpha = torch.stack([torch.where(mask, a, b) for a, b, _ in jobs]).float()
    protocol = unit_payment_protocol(game)
    saved = time.monotonic()
    for _ in tqdm(
        range(state.round, rounds),
        initial=state.round,
        total=rounds,
        desc=f"{len(jobs)} runs",
        disable=not progress,
        leave=False,
    ):
        game.play_round(state, alpha, generator, protocol)
        if time.monotonic() - saved >= checkpoint_seconds and state.round < rounds:
            snapshot = {"jobs": jobs, "rounds": rounds, "state": state.state_dict(), "generator": generator.get_state()}
            write_atomic(checkpoint, lambda tmp, snapshot=snapshot: torch.save(snapshot, tmp))
            saved = time.monotonic()
    metrics = game.evaluate(state.theta, test_x, test_y)
    for k, (a, b, s) in enumerate(jobs):
        record = {
            "alpha_A": a,
            "alpha_B": b,
            "seed": s,
            "diverged": bool(state.diverged[k]),
            "test_loss": float(metrics["loss"][k]),
            "test_accuracy": float(metrics["accuracy"][k]),
            "payment": state.payments[k].tolist(),
        }
        write_atomic(out / "runs" / _run_name(a, b, s), json_text(record))
    checkpoint.unlink(missing_ok=True)


def _resume(
    checkpoint: Path,
    jobs: list[tuple[float, float, int]],
    rounds: int,
    generator: torch.Generator,
    device: torch.device,
) -> RunState | None:
    """The runs saved in ``checkpoint`` if it holds these ``jobs`` of ``rounds`` rounds (then ``generator``
    continues its stream); ``None`` for none, or another job's."""
    if not checkpoint.exists():
        return None
    try:  # data only (weights_only: tensors and plain containers), whose shapes the run's own state checks
        record = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if [tuple(job) for job in record["jobs"]] != jobs or record["rounds"] != rounds:
            return None
        state = dict(record["state"])
        if "paid" in state:  # saved before the payments went through the protocol: the same net payment at C = 1
            state["payments"] = state.pop("paid") - state.pop("received")
        resumed = RunState.from_state_dict(state, device)
        generator.set_state(record["generator"])
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, TypeError, KeyError, IndexError) as error:
        raise ValueError(
            f"{checkpoint}: not a checkpoint of this reproduction ({first_line(error)}); delete it to rerun its runs"
        ) from None
    return resumed


def _read_run(path: Path, n_clients: int) -> dict[str, Any]:
    """A run record as :func:`fedgames.files.json_text` wrote it, with each ``null`` (a non-finite number of a
    diverged run) back as NaN (``ValueError`` naming the file where it is not one, or of another number of
    clients)."""

    def number(value: Any) -> Any:
        return math.nan if value is None else [number(v) for v in value] if isinstance(value, list) else value

    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: unreadable run record ({error}); delete it to rerun the run") from None
    record = {key: number(value) for key, value in data.items()} if isinstance(data, dict) else None
    if record is None or not _well_formed(record):
        raise ValueError(
            f"{path}: not a run record (an object with alpha_A, alpha_B, seed, diverged, test_loss, test_accuracy "
            "and the clients' payment); delete it to rerun the run"
        )
    clients = len(_unit_payments(record))
    if clients != n_clients:
        raise ValueError(
            f"{path}: a run of {clients} clients, this reproduction has {n_clients}; delete it to rerun the run"
        )
    return {key: value for key, value in record.items() if key != "non_finite"}


def _well_formed(record: dict[str, Any]) -> bool:
    """Whether ``record`` has every field of a run record, of its type (numbers, a bool, a list of numbers)."""

    def real(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    payments = [record.get(k) for k in (("payment",) if "payment" in record else ("paid", "received"))]
    return (
        all(real(record.get(k)) for k in ("alpha_A", "alpha_B", "test_loss", "test_accuracy"))
        and isinstance(record.get("seed"), int)
        and isinstance(record.get("diverged"), bool)
        and all(isinstance(p, list) and p and all(real(v) for v in p) for p in payments)
    )


def _unit_payments(record: dict[str, Any]) -> np.ndarray:
    """A run's per-client payments at ``C = 1`` (a record written before they were charged through the protocol
    holds the squared deviations each client paid and received instead: their difference is the same payment)."""
    if "payment" in record:
        return np.asarray(record["payment"])
    return np.asarray(record["paid"]) - np.asarray(record["received"])


def _healthy(record: dict[str, Any]) -> bool:
    """Whether a run did not diverge: not flagged by the game's numerical health (:mod:`~fedgames.envs.health`),
    and its held-out loss and payments finite (a record with NaN there is left out like a flagged one)."""
    numbers = np.concatenate([[record["test_loss"], record["test_accuracy"]], _unit_payments(record)])
    return not record["diverged"] and bool(np.isfinite(numbers).all())


def _group_rewards(record: dict[str, Any], members: np.ndarray, C: float) -> float:
    """Mean over a group's players of ``R_p^i(C) = f(theta_T) - C p^i`` in one run."""
    return float(np.mean(record["test_loss"] - C * _unit_payments(record)[members]))


def _mean_se(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Per row: the mean over the finite entries and its standard error (NaN where too few)."""
    means, errors = [], []
    for row in values:
        finite = row[np.isfinite(row)]
        means.append(float(finite.mean()) if finite.size else math.nan)
        errors.append(float(finite.std(ddof=1) / np.sqrt(finite.size)) if finite.size > 1 else math.nan)
    return means, errors


def summarize(out: Path, scale: Scale, in_a: np.ndarray, seed: int, data_dir: str | None) -> dict[str, Any]:
    """Curves with standard errors over runs, written as ``results.json``, CSVs and PNGs."""
    records = {
        (r["alpha_A"], r["alpha_B"], r["seed"]): r
        for r in (_read_run(p, len(in_a)) for p in sorted((out / "runs").glob("*.json")))
    }

    def curve(group: str, fixed: float, C: float) -> dict[str, Any]:
        members = in_a if group == "A" else ~in_a
        rewards = np.full((len(scale.alphas), scale.runs), np.nan)  # NaN: a diverged run
        for i, alpha in enumerate(scale.alphas):
            key = (alpha, fixed) if group == "A" else (fixed, alpha)
            for s in range(scale.runs):
                if _healthy(records[key + (s,)]):
                    rewards[i, s] = _group_rewards(records[key + (s,)], members, C)
        means, errors = _mean_se(rewards)
        diff_means, diff_errors = _mean_se(rewards - rewards[:1])  # paired by seed (common random numbers)
        other = "alpha_B" if group == "A" else "alpha_A"
        return {
            "group": group,
            other: fixed,
            "C": C,
            "alpha": list(scale.alphas),
            "reward_mean": means,
            "reward_se": errors,
            "diff_mean": diff_means,
            "diff_se": diff_errors,
            "runs": np.isfinite(rewards).sum(1).tolist(),
            "diverged": (~np.isfinite(rewards)).sum(1).tolist(),
        }  # per point: diverged runs left out

    curves = [curve(group, fixed, C) for group in ("A", "B") for fixed in (0.0, 1.0) for C in scale.penalties]
    honest = [records[(0.0, 0.0, s)] for s in range(scale.runs) if _healthy(records[(0.0, 0.0, s)])]
    accuracy = [r["test_accuracy"] for r in honest]
    reference_C = scale.penalties[len(scale.penalties) // 2]
    honest_penalties = [reference_C * float(p) for r in honest for p in _unit_payments(r)]
    diverged = sum(not _healthy(r) for r in records.values())
    results = {
        "experiment": "honesty-b3",
        "scale": asdict(scale),
        "seed": seed,
        "data": data_dir or "synthetic FEMNIST-like writers",
        "machine": platform.platform(),
        "clean_accuracy": {
            "mean": float(np.mean(accuracy)) if accuracy else math.nan,
            "se": float(np.std(accuracy, ddof=1) / np.sqrt(len(accuracy))) if len(accuracy) > 1 else math.nan,
            "chance": 1 / 62,
            "runs": len(accuracy),
        },
        "honest_penalty": {
            "C": reference_C,
            "quantiles": dict(
                zip(
                    ("50%", "90%", "98%"),
                    np.quantile(honest_penalties, [0.5, 0.9, 0.98]).tolist() if honest_penalties else [math.nan] * 3,
                )
            ),
        },
        "diverged_runs": diverged,
        "notes": _divergence_notes(diverged, len(records), scale.runs - len(honest), curves),
        "curves": curves,
    }
    write_atomic(out / "results.json", json_text(results))
    write_atomic(out / "curves.csv", _curves_csv(curves))
    write_atomic(out / "runs.csv", _runs_csv(records.values()))
    _figures(out, curves, honest_penalties, reference_C)
    return results


def _divergence_notes(diverged: int, runs: int, honest_diverged: int, curves: list[dict[str, Any]]) -> list[str]:
    """The report's notes on diverged runs (none when none diverged): how many, what they are left out of, and the
    points of the curves that they leave without a mean."""
    if not diverged:
        return []
    notes = [
        f"{diverged} of {runs} runs diverged (a non-finite parameter, loss or payment) and are left out of the "
        "curves' means (each point's runs and diverged give the counts)"
        + (f", the clean accuracy and the honest penalties ({honest_diverged} honest runs)" if honest_diverged else "")
    ]
    empty = [
        f"group {c['group']}, {'alpha_B' if c['group'] == 'A' else 'alpha_A'}="
        f"{c.get('alpha_B', c.get('alpha_A')):g}, C={c['C']:g}: alpha={alpha:g}"
        for c in curves
        for alpha, kept in zip(c["alpha"], c["runs"])
        if kept == 0
    ]
    if empty:
        notes.append("no run left, no mean (null): " + "; ".join(empty))
    return notes


_PER_ALPHA = ("alpha", "reward_mean", "reward_se", "diff_mean", "diff_se", "runs", "diverged")


def _curves_csv(curves: list[dict[str, Any]]) -> str:
    rows = [
        {
            "group": c["group"],
            "other_alpha": c.get("alpha_B", c.get("alpha_A")),
            "C": c["C"],
            **dict(zip(_PER_ALPHA, values)),
        }
        for c in curves
        for values in zip(*(c[key] for key in _PER_ALPHA))
    ]
    return csv_text(rows, ("group", "other_alpha", "C", *_PER_ALPHA))


def _runs_csv(records: Any) -> str:
    fields = ("alpha_A", "alpha_B", "seed", "diverged", "test_loss", "test_accuracy")
    return csv_text([{key: r[key] for key in fields} for r in records], fields)


def _figures(out: Path, curves: list[dict[str, Any]], honest_penalties: list[float], reference_C: float) -> None:
    from matplotlib.figure import Figure

    for group, fixed_name, filename in (
        ("A", "alpha_B", "reward_vs_alpha_A.png"),
        ("B", "alpha_A", "reward_vs_alpha_B.png"),
    ):
        penalties = sorted({c["C"] for c in curves})
        fig = Figure(figsize=(3.2 * len(penalties), 6), layout="tight")
        axes = fig.subplots(2, len(penalties), sharey=False, squeeze=False)
        for row, fixed in zip(axes, (0.0, 1.0)):  # one panel per C: each on its own scale
            for ax, C in zip(row, penalties):
                c = next(c for c in curves if c["group"] == group and c[fixed_name] == fixed and c["C"] == C)
                ax.errorbar(
                    c["alpha"],
                    c["reward_mean"],
                    yerr=c["reward_se"],
                    marker="o",
                    capsize=3,
                    label="mean ± SE over runs",
                )
                paired = np.asarray(c["reward_mean"][:1] * len(c["alpha"])) + np.asarray(c["diff_mean"])
                ax.errorbar(
                    c["alpha"],
                    paired,
                    yerr=c["diff_se"],
                    fmt="none",
                    ecolor="black",
                    capsize=5,
                    label="± SE of the paired difference",
                )
                ax.set(
                    xlabel=f"alpha_{group}",
                    ylabel=f"mean reward of group {group}",
                    title=f"C = {C:g}, {fixed_name} = {fixed:g}",
                )
            row[0].legend(fontsize="x-small")
        write_atomic(out / filename, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=110))
    fig = Figure(figsize=(5, 3.5), layout="tight")
    ax = fig.subplots()
    ax.hist(honest_penalties, bins=30)
    ax.set(
        xlabel=f"net penalty of an honest player at C={reference_C:g}",
        ylabel="players x runs",
        title="penalties under honesty",
    )
    write_atomic(out / "honest_penalties.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
