"""The mean-estimation theory's equilibrium prediction by best-response iteration (``predicted_equilibrium``, [H]
Cor. 4.2, B.1, Thm D.1), read off the env as the CLI reads it; written to kill surviving mutants
(docs/testing.md)."""

from __future__ import annotations

import numpy as np
import pytest

import fedgames
from fedgames.envs.mean_estimation import theory


def setting(*mechanisms):
    return theory.Setting.from_env(fedgames.make("mean_estimation_v0", mechanisms=list(mechanisms), n_players=3))


@pytest.mark.parametrize(
    "mechanisms, alpha_max, alpha",
    [
        ((), 5.0, 5.0),  # no mechanism: only the action bound stops the attack (Cor. 4.2)
        ((), 1.5, 1.5),  # a bound A on alpha: alpha = A (Cor. B.1)
        (("side_payment:C=2",), 5.0, 0.0),  # Thm D.1: C > 1/(N-1)^2 makes honesty the equilibrium
    ],
)
def test_predicted_equilibrium_converges_to_the_closed_form(mechanisms, alpha_max, alpha):
    profile, converged = theory.predicted_equilibrium(setting(*mechanisms), 2, alpha_max)
    assert converged
    np.testing.assert_allclose(profile.alpha, alpha, rtol=0, atol=1e-12)
    for i in range(3):  # a fixed point: nobody's best response moves
        again = theory.best_response(profile, setting(*mechanisms), i, alpha_max, 0.0)
        np.testing.assert_allclose(again.actions(), profile.actions(), atol=1e-12)


def test_with_players_who_differ_the_defences_settle_in_a_later_sweep():
    """Unequal noise and weights: every player attacks at alpha_max = 1/2 in the first sweep, and each defence
    (Lemma C.2's beta, which depends on the others' attacks) settles only in a later sweep (player 0's beta goes
    from 0.6 to 0.657); the prediction is the fixed point, where nobody's best response moves."""
    nu, lam = np.array([0.2, 0.7, 1.5]), np.array([1.0, 0.5, 2.0])
    differing = theory.Setting(nu=nu, lam=lam, payments=(), noise_C=0.0)
    profile, converged = theory.predicted_equilibrium(differing, 1, 0.5)
    assert converged and np.all(profile.alpha == 0.5) and profile.beta[0] == pytest.approx(0.657142857142857)
    for i in range(3):
        again = theory.best_response(profile, differing, i, 0.5, 0.0)
        np.testing.assert_allclose(again.actions(), profile.actions(), rtol=0, atol=1e-12)


def test_predicted_equilibrium_reports_no_convergence_within_zero_rounds():
    profile, converged = theory.predicted_equilibrium(setting(), 2, 5.0, max_iter=1)
    assert not converged and np.all(profile.alpha == 5.0)  # one round moved everybody from honesty


def test_setting_reads_every_mechanism_after_a_plain_mean():
    """A plain-mean robust aggregation has no closed-form effect; the mechanisms after it still count."""
    s = setting("robust_aggregation:rule=mean", "side_payment:C=0.5", "noisy_response:C=0.25")
    assert s.noise_C == 0.25 and len(s.payments) == 1


def test_profiles_check_their_shapes_and_env_theory_reads_actions_by_column():
    with pytest.raises(ValueError, match="profile shapes"):
        theory.Profile(np.zeros(3), np.zeros(2), np.zeros((3, 2)))
    actions = np.array([[1.0, 0.25, 0.5, -0.5], [2.0, 0.75, 0.0, 1.0]])
    profile = theory.EnvTheory.profile(actions)
    np.testing.assert_array_equal(profile.alpha, [1.0, 2.0])
    np.testing.assert_array_equal(profile.beta, [0.25, 0.75])
    np.testing.assert_array_equal(profile.bias, actions[:, 2:])
