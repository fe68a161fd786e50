"""CNN FedSGD rounds per second: the naive per-(run, client) autograd loop vs the batched ``torch.func`` engine.

Each run has 3 active clients with 180 samples each (the [H] B.3 shape) on the FEMNIST CNN; ``R`` runs advance one
round per step. Both paths compute the same messages and updates (tests/test_fedsgd_engine.py checks it); rates are
run-rounds per second (R x rounds / wall clock), measured in one process on the same device.

Usage: python bench/fedsgd_engine_throughput.py [--runs 1 8 32 64] [--rounds 3] [--device cpu|cuda] [--bf16]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from fedgames.envs.fedsgd.engine import ClientBatch, client_gradients, fedsgd_round, flatten, naive_client_gradients
from fedgames.envs.fedsgd.models import FemnistCNN


def rate(gradients, runs: int, rounds: int, device: str, bf16: bool) -> float:
    model = FemnistCNN()
    g = torch.Generator().manual_seed(0)
    like = {k: v.to(device) for k, v in model.init(g).items()}
    theta = flatten({k: v[None].repeat(runs, *([1] * v.dim())) for k, v in like.items()}, 1)
    x = torch.rand(runs, 3, 180, 28, 28, generator=g).to(device)
    y = torch.randint(0, 62, (runs, 3, 180), generator=g).to(device)
    batch = ClientBatch(x, y, torch.ones(runs, 3, 180, device=device))
    alpha = torch.ones(runs, 3, device=device)
    lr = torch.full((runs,), 0.06, device=device)
    noise = torch.Generator(device=device).manual_seed(1)

    def step(theta: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            return fedsgd_round(model.loss, theta, like, batch, alpha, batch.weight.sum(-1), lr, noise,
                                noise_norm="per_tensor", gradients=gradients).theta

    theta = step(theta)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(rounds):
        theta = step(theta)
    if device == "cuda":
        torch.cuda.synchronize()
    return runs * rounds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    args = parser.parse_args()
    card = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"device: {args.device} ({card}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"bf16={args.bf16}")
    print(f"{'R':>4s} {'naive rounds/s':>15s} {'batched rounds/s':>17s} {'ratio':>7s}")
    for runs in args.runs:
        naive = rate(naive_client_gradients, runs, args.rounds, args.device, args.bf16)
        batched = rate(client_gradients, runs, args.rounds, args.device, args.bf16)
        print(f"{runs:4d} {naive:15.2f} {batched:17.2f} {batched / naive:6.2f}x")


if __name__ == "__main__":
    main()
