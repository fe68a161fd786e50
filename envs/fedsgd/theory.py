"""Theory of the FedSGD game ([H] §6; SPEC §2 "Penalty mechanism"): Thm 6.1's bound on the aggressiveness of any
best response under the balanced side payments, with its constants for the strongly convex quadratic."""

from __future__ import annotations

import math

from fedgames.envs.fedsgd.models import Quadratic
from fedgames.validation import integer, real


def thm_6_1_bound(
    lipschitz: float,
    lipschitz_utility: float,
    n_players: int,
    C: float,
    strong_convexity: float,
    rounds: int,
    eta: float,
) -> float:
    """[H] Thm 6.1: with ``f`` ``L``-Lipschitz on ``W`` and ``m_sc``-strongly convex, step sizes
    ``gamma_t = 4 / (m_sc (eta + t))``, a utility with l1-Lipschitz constant ``L_U`` and balanced side payments
    of weight ``C`` in every round, any best response satisfies, in every round t,
    ``alpha_t^i <= 8 L L_U N / (C (N - 2) m_sc sqrt(T + eta))``.
    """
    n_players = integer("n_players", n_players, 3)
    rounds = integer("rounds", rounds, 1)
    lipschitz = real("lipschitz", lipschitz, strict=True)
    lipschitz_utility = real("lipschitz_utility", lipschitz_utility, strict=True)
    C = real("C", C, strict=True)
    strong_convexity = real("strong_convexity", strong_convexity, strict=True)
    eta = real("eta", eta)
    return (
        8
        * lipschitz
        * lipschitz_utility
        * n_players
        / (C * (n_players - 2) * strong_convexity * math.sqrt(rounds + eta))
    )


def quadratic_thm_6_1_bound(
    model: Quadratic, C: float, n_players: int, rounds: int, eta: float, radius: float, lam: float
) -> float:
    """:func:`thm_6_1_bound` for the quadratic ``f(theta) = 0.5 (theta - theta*)^T A (theta - theta*)`` started at
    ``theta_1 = 0`` and projected on the ball ``W`` of ``radius`` around it, under the default utility
    ``U_i = (1/(N-1)) sum_{j != i} f(theta^j) - lambda f(theta^i)``:

    - ``L = ||A|| (R_W + ||theta*||)``: on W, ``||grad f|| = ||A (theta - theta*)|| <= ||A|| (||theta - theta_1|| +
      ||theta_1 - theta*||)``;
    - ``L_U = max(1/(N-1), lambda)``: the largest coefficient of U in the players' losses (its l1-Lipschitz constant);
    - ``m_sc`` = the smallest eigenvalue of A.
    """
    radius = real("radius", radius, strict=True)
    lam = real("lam", lam)
    n_players = integer("n_players", n_players, 3)
    lipschitz = model.smoothness * (radius + math.hypot(*model.theta_star))
    return thm_6_1_bound(lipschitz, max(1 / (n_players - 1), lam), n_players, C, model.strong_convexity, rounds, eta)


__all__ = ["quadratic_thm_6_1_bound", "thm_6_1_bound"]
