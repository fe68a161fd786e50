"""Bounded attacks ([H] App. B.1, Cor. B.1; SPEC §1): a plausibility bound on the aggressiveness."""

from __future__ import annotations

from gymnasium import spaces
from pettingzoo import ParallelEnv

from fedgames.envs.protocol import Protocol
from fedgames.envs.spaces import action_box
from fedgames.mechanisms.base import Mechanism
from fedgames.validation import real


class BoundedAttack(Mechanism):
    """Cut the range of one action component (default ``alpha``) to ``[low, A]``.

    In the mean-estimation game the equilibria are then ``alpha_i = A``, ``beta_i = A^2/(nu N + A^2)``
    (Cor. B.1). The wrapped env's action spaces shrink accordingly; larger actions are rejected.

    Args:
        env: a fedgames parallel env.
        A: the bound, between the component's lower bound and its current upper bound.
        component: the action component to bound (``alpha``; ``u`` in the participation game).
    """

    id = "bounded_attack"

    def __init__(self, env: ParallelEnv, A: float, component: str = "alpha") -> None:
        self.A = real("bounded_attack: A", A)
        self.component = component
        super().__init__(env)
        self.action_spaces = {agent: action_box(self.protocol) for agent in self.possible_agents}

    def apply(self, protocol: Protocol) -> Protocol:
        k = protocol.action_index(self.component)
        low, high = protocol.action_low[k], protocol.action_high[k]
        if not low <= self.A <= high:
            raise ValueError(
                f"bounded_attack: A must lie in [{low:g}, {high:g}] (the {self.component} range), got {self.A!r}"
            )
        action_high = protocol.action_high.copy()
        action_high[k] = self.A
        return protocol.with_stage(self, action_high=action_high)

    def action_space(self, agent: str) -> spaces.Box:
        return self.action_spaces[agent]
