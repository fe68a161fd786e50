"""Noisy server response ([H] Thm 5.1 / D.3; SPEC §1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pettingzoo import ParallelEnv

from fedgames.arrays import squared_distance, standard_normal
from fedgames.envs.config import SCALE_MAX
from fedgames.envs.protocol import Protocol, Responder
from fedgames.mechanisms.base import Mechanism
from fedgames.validation import real


class NoisyResponse(Mechanism):
    """Player i receives ``r_i + sqrt(C) * eps_i * ||m_i - theta_s||`` instead of ``r_i``.

    ``eps_i = g / sqrt(d)`` (g standard normal, independent per player), so ``E eps = 0`` and ``E||eps||^2 = 1``.
    Honesty with ``beta_i = C/(C+1)`` is an equilibrium iff ``lambda_i (N-1)^2 > 1`` and
    ``C > 1/(lambda_i (N-1)^2 - 1)`` (Thm 5.1). Extends the response stage, so it composes with any aggregator.
    The stage runs on numpy arrays with a numpy ``Generator`` (mean estimation) and on torch tensors with a
    ``torch.Generator`` on their device (FedSGD, where the perturbation lands on the model a player receives:
    see :meth:`fedgames.envs.fedsgd.game.FedSGDGame.play_round`).

    Args:
        env: a fedgames parallel env.
        C: noise weight, ``0 <= C <= 1e15`` (:data:`~fedgames.envs.config.SCALE_MAX`: a noise ``sqrt(C)`` times
            the deviation is added to the response and the player's correction takes it off again, so far larger
            weights leave the estimate only float64 rounding, a silently wrong number, not a non-finite one).
    """

    id = "noisy_response"

    def __init__(self, env: ParallelEnv, C: float) -> None:
        self.C = real("noisy_response: C", C, 0.0, SCALE_MAX)
        super().__init__(env)

    def apply(self, protocol: Protocol) -> Protocol:
        return protocol.with_stage(self, respond=NoisyResponder(protocol.respond, math.sqrt(self.C)))


@dataclass(frozen=True)
class NoisyResponder:
    """The response stage of :class:`NoisyResponse` (a module-level callable, so envs using it pickle):
    ``inner``'s response plus ``scale ||m_i - mbar|| eps_i``, ``eps_i`` Gaussian with ``E||eps_i||^2 = 1``."""

    inner: Responder
    scale: float

    def __call__(self, messages: Any, aggregate: Any, rng: Any) -> Any:
        eps = standard_normal(rng, tuple(messages.shape), like=messages) / math.sqrt(messages.shape[-1])
        deviation = squared_distance(messages, aggregate[:, None, :])[..., None] ** 0.5
        return self.inner(messages, aggregate, rng) + self.scale * deviation * eps
