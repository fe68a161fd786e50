"""How many rounds a server needs to detect gaming ([G] §10, Fig. 7 as SPEC §8): the GLS test's exact power
against the number of rounds ``T`` for several challenge rates ``pi``, beside simulated rejection rates.

``fedgames reproduce detection-power --out DIR``. For every manipulation ``u1``, ``pi`` and ``T`` of a grid: the
exact power (:func:`~fedgames.envs.participation.detection.power`, the binomial mixture over the challenge rounds of
[G] Thm 10.2) and the rejection rate of the test over simulated clients
(:func:`~fedgames.envs.participation.detection.simulate_rejections`) with its binomial standard error; for every
``u1`` and ``pi`` the normal-approximation sample size ``T*`` and the tail bound's. The default model is aligned
(``delta = gamma q0``): without challenges gaming cannot be detected at all ([G] Prop. 10.1, power ``alpha`` at
every ``T``), and each challenge round adds ``(gamma q0)^2 / sigma_h^2`` of information. Writes ``results.json``,
``power.csv`` and ``detection_power.png`` (power against ``T``, one colour per ``pi`` and one line style per
``u1``: lines exact, points simulated with 2-standard-error bars; ``T*`` and the tail bound against ``pi``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedgames.envs.participation import detection
from fedgames.files import csv_text, json_text, write_atomic
from fedgames.validation import integer, real

DETECTION_MODEL: dict[str, float] = {
    "delta": 0.5,
    "gamma": 0.5,
    "q0": 1.0,
    "score_noise": 1.0,
    "challenge_noise": 0.5,
}
"""Aligned (``delta = gamma q0``): ``I(pi) = pi (gamma q0)^2 / sigma_h^2 = pi``."""

PIS = (0.0, 0.1, 0.25, 0.5, 1.0)
US = (0.3, 0.6)
ROUNDS = (1, 2, 5, 10, 20, 40, 80, 160)


def reproduce(
    out: str | Path,
    pis: Sequence[float] = PIS,
    rounds: Sequence[int] = ROUNDS,
    us: Sequence[float] = US,
    alpha: float = 0.05,
    beta: float = 0.2,
    runs: int = 4000,
    seed: int = 0,
    model: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Run the experiment and write its files to ``out``; returns what ``results.json`` holds.

    Args:
        out: the results folder.
        pis: challenge rates, each in ``[0, 1]``.
        rounds: numbers of rounds ``T`` (each ``>= 1``).
        us: the manipulations ``u1`` the test is to detect, each in ``(0, 1]``.
        alpha, beta: the test's level and the miss rate the sample sizes aim at, each in ``(0, 1)``.
        runs: simulated clients per point (``>= 2``).
        seed: seeds the simulations (one stream per point).
        model: the score model (default :data:`DETECTION_MODEL`): ``delta``, ``gamma``, ``q0``,
            ``score_noise``, ``challenge_noise``.
    """
    model = dict(DETECTION_MODEL if model is None else model)
    runs = integer("runs", runs, 2)
    if not len(pis) or not len(rounds) or not len(us):
        raise ValueError(f"pis, rounds and us must each hold a value, got {list(pis)}, {list(rounds)}, {list(us)}")
    rounds = sorted({integer("rounds", t, 1) for t in rounds})
    points, sizes = [], []
    for h, u in enumerate(us):
        u = real("us", u, 0.0, 1.0, strict=True)
        for i, pi in enumerate(pis):
            pi = float(pi)
            for j, t in enumerate(rounds):
                stream = int(np.random.SeedSequence([seed, h, i, j]).generate_state(1)[0])
                simulated = detection.simulate_rejections(t, pi, u, **model, alpha=alpha, runs=runs, seed=stream)
                exact = detection.power(t, pi, u, **model, alpha=alpha)
                points.append(
                    {
                        "u": u,
                        "pi": pi,
                        "rounds": t,
                        "power": exact,
                        "power_sim": simulated.rate,
                        "power_se": math.sqrt(exact * (1 - exact) / runs),
                    }
                )
            t_star = detection.sample_size(pi, u, **model, alpha=alpha, beta=beta)
            sizes.append(
                {
                    "u": u,
                    "pi": pi,
                    "information": detection.fisher_information(pi, **model),
                    "identifiable": detection.identifiable(pi, model["delta"], model["gamma"], model["q0"]),
                    "T_star": t_star,
                    "T_tail_bound": detection.tail_bound_sample_size(pi, u, **model, alpha=alpha, beta=beta),
                    "power_at_T_star": detection.power(math.ceil(t_star), pi, u, **model, alpha=alpha)
                    if math.isfinite(t_star)
                    else None,
                }
            )
    results = {
        "experiment": "detection-power",
        "model": model,
        "us": [float(u) for u in us],
        "alpha": alpha,
        "beta": beta,
        "runs": runs,
        "seed": seed,
        "points": points,
        "sample_sizes": sizes,
    }
    out = Path(out)
    write_atomic(out / "results.json", json_text(results))
    write_atomic(out / "power.csv", csv_text(points))
    _figure(out / "detection_power.png", results)
    return results


def _figure(path: Path, results: dict[str, Any]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    left, right = fig.subplots(1, 2)
    points = results["points"]
    styles = ("-", "--", "-.", ":")
    for m, u in enumerate(results["us"]):
        for k, pi in enumerate(sorted({p["pi"] for p in points})):
            rows = [p for p in points if p["pi"] == pi and p["u"] == u]
            ts = [p["rounds"] for p in rows]
            color = f"C{k}"
            label = f"pi = {pi:g}" if m == 0 else None
            left.plot(ts, [p["power"] for p in rows], color=color, linestyle=styles[m % 4], label=label)
            left.errorbar(
                ts,
                [p["power_sim"] for p in rows],
                yerr=[2 * p["power_se"] for p in rows],
                fmt="o" if m == 0 else "s",
                color=color,
                markersize=3,
                capsize=2,
            )
    left.axhline(results["alpha"], color="gray", linestyle=":", linewidth=0.8, label="alpha")
    left.axhline(1 - results["beta"], color="gray", linestyle="--", linewidth=0.8, label="1 - beta")
    left.set(
        xscale="log",
        xlabel="rounds T",
        ylabel="power",
        title="GLS test; u1 = "
        + ", ".join(f"{u:g} ({styles[m % 4]})" for m, u in enumerate(results["us"]))
        + " (lines: exact, points: simulated)",
    )
    for m, u in enumerate(results["us"]):
        finite = [s for s in results["sample_sizes"] if s["u"] == u and math.isfinite(s["T_star"])]
        pis = [s["pi"] for s in finite]
        right.plot(pis, [s["T_star"] for s in finite], "o-", color=f"C{m}", label=f"T*, u1 = {u:g}")
        right.plot(pis, [s["T_tail_bound"] for s in finite], "s--", color=f"C{m}", label=f"tail bound, u1 = {u:g}")
    right.set(yscale="log", xlabel="challenge rate pi", ylabel="rounds", title="rounds for power 1 - beta")
    for ax in (left, right):
        ax.title.set_fontsize(9)
        ax.legend(fontsize="small")
    fig.suptitle("[G] §10 / SPEC §8: detecting gaming with random challenges", fontsize=10)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


__all__ = ["DETECTION_MODEL", "PIS", "ROUNDS", "US", "reproduce"]
