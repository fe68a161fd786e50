"""The mean-estimation game's side of the game contract's theory adapter (:class:`~fedgames.envs.contract.
TheoryAdapter`): its closed forms ([H] Thm 4.1, D.1, B.2, 5.1 and Lemma C.2) in terms of action profiles."""

from __future__ import annotations

import numpy as np

from fedgames.envs.contract import SlopeRange, TheoryAdapter
from fedgames.envs.mean_estimation import theory
from fedgames.envs.mean_estimation.game import MeanEstimationGame
from fedgames.envs.protocol import Protocol


class MeanEstimationTheory(theory.EnvTheory, TheoryAdapter):
    """:class:`~fedgames.envs.mean_estimation.theory.EnvTheory` of a game and the protocol in force, with the
    predicted equilibrium and the expectations theory-vs-simulation compares (raises ``ValueError`` where the
    mechanisms have no closed form)."""

    def __init__(self, game: MeanEstimationGame, protocol: Protocol) -> None:
        self.setting = theory.Setting.of(game, protocol)
        TheoryAdapter.__init__(self, protocol)
        self.dim = game.dim

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

    def slope_ranges(self, actions: np.ndarray, i: int, base: np.ndarray, columns: list[int]) -> SlopeRange:
        """Exact ranges along ``alpha`` and ``beta`` (:meth:`~fedgames.envs.mean_estimation.theory.EnvTheory.
        own_payoff`: ``E R_i = A(beta) + alpha^2 B(beta)``, Thm 4.1 / D.3); other components are a
        ``ValueError``."""
        own = [self.action_names.index(c) for c in ("alpha", "beta")]
        if not set(columns) <= set(own):
            searched = [self.action_names[c] for c in columns]
            raise ValueError(
                f"lipschitz='theory' bounds the slopes along alpha and beta; components {searched} need constants "
                "as a mapping"
            )
        payoff = self.own_payoff(actions, i)
        where = [own.index(c) for c in columns]

        def slope_range(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            box_low, box_high = base[own].astype(float), base[own].astype(float)
            box_low[where], box_high[where] = lower, upper
            smallest, largest = payoff.slope_range(box_low, box_high)
            return smallest[where], largest[where]

        return slope_range

    def describe(self, actions: np.ndarray) -> dict[str, list]:
        profile = self.profile(actions)
        return {"alpha": profile.alpha.tolist(), "beta": profile.beta.tolist(), "bias": profile.bias.tolist()}
