"""A training run's configuration as plain JSON data: what ``state.json`` records, and what a resumed run must
match (a checkpoint made with another configuration is refused, naming the keys that differ)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from pettingzoo import ParallelEnv

from fedgames.envs.contract import game_of

OUTPUT_ONLY = ("algo_kwargs.verbose", "algo_kwargs.tensorboard_log")
"""Configuration keys that change what a run prints or logs, not what it learns: a checkpoint resumes across them."""


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (arrays to lists, dataclasses to their fields, torch tensors to their shape and
    sum — enough to tell data sets apart —, unknown objects to their repr)."""
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "sum": float(value.double().sum())}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__} | {
            f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return jsonable(value.tolist())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value) if " at 0x" not in repr(value) else type(value).__name__


def env_description(env: ParallelEnv) -> dict[str, Any]:
    """What identifies the game a run trains on: its name, agents, configuration (the game's public attributes and
    the env's own settings, such as ``fedsgd_v0``'s rounds and utility) and mechanism stack."""
    mechanisms = env.protocol.mechanisms
    return {
        "name": env.metadata.get("name"),
        "agents": list(env.possible_agents),
        "game": game_of(env).config.to_dict(),
        "mechanisms": [m.spec() if hasattr(m, "spec") else type(m).__name__ for m in mechanisms],
    }


def run_config(mode: str, env: ParallelEnv, algo: str, seed: int, **options: Any) -> dict[str, Any]:
    """The configuration of a ``mode`` run of ``algo`` on ``env`` with ``seed`` and the trainer's ``options``."""
    return jsonable({"mode": mode, "env": env_description(env), "algo": algo, "seed": seed, **options})


def differing_keys(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys at which two JSON configurations differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current))
        return [d for k in keys for d in differing_keys(saved.get(k), current.get(k), f"{prefix}{k}.")]
    return [] if saved == current else [prefix.rstrip(".")]


def resumable_differences(saved: Any, current: Any) -> list[str]:
    """:func:`differing_keys` less :data:`OUTPUT_ONLY`: the keys that make a checkpoint another run's."""
    return [k for k in differing_keys(saved, current) if k not in OUTPUT_ONLY]
