"""Best-response learning throughput: the batched ``BestResponseVecEnv`` vs SB3's ``DummyVecEnv`` over copies of the
gymnasium view ``BestResponseEnv`` (one PettingZoo env each), measured in one run.

Two numbers per path:
- raw env steps per second (uniformly random normalised actions, no learning, no policy);
- PPO ``learn`` timesteps per second (timesteps / wall clock, model construction excluded), in two settings:
  "matched updates": both paths collect rollouts of the same size (4096 transitions) and train on them with the same
  minibatch (1024) and epochs (10), so the gradient work per timestep is identical and only data collection differs;
  "oracle defaults": each path with ``default_algo_kwargs("ppo", n_envs)`` (what ``LearnedOracle`` uses for that
  ``n_envs``: 4 steps per rollout, minibatch = ``n_envs``).
The slow path runs fewer timesteps (so the script finishes in well under a minute); rates are per timestep.
Each path's learning rate is the best of ``--repeats`` timings (the development machine is shared).

Usage: python bench/best_response_throughput.py [--n-envs 1024] [--dummy-envs 8] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

import fedgames
from fedgames.agents import profile_policies
from fedgames.envs.mean_estimation import theory
from fedgames.train.best_response_env import BestResponseEnv, BestResponseVecEnv
from fedgames.train.oracles import default_algo_kwargs

PLAYER = "player_0"


def make_env(args: argparse.Namespace):
    return fedgames.make(
        "mean_estimation_v0", mechanisms=args.mechanism, n_players=args.n_players, dim=args.dim, bias_max=0
    )


def others(env) -> dict:
    """The others at the theory's predicted equilibrium (Cor. B.1 under the default bounded attack)."""
    setting = theory.Setting.from_env(env)
    alpha_max = float(env.protocol.action_high[env.protocol.action_index("alpha")])
    profile, _ = theory.predicted_equilibrium(setting, env.unwrapped.game.dim, alpha_max)
    return {a: p for a, p in profile_policies(profile, env.possible_agents).items() if a != PLAYER}


def vec_env(args: argparse.Namespace, seed: int = 0) -> BestResponseVecEnv:
    env = make_env(args)
    return BestResponseVecEnv(env, PLAYER, others(env), n_envs=args.n_envs, seed=seed)


def dummy_env(args: argparse.Namespace, seed: int = 0) -> DummyVecEnv:
    def factory():
        env = make_env(args)
        return BestResponseEnv(env, PLAYER, others(env))

    venv = DummyVecEnv([factory for _ in range(args.dummy_envs)])
    venv.seed(seed)
    return venv


def env_rate(venv, steps: int) -> float:
    """Raw env steps (transitions) per second with random normalised actions."""
    rng = np.random.default_rng(0)
    shape = (venv.num_envs,) + venv.action_space.shape
    actions = [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(16)]
    venv.reset()
    venv.step(actions[0])
    start = time.perf_counter()
    for k in range(steps):
        venv.step(actions[k % 16])
    return steps * venv.num_envs / (time.perf_counter() - start)


def learn_rate(make_venv, kwargs: dict, timesteps: int, repeats: int) -> float:
    """PPO ``learn`` timesteps per second, best of ``repeats`` (a fresh model each time; construction excluded)."""
    best = float("inf")
    for r in range(repeats):
        model = PPO("MlpPolicy", make_venv(r), seed=r, verbose=0, device="cpu", **kwargs)
        start = time.perf_counter()
        model.learn(timesteps)
        best = min(best, time.perf_counter() - start)
    return timesteps / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-m", "--mechanism", action="append", default=None, help="mechanism specs (default: bounded_attack:A=1.5)"
    )
    parser.add_argument("--n-players", type=int, default=3)
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--n-envs", type=int, default=1024, help="games per step of BestResponseVecEnv")
    parser.add_argument("--dummy-envs", type=int, default=8, help="BestResponseEnv copies in the DummyVecEnv")
    parser.add_argument("--vec-timesteps", type=int, default=163_840)
    parser.add_argument("--dummy-timesteps", type=int, default=16_384)
    parser.add_argument(
        "--default-dummy-timesteps",
        type=int,
        default=4_096,
        help="timesteps of the DummyVecEnv run with the oracle's default (tiny-batch) settings",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: the networks are tiny; more threads only contend)",
    )
    args = parser.parse_args()
    args.mechanism = args.mechanism or ["bounded_attack:A=1.5"]
    torch.set_num_threads(args.torch_threads)
    warnings.filterwarnings("ignore", category=UserWarning)

    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} thread(s)); mean_estimation_v0 N={args.n_players}, "
        f"d={args.dim}, mechanisms {args.mechanism}, bias_max=0, others at the predicted equilibrium"
    )

    vec_steps = env_rate(vec_env(args), 200)
    dummy_steps = env_rate(dummy_env(args), 2_000)
    print("\nraw env steps/s (random actions, no learning)")
    print(f"  BestResponseVecEnv  n_envs={args.n_envs:<5d} {vec_steps:14,.0f}")
    print(f"  DummyVecEnv         n_envs={args.dummy_envs:<5d} {dummy_steps:14,.0f}")
    print(f"  ratio {vec_steps / dummy_steps:,.0f}x")

    rollout = 4 * args.n_envs
    matched_vec = {"n_steps": 4, "batch_size": args.n_envs, "n_epochs": 10, "learning_rate": 3e-3, "gamma": 0.0}
    matched_dummy = matched_vec | {"n_steps": rollout // args.dummy_envs}
    # a warm-up so that first-call costs (torch kernels, imports) are not charged to either path
    PPO("MlpPolicy", vec_env(args), seed=0, verbose=0, device="cpu", **matched_vec).learn(rollout)

    rows = []
    vec = learn_rate(lambda s: vec_env(args, s), matched_vec, args.vec_timesteps, args.repeats)
    dummy = learn_rate(lambda s: dummy_env(args, s), matched_dummy, args.dummy_timesteps, args.repeats)
    rows.append((f"matched updates (rollout {rollout}, minibatch {args.n_envs}, 10 epochs)", vec, dummy))
    vec_default = learn_rate(
        lambda s: vec_env(args, s), default_algo_kwargs("ppo", args.n_envs), args.vec_timesteps, args.repeats
    )
    dummy_default = learn_rate(
        lambda s: dummy_env(args, s),
        default_algo_kwargs("ppo", args.dummy_envs),
        args.default_dummy_timesteps,
        args.repeats,
    )
    rows.append(("oracle defaults (default_algo_kwargs per n_envs)", vec_default, dummy_default))

    print(
        f"\nPPO learn timesteps/s (vec {args.vec_timesteps:,} timesteps, dummy {args.dummy_timesteps:,} / "
        f"{args.default_dummy_timesteps:,}; best of {args.repeats})"
    )
    print(f"  {'setting':58s} {'VecEnv':>10s} {'Dummy':>10s} {'ratio':>7s}")
    for name, fast, slow in rows:
        print(f"  {name:58s} {fast:10,.0f} {slow:10,.0f} {fast / slow:6.1f}x")


if __name__ == "__main__":
    main()
