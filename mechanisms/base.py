"""Mechanisms as composable PettingZoo wrappers (SPEC §4).

A mechanism changes exactly one stage of the game's :class:`~fedgames.envs.protocol.Protocol` and sees only what
the server observes (the messages and its own aggregate), never the players' hidden parameters. Wrapping builds a
new protocol from the wrapped env's one, so mechanisms stack in any order; the wrapped env itself is not changed.
The protocol of the outermost wrapper is what the game plays when the wrapper steps, and its batched stages are
what the fast paths (Monte Carlo, vectorised learning) call.
"""

from __future__ import annotations

import inspect
from abc import abstractmethod
from typing import Any, ClassVar

from pettingzoo import ParallelEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper

from fedgames.envs.base import ProtocolEnv
from fedgames.envs.protocol import Protocol


class Mechanism(BaseParallelWrapper):
    """Base class of mechanism wrappers.

    Subclasses set ``id`` (the snake_case name used in mechanism specs such as ``"side_payment:C=0.4"``) and
    implement :meth:`apply`, which returns the protocol with its one stage replaced or extended.
    """

    id: ClassVar[str]

    def __init__(self, env: ParallelEnv) -> None:
        super().__init__(env)
        inner = getattr(env, "protocol", None)  # the game's, or the next mechanism's
        if not isinstance(inner, Protocol) or not isinstance(env.unwrapped, ProtocolEnv):
            raise TypeError(f"{type(self).__name__} wraps fedgames games only; {env!r} has no protocol")
        self.game: ProtocolEnv = env.unwrapped
        self.protocol: Protocol = self.apply(inner)
        self.game.validate_protocol(self.protocol)

    @abstractmethod
    def apply(self, protocol: Protocol) -> Protocol:
        """Return ``protocol`` with this mechanism's stage in place."""

    def params(self) -> dict[str, Any]:
        """The mechanism's public parameters that differ from their defaults (for reports and specs)."""
        parameters = list(inspect.signature(type(self).__init__).parameters.values())[2:]
        return {
            p.name: getattr(self, p.name)
            for p in parameters
            if hasattr(self, p.name) and getattr(self, p.name) != p.default
        }

    def spec(self) -> str:
        """The spec string that rebuilds this mechanism, e.g. ``"side_payment:C=0.4,balanced=true"``."""
        args = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in self.params().items())
        return f"{self.id}:{args}"

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        with self.game.using_protocol(self.protocol):
            return self.env.step(actions)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})<{self.env}>"
