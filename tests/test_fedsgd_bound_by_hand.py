"""[H] Thm 6.1's bound (``fedgames.envs.fedsgd.theory``) by hand and at the edges of its domain, written to kill the
mutants the FedSGD tests left alive (docs/testing.md)."""

from __future__ import annotations

import pytest

from fedgames.envs.fedsgd.models import Quadratic
from fedgames.envs.fedsgd.theory import quadratic_thm_6_1_bound, thm_6_1_bound


def test_thm_6_1_bound_by_hand():
    # 8 L L_U N / (C (N - 2) m_sc sqrt(T + eta)) = 8 * 2 * 0.5 * 4 / (0.25 * 2 * 0.5 * 3) = 32 / 0.75
    assert thm_6_1_bound(2.0, 0.5, 4, 0.25, 0.5, 7, 2.0) == pytest.approx(32 / 0.75, rel=1e-12)
    assert thm_6_1_bound(2.0, 0.5, 3, 0.25, 0.5, 7, 0.0) == pytest.approx(24 / (0.125 * 7**0.5), rel=1e-12)


def test_quadratic_thm_6_1_bound_by_hand():
    """``L = ||A|| (R_W + ||theta*||) = 2 (1 + 5) = 12``, ``m_sc = 0.5``; with N = 3 and lambda = 0.1 the utility's
    constant is ``1/(N-1) = 0.5``, with lambda = 2 it is lambda."""
    model = Quadratic(eigenvalues=(0.5, 2.0), theta_star=(3.0, 4.0))
    common = dict(C=0.25, n_players=3, rounds=7, eta=2.0, radius=1.0)
    assert quadratic_thm_6_1_bound(model, lam=0.1, **common) == pytest.approx(8 * 12 * 0.5 * 3 / 0.375, rel=1e-12)
    assert quadratic_thm_6_1_bound(model, lam=2.0, **common) == pytest.approx(8 * 12 * 2.0 * 3 / 0.375, rel=1e-12)


@pytest.mark.parametrize(
    "position, value, name",
    [(0, 0.0, "lipschitz"), (1, 0.0, "lipschitz_utility"), (2, 2, "n_players"), (3, 0.0, "C"),
     (4, 0.0, "strong_convexity"), (5, 0, "rounds"), (6, -1.0, "eta")],
)  # fmt: skip
def test_thm_6_1_bound_domain(position, value, name):
    arguments = [2.0, 0.5, 3, 0.25, 0.5, 1, 0.0]  # the smallest N, T and eta the theorem takes
    assert thm_6_1_bound(*arguments) > 0
    arguments[position] = value
    with pytest.raises(ValueError, match=name):
        thm_6_1_bound(*arguments)
    model = Quadratic()
    assert quadratic_thm_6_1_bound(model, C=1.0, n_players=3, rounds=1, eta=0.0, radius=1.0, lam=0.0) > 0
    with pytest.raises(ValueError, match="n_players"):
        quadratic_thm_6_1_bound(model, C=1.0, n_players=2, rounds=1, eta=0.0, radius=1.0, lam=0.0)
