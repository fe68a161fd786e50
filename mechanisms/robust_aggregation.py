"""Robust aggregation rules as a mechanism ([G] §9, Prop. 9.3; SPEC §1).

The server replaces the mean by one of :data:`fedgames.mechanisms.aggregators.RULES`, optionally after
pre-aggregation steps: norm clipping, then nearest-neighbour mixing. No closed-form equilibrium is claimed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.envs.protocol import Protocol
from fedgames.errors import did_you_mean
from fedgames.mechanisms import aggregators
from fedgames.mechanisms.base import Mechanism
from fedgames.validation import check_call, integer, real


class RobustAggregation(Mechanism):
    """Aggregate with ``rule`` (``mean``, ``median``, ``trimmed_mean``, ``krum``, ``multi_krum``,
    ``geometric_median``).

    Args:
        env: a fedgames parallel env.
        rule: the aggregation rule's name.
        clip_norm: if given, first scale every message to norm at most ``clip_norm``.
        mixing_f: if given, then replace each message by the mean of its ``N - mixing_f`` nearest messages
            (nearest-neighbour mixing, Allouah et al. 2023).
        **rule_params: the rule's own parameters (``f``, ``fraction``, ``m``, ``tol``, ...).
    """

    id = "robust_aggregation"

    def __init__(
        self,
        env: ParallelEnv,
        rule: str = "median",
        clip_norm: float | None = None,
        mixing_f: int | None = None,
        **rule_params: Any,
    ) -> None:
        if not isinstance(rule, str) or rule not in aggregators.RULES:
            raise ValueError(
                f"robust_aggregation: unknown rule {rule!r}{did_you_mean(str(rule), aggregators.RULES)} "
                f"(rules: {list(aggregators.RULES)})"
            )
        check_call(
            f"robust_aggregation rule {rule}",
            aggregators.RULES[rule],
            rule_params,
            also_allowed=("rule", "clip_norm", "mixing_f"),
        )
        self.rule = rule
        self.clip_norm = (
            clip_norm if clip_norm is None else real("robust_aggregation: clip_norm", clip_norm, strict=True)
        )
        self.mixing_f = mixing_f if mixing_f is None else integer("robust_aggregation: mixing_f", mixing_f, 0)
        self.rule_params = rule_params
        super().__init__(env)

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"rule": self.rule}
        if self.clip_norm is not None:
            params["clip_norm"] = self.clip_norm
        if self.mixing_f is not None:
            params["mixing_f"] = self.mixing_f
        return params | self.rule_params

    def aggregate(self, messages: Any, weights: Any = None) -> Any:
        """Pre-aggregation steps, then the rule: ``(B, N, d) -> (B, d)``.

        The rules are unweighted, as in their papers: aggregation ``weights`` are ignored. Numpy arrays and torch
        tensors alike (a tensor is aggregated natively, in its dtype and on its device; see
        :mod:`fedgames.mechanisms.aggregators`).
        """
        if self.clip_norm is not None:
            messages = aggregators.clip_norm(messages, tau=self.clip_norm)
        if self.mixing_f is not None:
            messages = aggregators.nearest_neighbor_mixing(messages, f=self.mixing_f)
        return aggregators.RULES[self.rule](messages, **self.rule_params)

    def apply(self, protocol: Protocol) -> Protocol:
        n_messages = self.game.messages_per_round
        if self.mixing_f is not None and self.mixing_f >= n_messages:
            raise ValueError(
                f"robust_aggregation: mixing_f must be in [0, {n_messages - 1}] (fewer than the {n_messages} "
                f"messages of a round), got {self.mixing_f}"
            )
        probe = np.random.default_rng(0).standard_normal((1, n_messages, 2))
        self.aggregate(probe)  # impossible parameters (e.g. Krum with N <= 2f + 2) fail here, not mid-episode
        return protocol.with_stage(self, aggregate=self.aggregate)
