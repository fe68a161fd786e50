"""Mechanism specs: ``"side_payment:C=0.4,balanced=true"`` strings, and applying a list of them to an env."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

from pettingzoo import ParallelEnv

from fedgames.errors import did_you_mean
from fedgames.parsing import parse_assignment
from fedgames.mechanisms.base import Mechanism, check_kwargs, parameters_of
from fedgames.mechanisms.bounded_attack import BoundedAttack
from fedgames.mechanisms.noisy_response import NoisyResponse
from fedgames.mechanisms.robust_aggregation import RobustAggregation
from fedgames.mechanisms.side_payment import SidePayment

MECHANISMS: dict[str, type[Mechanism]] = {
    cls.id: cls for cls in (SidePayment, NoisyResponse, BoundedAttack, RobustAggregation)
}
"""Mechanism wrappers by spec id."""

MechanismSpec = Union[str, tuple[str, Mapping[str, Any]], Callable[[ParallelEnv], ParallelEnv]]
"""A spec string, an ``(id, params)`` pair, or any callable ``env -> wrapped env``."""


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"noisy_response:C=0.5"`` -> ``("noisy_response", {"C": 0.5})``; values are bool, int, float or str."""
    name, _, args = spec.partition(":")
    name = name.strip()
    params: dict[str, Any] = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, value = parse_assignment(item, f"mechanism spec {spec!r}")
        params[key] = value
    return name, params


def resolve(name: str) -> type[Mechanism]:
    """The mechanism class registered under ``name``."""
    if name not in MECHANISMS:
        raise ValueError(f"unknown mechanism {name!r}{did_you_mean(name, MECHANISMS)} (mechanisms: {list(MECHANISMS)})")
    return MECHANISMS[name]


def apply_mechanism(env: ParallelEnv, spec: MechanismSpec) -> ParallelEnv:
    """Wrap ``env`` in the mechanism ``spec`` describes."""
    if callable(spec):
        return spec(env)
    name, params = parse_spec(spec) if isinstance(spec, str) else (spec[0], dict(spec[1]))
    cls = resolve(name)
    if cls is not RobustAggregation:
        check_kwargs(name, params, parameters_of(cls.__init__, skip=2))
    signature = inspect.signature(cls.__init__)
    missing = [p.name for p in list(signature.parameters.values())[2:]
               if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in params]
    if missing:
        raise ValueError(f"mechanism {name!r} needs parameter(s) {missing}, e.g. '{name}:{missing[0]}=...'")
    return cls(env, **params)


def apply_mechanisms(env: ParallelEnv, specs: Iterable[MechanismSpec]) -> ParallelEnv:
    """Wrap ``env`` in each mechanism of ``specs`` in turn (the first innermost)."""
    for spec in specs:
        env = apply_mechanism(env, spec)
    return env
