"""Mechanism specs: ``"side_payment:C=0.4,balanced=true"`` strings, and applying a list of them to an env."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pettingzoo import ParallelEnv

from fedgames.errors import did_you_mean
from fedgames.mechanisms.audit import Audit, ChallengeMixing
from fedgames.mechanisms.base import Mechanism
from fedgames.mechanisms.bounded_attack import BoundedAttack
from fedgames.mechanisms.noisy_response import NoisyResponse
from fedgames.mechanisms.robust_aggregation import RobustAggregation
from fedgames.mechanisms.side_payment import SidePayment
from fedgames.parsing import parse_assignments
from fedgames.validation import check_call

MECHANISMS: dict[str, type[Mechanism]] = {
    cls.id: cls for cls in (SidePayment, NoisyResponse, BoundedAttack, RobustAggregation, Audit, ChallengeMixing)
}
"""Mechanism wrappers by spec id."""

MechanismSpec = str | tuple[str, Mapping[str, Any]] | Callable[[ParallelEnv], ParallelEnv]
"""A spec string, an ``(id, params)`` pair, or any callable ``env -> wrapped env``."""


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"noisy_response:C=0.5"`` -> ``("noisy_response", {"C": 0.5})``; values are bool, int, float or str."""
    name, _, args = spec.partition(":")
    name = name.strip()
    items = filter(None, (a.strip() for a in args.split(",")))
    return name, parse_assignments(items, f"mechanism spec {spec!r}")


def resolve(name: str) -> type[Mechanism]:
    """The mechanism class registered under ``name``."""
    if name not in MECHANISMS:
        raise ValueError(f"unknown mechanism {name!r}{did_you_mean(name, MECHANISMS)} (mechanisms: {list(MECHANISMS)})")
    return MECHANISMS[name]


def apply_mechanism(env: ParallelEnv, spec: MechanismSpec) -> ParallelEnv:
    """Wrap ``env`` in the mechanism ``spec`` describes."""
    if callable(spec):
        return spec(env)
    if isinstance(spec, str):
        name, params = parse_spec(spec)
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], Mapping):
        name, params = spec[0], dict(spec[1])
    else:
        raise ValueError(
            f"a mechanism spec is a string 'id:key=value,...', an (id, params) pair or a callable "
            f"env -> env; got {spec!r}"
        )
    cls = resolve(name)
    check_call(f"mechanism {name}", cls.__init__, params, skip=2)
    return cls(env, **params)


MAX_MECHANISMS = 100
"""The deepest mechanism stack :func:`apply_mechanisms` builds. Each wrapper adds frames to every call that walks
the stack (its protocol, its step): about 500 of them exceed Python's default recursion limit of 1,000, and the
learners' and test harnesses' own frames come on top. Stacks this deep are a mistake (the same stage replaced
again and again), so a deeper one is refused with this limit in the message."""


def apply_mechanisms(env: ParallelEnv, specs: Iterable[MechanismSpec] | None) -> ParallelEnv:
    """Wrap ``env`` in each mechanism of ``specs`` in turn (the first innermost; ``None``: none), at most
    :data:`MAX_MECHANISMS` of them."""
    if specs is None:
        return env
    if isinstance(specs, str) or callable(specs):
        raise ValueError(f"mechanisms must be a list of specs, got the single spec {specs!r}: write [{specs!r}]")
    specs = list(specs)
    if len(specs) > MAX_MECHANISMS:
        raise ValueError(f"mechanisms: at most {MAX_MECHANISMS} stacked mechanisms, got {len(specs)}")
    for spec in specs:
        env = apply_mechanism(env, spec)
    return env
