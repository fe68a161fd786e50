"""The mean-estimation game's side of the game contract's theory adapter (:class:`~fedgames.envs.contract.
TheoryAdapter`): its closed forms ([H] Thm 4.1, D.1, B.2, 5.1 and Lemma C.2) in terms of action profiles."""

from __future__ import annotations

import numpy as np

from fedgames.envs.contract import TheoryAdapter
from fedgames.envs.mean_estimation import theory
from fedgames.envs.protocol import Protocol


class MeanEstimationTheory(theory.EnvTheory, TheoryAdapter):
    """:class:`~fedgames.envs.mean_estimation.theory.EnvTheory` of a game and the protocol in force, with the
    predicted equilibrium and the expectations theory-vs-simulation compares (raises ``ValueError`` where the
    mechanisms have no closed form)."""

    def __init__(self, game: object, protocol: Protocol) -> None:
        self.setting = theory.Setting.of(game, protocol)
        TheoryAdapter.__init__(self, protocol)
        self.dim = int(game.dim)  # type: ignore[attr-defined]

    def predicted_actions(self) -> np.ndarray:
        """Best-response iteration from honesty (:func:`~fedgames.envs.mean_estimation.theory.
        predicted_equilibrium`, biases fixed at 0 as Cor. B.1)."""
        alpha_max = float(self.high[self.action_names.index("alpha")])
        profile, converged = theory.predicted_equilibrium(self.setting, self.dim, alpha_max)
        if not converged:
            raise ValueError("best-response iteration did not converge: the theory predicts no equilibrium here")
        return profile.actions()

    def expected(self, actions: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
        """The MSE (Thm 4.1, D.3), the reward (eq. 2) and, under side payments, the payment (Thm D.1 / B.2)."""
        profile, setting = self.profile(actions), self.setting
        expected = {
            "sq_error": (theory.expected_mse(profile, setting.nu, setting.noise_C), "sq_error"),
            "reward": (theory.expected_reward(profile, setting), "rewards"),
        }
        if setting.payments:
            payment = sum(
                (theory.expected_payment(profile, setting.nu, C, balanced) for C, balanced in setting.payments),
                np.zeros(profile.n_players),
            )
            expected["payment"] = (payment, "payments")
        return expected

    def describe(self, actions: np.ndarray) -> dict[str, list]:
        profile = self.profile(actions)
        return {"alpha": profile.alpha.tolist(), "beta": profile.beta.tolist(), "bias": profile.bias.tolist()}
