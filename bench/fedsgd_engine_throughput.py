"""CNN FedSGD rounds per second: the naive per-(run, client) autograd loop vs the batched engine's gradient paths.

Each run has 3 active clients with 180 samples each (the [H] B.3 shape) on the FEMNIST CNN; ``R`` runs advance one
round per step (``fedsgd_round``: gradients, per-tensor noise on every client, weighted mean, step, deviations).
Paths: ``naive`` (one autograd call per run and client), ``vmap`` (``torch.func`` grad + vmap over clients and
runs) and the CNN's hand-written kernels (every (run, client) pair a convolution group, dense layers as batched
products; ``envs/fedsgd/cnn_kernels.py``) with each strategy for the first convolution: ``grouped``, ``padded``,
``im2col`` (``FemnistCNN.conv1``), channels-last, or channels-first with ``-nchw`` (``grouped-nchw``, ...;
``FemnistCNN.channels_last``). All compute the same messages and updates
(tests/test_fedsgd_engine.py). ``--compile`` adds each path under ``torch.compile`` in the given modes (``off``:
eager; the compilation happens in the warm-up round and is not timed). Rates are run-rounds per second
(R x rounds / wall clock), measured in one process on one device, after a warm-up round; ``--json`` also writes
them, with the device, to a file (after each measurement).

Usage: python bench/fedsgd_engine_throughput.py [--runs 1 8 32 64] [--rounds 3] [--device cpu|cuda]
       [--paths naive vmap grouped padded im2col grouped-nchw ...] [--precisions float32 tf32 bfloat16] [--json FILE]
       [--compile off default max-autotune] [--profile FILE] [--release-memory]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable

from fedgames.memory import keep_freed_memory, use_huge_pages

use_huge_pages()  # as the CLI: before torch is imported

import torch  # noqa: E402

from fedgames.envs.fedsgd.cnn_kernels import CONV1_STRATEGIES  # noqa: E402
from fedgames.envs.fedsgd.engine import (  # noqa: E402
    COMPILE_MODES,
    PRECISIONS,
    ClientBatch,
    client_gradients,
    compiled,
    compiled_completion,
    cuda_kernel_flags,
    fedsgd_round,
    flatten,
    model_gradients,
    naive_client_gradients,
)
from fedgames.envs.fedsgd.models import FemnistCNN  # noqa: E402
from fedgames.files import write_atomic  # noqa: E402

CLIENTS, SAMPLES = 3, 180
PATHS = {
    "naive": naive_client_gradients,
    "vmap": client_gradients,
    **{strategy: model_gradients(FemnistCNN(conv1=strategy)) for strategy in CONV1_STRATEGIES},
    **{
        f"{strategy}-nchw": model_gradients(FemnistCNN(conv1=strategy, channels_last=False))
        for strategy in CONV1_STRATEGIES
    },
}


def make_step(
    path: str, runs: int, device: str, precision: str, compile: str = "off"
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """One batched round as a function of the flat parameters ``(R, P)``, and the starting parameters."""
    model = FemnistCNN()
    g = torch.Generator().manual_seed(0)
    like = {k: v.to(device) for k, v in model.init(g).items()}
    theta = flatten({k: v[None].repeat(runs, *([1] * v.dim())) for k, v in like.items()}, 1)
    x = torch.rand(runs, CLIENTS, SAMPLES, 28, 28, generator=g).to(device)
    y = torch.randint(0, 62, (runs, CLIENTS, SAMPLES), generator=g).to(device)
    batch = ClientBatch(x, y, torch.ones(runs, CLIENTS, SAMPLES, device=device))
    alpha = torch.ones(runs, CLIENTS, device=device)
    lr = torch.full((runs,), 0.06, device=device)
    noise = torch.Generator(device=device).manual_seed(1)
    kernel = PATHS[path]
    setting = PRECISIONS[precision]

    def gradients(loss, params, batch):  # noqa: ANN001, ANN202
        with setting.autocast_on(device):
            return kernel(loss, params, batch)

    gradients = compiled(gradients, False if compile == "off" else compile)
    complete = compiled_completion(False if compile == "off" else compile)

    def step(theta: torch.Tensor) -> torch.Tensor:
        with cuda_kernel_flags(theta.device, setting.tf32):  # as FedSGDGame.gradients
            return fedsgd_round(
                model.loss,
                theta,
                like,
                batch,
                alpha,
                batch.weight.sum(-1),
                lr,
                noise,
                noise_norm="per_tensor",
                gradients=gradients,
                complete=complete,
            ).theta

    return step, theta


def rate(path: str, runs: int, rounds: int, device: str, precision: str, compile: str) -> float:
    step, theta = make_step(path, runs, device, precision, compile)
    theta = step(theta)  # warm-up (kernel selection, allocator, compilation)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(rounds):
        theta = step(theta)
    if device == "cuda":
        torch.cuda.synchronize()
    return runs * rounds / (time.perf_counter() - start)


def profile(path: str, runs: int, device: str, precision: str, compile: str) -> str:
    """The kernels of one round, most expensive first (which layer's backward dominates)."""
    step, theta = make_step(path, runs, device, precision, compile)
    theta = step(theta)
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if device == "cuda" else []
    )
    with torch.profiler.profile(activities=activities) as prof:
        step(theta)
        if device == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=list(PRECISIONS),
        default=["tf32"],
        help="of the batched paths (the naive loop: tf32, i.e. float32 on a CPU)",
    )
    parser.add_argument(
        "--compile",
        nargs="+",
        choices=["off", *COMPILE_MODES],
        default=["off"],
        help="torch.compile modes to measure each batched path in (off: eager)",
    )
    parser.add_argument("--json", help="also write the rates to this JSON file")
    parser.add_argument("--profile", help="write a kernel profile of the fastest batched path at the largest R here")
    parser.add_argument(
        "--release-memory",
        action="store_true",
        help="on a CPU, let the allocator return freed memory to the system (by default it keeps it "
        "for reuse: faster, but its fragmentation grows the peak; R = 64 fits in 24 GB only so)",
    )
    args = parser.parse_args()
    if args.device == "cpu" and not args.release_memory:
        keep_freed_memory()
    card = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(
        f"device: {args.device} ({card}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"{CLIENTS} clients x {SAMPLES} samples per run and round"
    )
    columns = [
        (p, q, c)
        for p in args.paths
        for q in (args.precisions if p != "naive" else ["tf32"])
        for c in (args.compile if p != "naive" else ["off"])
    ]
    names = [f"{p}/{q}" + ("" if c == "off" else f"/{c}") for p, q, c in columns]  # the JSON's keys
    short = [name.replace("float32", "fp32").replace("bfloat16", "bf16") for name in names]
    width = max(14, *map(len, short))
    print(f"{'R':>4s} " + " ".join(f"{name:>{width}s}" for name in short) + "   best/naive")
    rows: list[dict] = []
    for runs in args.runs:
        rates: dict[str, float] = {}
        rows.append({"runs": runs, "rounds_per_s": rates})
        for name, (p, q, c) in zip(names, columns):
            rates[name] = rate(p, runs, args.rounds, args.device, q, c)
            if args.json:  # after every measurement: a run cut short keeps what it measured
                write_atomic(
                    args.json,
                    json.dumps(
                        {
                            "device": args.device,
                            "card": card,
                            "torch": torch.__version__,
                            "clients": CLIENTS,
                            "samples": SAMPLES,
                            "rows": rows,
                        },
                        indent=2,
                    ),
                )
        naive = rates.get("naive/tf32")
        best = max((v for k, v in rates.items() if not k.startswith("naive")), default=None)
        ratio = f"{best / naive:10.1f}x" if naive and best else ""
        print(f"{runs:4d} " + " ".join(f"{v:{width}.1f}" for v in rates.values()) + f"   {ratio}", flush=True)
    if args.profile:
        largest = max(rows, key=lambda row: row["runs"])
        rates = largest["rounds_per_s"]
        fastest = max((k for k in rates if not k.startswith("naive")), key=rates.get)
        path, precision, compile = columns[names.index(fastest)]
        write_atomic(
            args.profile,
            f"{fastest} at R={largest['runs']}\n" + profile(path, largest["runs"], args.device, precision, compile),
        )


if __name__ == "__main__":
    main()
