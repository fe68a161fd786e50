"""Closed-form theory of the mean-estimation game ([H] §4–5, App. B–D; SPEC §1).

All formulas allow a per-player ``nu_i = E sigma_i^2 / n + sigma_*^2``; with equal ``nu_i`` they are exactly the
paper's. A :class:`Profile` gives each player's ``alpha`` (the root of ``E alpha^2`` for a random aggressiveness),
``beta`` and a bias vector carrying no knowledge of ``mu``. Everything is an expectation over the data, the
attack noise and the server's noise, so the functions are exact, not estimates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pettingzoo import ParallelEnv

    from fedgames.envs.mean_estimation.game import MeanEstimationGame
    from fedgames.envs.protocol import Protocol


@dataclass(frozen=True)
class Profile:
    """A strategy profile ``((alpha_i, beta_i, b_i))_i`` with arrays ``(N,)``, ``(N,)``, ``(N, d)``."""

    alpha: np.ndarray
    beta: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        alpha = np.asarray(self.alpha, dtype=float)
        beta = np.asarray(self.beta, dtype=float)
        bias = np.asarray(self.bias, dtype=float)
        if alpha.ndim != 1 or beta.shape != alpha.shape or bias.ndim != 2 or bias.shape[0] != alpha.size:
            raise ValueError(
                f"profile shapes must be alpha (N,), beta (N,), bias (N, d); got {alpha.shape}, "
                f"{beta.shape}, {bias.shape}"
            )
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)
        object.__setattr__(self, "bias", bias)

    @property
    def n_players(self) -> int:
        return self.alpha.size

    @classmethod
    def symmetric(cls, n_players: int, dim: int, alpha: float = 0.0, beta: float = 0.0) -> Profile:
        """Every player plays ``(alpha, beta, 0)``; ``symmetric(N, d)`` is honesty."""
        return cls(np.full(n_players, alpha), np.full(n_players, beta), np.zeros((n_players, dim)))

    def replace_player(
        self, i: int, alpha: float | None = None, beta: float | None = None, bias: np.ndarray | None = None
    ) -> Profile:
        """The profile with player ``i``'s strategy changed."""
        new_alpha, new_beta, new_bias = self.alpha.copy(), self.beta.copy(), self.bias.copy()
        if alpha is not None:
            new_alpha[i] = alpha
        if beta is not None:
            new_beta[i] = beta
        if bias is not None:
            new_bias[i] = bias
        return Profile(new_alpha, new_beta, new_bias)

    def actions(self) -> np.ndarray:
        """``(N, d + 2)`` actions laid out ``[alpha, beta, b_1 .. b_d]``."""
        return np.concatenate([self.alpha[:, None], self.beta[:, None], self.bias], axis=1)


@dataclass(frozen=True)
class Setting:
    """What the closed forms need about the game and its mechanisms.

    Attributes:
        nu: ``(N,)`` per-player ``nu_i``.
        lam: ``(N,)`` per-player ``lambda_i``.
        payments: one ``(C, balanced)`` pair per side-payment mechanism.
        noise_C: total weight of noisy server responses (the weights of stacked ones add up).
    """

    nu: np.ndarray
    lam: np.ndarray
    payments: tuple[tuple[float, bool], ...] = field(default=())
    noise_C: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "nu", np.asarray(self.nu, dtype=float))
        object.__setattr__(self, "lam", np.broadcast_to(np.asarray(self.lam, dtype=float), self.nu.shape).copy())

    @classmethod
    def from_env(cls, env: ParallelEnv) -> Setting:
        """Read ``nu``, ``lambda`` and the mechanisms off a (wrapped) ``mean_estimation_v0`` env.

        Raises ``ValueError`` for a mechanism without a closed form (robust aggregation other than the mean).
        """
        return cls.of(env.unwrapped.game, env.protocol)

    @classmethod
    def of(cls, game: MeanEstimationGame, protocol: Protocol) -> Setting:
        """:meth:`from_env` from a ``MeanEstimationGame`` and the protocol in force."""
        from fedgames.mechanisms import BoundedAttack, NoisyResponse, RobustAggregation, SidePayment

        payments: list[tuple[float, bool]] = []
        noise_C = 0.0
        for mechanism in protocol.mechanisms:
            if isinstance(mechanism, SidePayment):
                payments.append((mechanism.C, mechanism.balanced))
            elif isinstance(mechanism, NoisyResponse):
                noise_C += mechanism.C
            elif (
                isinstance(mechanism, RobustAggregation)
                and mechanism.rule == "mean"
                and not (mechanism.clip_norm or mechanism.mixing_f)
            ):
                continue
            elif not isinstance(mechanism, BoundedAttack):
                raise ValueError(f"no closed form for mechanism {mechanism.id} {mechanism.params()}")
        return cls(nu=game.nu, lam=game.lam, payments=tuple(payments), noise_C=noise_C)


def _others_sum(x: np.ndarray) -> np.ndarray:
    """``sum_{j != i} x_j`` for each i (along axis 0)."""
    return x.sum(axis=0, keepdims=True) - x


def expected_deviation(profile: Profile, nu: np.ndarray) -> np.ndarray:
    """``E||m_i - mbar||^2`` per player ([H] eq. 19, proof of Thm D.1).

    ``((N-1)/N)^2 (nu_i + a_i) + (1/N^2) sum_{j != i} (nu_j + a_j) + ||b_i - bbar||^2`` with ``a = E alpha^2``;
    ``(N-1) nu / N`` at honesty.
    """
    n = profile.n_players
    var = np.asarray(nu, dtype=float) + profile.alpha**2
    bias_dev = profile.bias - profile.bias.mean(axis=0, keepdims=True)
    return ((n - 1) / n) ** 2 * var + _others_sum(var) / n**2 + np.sum(bias_dev**2, axis=1)


def expected_mse(profile: Profile, nu: np.ndarray, noise_C: float = 0.0) -> np.ndarray:
    """``E||theta_i - mu||^2`` per player: [H] Thm 4.1, plus the server-noise term of Thm D.3.

    With ``e_i = xbar_i - mu`` the estimate error is ``((1-beta_i)/N + beta_i) e_i + ((1-beta_i)/N)
    sum_{j != i} (e_j + alpha_j xi_j + b_j)``, so::

        MSE_i = ((1-beta_i)/N + beta_i)^2 nu_i
                + ((1-beta_i)/N)^2 (sum_{j != i} (nu_j + E alpha_j^2) + ||sum_{j != i} b_j||^2)
                + noise_C (1-beta_i)^2 E||m_i - mbar||^2

    which for equal ``nu`` is Thm 4.1's ``(1-beta)^2 (nu/N + S_i) + beta^2 nu + 2 (1-beta) beta nu / N``.
    """
    n = profile.n_players
    nu = np.asarray(nu, dtype=float)
    keep = 1.0 - profile.beta
    others = _others_sum(nu + profile.alpha**2) + np.sum(_others_sum(profile.bias) ** 2, axis=1)
    mse = (keep / n + profile.beta) ** 2 * nu + (keep / n) ** 2 * others
    if noise_C:
        mse = mse + noise_C * keep**2 * expected_deviation(profile, nu)
    return mse


def expected_payment(profile: Profile, nu: np.ndarray, C: float, balanced: bool) -> np.ndarray:
    """Expected side payment per player.

    Plain (eq. 9, Thm D.1): ``C E||m_i - mbar||^2``, i.e. ``C nu (N-1)/N`` at honesty. Budget-balanced (eq. 10,
    Thm B.2): ``C D_i - (C/(N-1)) sum_{j != i} D_j``, zero at any symmetric profile.
    """
    dev = C * expected_deviation(profile, nu)
    if not balanced:
        return dev
    return dev - _others_sum(dev) / (profile.n_players - 1)


def expected_reward(profile: Profile, setting: Setting) -> np.ndarray:
    """``E R_i`` per player: eq. (2) with Thm 4.1 / D.3 MSEs, minus the expected payments (Thm D.1, B.2)."""
    mse = expected_mse(profile, setting.nu, setting.noise_C)
    reward = _others_sum(mse) / (profile.n_players - 1) - setting.lam * mse
    for C, balanced in setting.payments:
        reward = reward - expected_payment(profile, setting.nu, C, balanced)
    return reward


def expected_reward_alone(setting: Setting, i: int) -> float:
    """``E R_i`` when player i keeps its own estimate and sends nothing while the others are honest ([H] eq. 22).

    Each other player then averages ``N - 1`` honest means, so ``E R_i = (1/(N-1)^2) sum_{k != i} nu_k
    - lambda_i nu_i``; Thm B.2: participating (balanced payments, honesty) beats this when ``N > 2`` and
    ``lambda_i > N/(N-1)^2``.
    """
    n = setting.nu.size
    return float(np.delete(setting.nu, i).sum() / (n - 1) ** 2 - setting.lam[i] * setting.nu[i])


def best_defence(profile: Profile, nu: np.ndarray, i: int, noise_C: float = 0.0) -> float:
    """The ``beta_i`` minimising player i's MSE given the profile ([H] Lemma C.2).

    Lemma C.2: ``beta* = S_i / (nu - nu/N + S_i)`` with ``S_i = (sum_{j != i} E alpha_j^2 + ||sum_{j != i}
    b_j||^2) / N^2``. Here generalised to per-player ``nu`` and to the noisy response, where it gives Thm 5.1's
    ``C/(C+1)`` at honesty: ``1 - beta* = N (N-1) nu_i / ((N-1)^2 nu_i + K_i + N^2 C D_i)``, ``K_i`` the bracket
    of :func:`expected_mse`. The MSE is a convex quadratic in ``beta``, so the optimum over ``[0, 1]`` is the
    clipped one (``beta* < 0`` happens only when the others' data is less noisy than i's own).
    """
    n = profile.n_players
    nu = np.broadcast_to(np.asarray(nu, dtype=float), (n,))
    others = np.delete(nu + profile.alpha**2, i).sum() + float(np.sum(np.delete(profile.bias, i, axis=0).sum(0) ** 2))
    noise = n**2 * noise_C * expected_deviation(profile, nu)[i]
    keep = n * (n - 1) * nu[i] / ((n - 1) ** 2 * nu[i] + others + noise)
    return float(np.clip(1.0 - keep, 0.0, 1.0))


def honest_profile(setting: Setting, dim: int) -> Profile:
    """``alpha = b = 0`` with each player's best defence against honest others: ``beta = 0`` on the plain server,
    ``C/(C+1)`` under the noisy response (Thm 5.1)."""
    honest = Profile.symmetric(setting.nu.size, dim)
    beta = [best_defence(honest, setting.nu, i, setting.noise_C) for i in range(setting.nu.size)]
    return Profile(honest.alpha, np.array(beta), honest.bias)


def bounded_equilibrium(A: float, nu: float, n_players: int, dim: int = 1) -> tuple[Profile, float]:
    """The equilibrium under attacks bounded by ``A`` and no bias ([H] Cor. B.1).

    ``alpha_i = A``, ``beta_i = A^2 / (nu N + A^2)``; every player's MSE is ``nu (1 + A^2/nu) / (N + A^2/nu)``.
    """
    beta = A**2 / (nu * n_players + A**2)
    mse = nu * (1 + A**2 / nu) / (n_players + A**2 / nu)
    return Profile.symmetric(n_players, dim, alpha=A, beta=beta), float(mse)


def plain_payment_threshold(n_players: int) -> float:
    """Honesty is an equilibrium under plain side payments iff ``C > 1/(N-1)^2`` (Thm D.1)."""
    return 1.0 / (n_players - 1) ** 2


def balanced_payment_threshold(n_players: int) -> float:
    """... under budget-balanced payments iff ``C > 1/((N-1)^2 - 1)`` (Thm B.2); ``inf`` for ``N = 2``."""
    denominator = (n_players - 1) ** 2 - 1
    return 1.0 / denominator if denominator > 0 else float("inf")


def noisy_response_threshold(n_players: int, lam: float) -> float:
    """... under the noisy response iff ``lambda (N-1)^2 > 1`` and ``C > 1/(lambda (N-1)^2 - 1)`` (Thm 5.1)."""
    denominator = lam * (n_players - 1) ** 2 - 1
    return 1.0 / denominator if denominator > 0 else float("inf")


def attack_slope(profile: Profile, setting: Setting, i: int) -> float:
    """``d E R_i / d E alpha_i^2`` — exact, since ``E R_i`` is linear in ``E alpha_i^2`` ([H] eq. 18, 20).

    Positive without mechanisms (Cor. 4.2: every player gains from more noise); its sign decides the theory's
    attack.
    """
    at_zero = expected_reward(profile.replace_player(i, alpha=0.0), setting)[i]
    at_one = expected_reward(profile.replace_player(i, alpha=1.0), setting)[i]
    return float(at_one - at_zero)


def _best_bias(profile: Profile, setting: Setting, i: int, bias_max: float) -> np.ndarray:
    """Player i's best bias given everything else: the reward is a separable quadratic ``c2 b_k^2 + l_k b_k``
    in the bias coordinates, so each is an interior optimum ``-l_k/(2 c2)`` (clipped) when concave, else the
    endpoint that favours ``l_k``."""
    base_profile = profile.replace_player(i, bias=np.zeros(profile.bias.shape[1]))
    base = expected_reward(base_profile, setting)[i]
    bias = np.zeros(profile.bias.shape[1])
    for k in range(bias.size):
        unit = np.zeros_like(bias)
        unit[k] = 1.0
        plus = expected_reward(base_profile.replace_player(i, bias=unit), setting)[i]
        minus = expected_reward(base_profile.replace_player(i, bias=-unit), setting)[i]
        c2, lin = (plus + minus) / 2 - base, (plus - minus) / 2
        if c2 < 0:
            bias[k] = np.clip(-lin / (2 * c2), -bias_max, bias_max)
        elif c2 > 0 or lin != 0:
            bias[k] = bias_max if lin >= 0 else -bias_max
    return bias


def best_response(
    profile: Profile, setting: Setting, i: int, alpha_max: float, bias_max: float, max_iter: int = 100
) -> Profile:
    """Player i's best response to the others in ``profile``, within the action bounds.

    For a fixed ``beta_i`` the reward is linear in ``E alpha_i^2`` ([H] eq. 18, 20); minimising over ``beta_i``
    keeps it convex, so the best ``alpha`` is 0 or ``alpha_max`` and both are tried. ``beta`` is Lemma C.2's
    :func:`best_defence`, the bias :func:`_best_bias`. Without the noisy response ``beta`` only moves i's own MSE
    and the answer is exact; under it ``beta``, ``alpha`` and the bias interact through i's own noise, and the
    best of the candidates (bias 0, bias at its bound, or alternately optimised with ``beta``) is returned —
    exact when the others send no bias, since the reward then depends on i's attack through the convex
    ``E alpha^2 + ||b||^2``.
    Returns the profile with i's strategy replaced.
    """
    dim = profile.bias.shape[1]
    candidates = []
    for alpha in (0.0, alpha_max):
        for start_bias, strategic_bias in ((0.0, False), (bias_max, False), (0.0, True)):
            response = profile.replace_player(i, alpha=alpha, bias=np.full(dim, start_bias))
            for _ in range(max_iter):
                previous = response
                response = response.replace_player(i, beta=best_defence(response, setting.nu, i, setting.noise_C))
                if not strategic_bias:
                    break
                response = response.replace_player(i, bias=_best_bias(response, setting, i, bias_max))
                if np.array_equal(response.actions(), previous.actions()):
                    break
            candidates.append(response)
    return max(candidates, key=lambda c: expected_reward(c, setting)[i])


def predicted_equilibrium(
    setting: Setting, dim: int, alpha_max: float, bias_max: float = 0.0, max_iter: int = 100, tol: float = 1e-12
) -> tuple[Profile, bool]:
    """The theory's equilibrium prediction within the action bounds, by exact best-response iteration.

    Starts at :func:`honest_profile` and lets each player in turn play :func:`best_response` until no strategy
    moves by more than ``tol``. Returns the profile and whether it converged (a Nash equilibrium of the
    closed-form game). Honesty comes back when the mechanism deters deviation (Thm D.1, B.2, 5.1); under a bound
    ``A`` on alpha it is Cor. B.1's ``alpha = A``; with no mechanism the players sit at ``alpha_max`` — the
    action bound, which is all that prevents Cor. 4.2's "no equilibrium".

    ``bias_max = 0`` (the default) fixes ``b = 0`` as Cor. B.1 does. With strategic biases, constant biases that
    all point the same way are an equilibrium too: they do not move anyone away from ``mbar``, so deviation
    payments do not see them.
    """
    profile = honest_profile(setting, dim)
    for _ in range(max_iter):
        previous = profile
        for i in range(profile.n_players):
            profile = best_response(profile, setting, i, alpha_max, bias_max)
        moved = max(np.abs(profile.actions() - previous.actions()).max(), 0.0)
        if moved <= tol:
            return profile, True
    return profile, False


class EnvTheory:
    """The closed forms of a (wrapped) ``mean_estimation_v0`` env, in terms of action vectors ``(N, d + 2)``.

    Used by the equilibrium check for exact payoffs, predicted best responses and the slope ranges
    (:meth:`own_payoff`) that turn a grid search into an upper bound on regret. Raises ``ValueError`` where the
    mechanisms have no closed form (robust aggregation).
    """

    def __init__(self, env: ParallelEnv) -> None:
        self.setting = Setting.from_env(env)
        protocol = env.protocol
        self.low, self.high = protocol.action_low, protocol.action_high

    @staticmethod
    def profile(actions: np.ndarray) -> Profile:
        actions = np.asarray(actions, dtype=float)
        return Profile(actions[:, 0], actions[:, 1], actions[:, 2:])

    def payoff(self, actions: np.ndarray, i: int) -> float:
        """``E R_i`` when every player plays its row of ``actions``."""
        return float(expected_reward(self.profile(actions), self.setting)[i])

    def best_response(self, actions: np.ndarray, i: int) -> np.ndarray:
        """Player i's best response (:func:`best_response`) as an action vector."""
        alpha_max, bias_max = float(self.high[0]), float(self.high[2])  # (alpha, beta, b_1, ...): d >= 1
        response = best_response(self.profile(actions), self.setting, i, alpha_max, bias_max)
        return response.actions()[i]

    def own_payoff(self, actions: np.ndarray, i: int) -> OwnPayoff:
        """Player i's ``E R_i`` as a function of its own ``(alpha, beta)``, the rest of ``actions`` fixed."""
        values = np.empty((2, 3))
        for p, alpha in enumerate((0.0, 1.0)):
            for q, beta in enumerate((0.0, 0.5, 1.0)):
                trial = np.array(actions, dtype=float)
                trial[i, :2] = alpha, beta
                values[p, q] = self.payoff(trial, i)
        # the quadratic through beta = 0, 1/2, 1, for alpha^2 = 0 (A) and the increment per unit alpha^2 (B)
        to_coefficients = np.array([[1.0, 0.0, 0.0], [-3.0, 4.0, -1.0], [2.0, -4.0, 2.0]])
        return OwnPayoff(to_coefficients @ values[0], to_coefficients @ (values[1] - values[0]))


def _quadratic_range(coefficients: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Smallest and largest value of ``c0 + c1 x + c2 x^2`` over ``[low, high]`` (ends and vertex)."""
    c0, c1, c2 = coefficients
    xs = [low, high] + ([-c1 / (2 * c2)] if c2 != 0 and low < -c1 / (2 * c2) < high else [])
    values = [c0 + c1 * x + c2 * x * x for x in xs]
    return min(values), max(values)


@dataclass(frozen=True)
class OwnPayoff:
    """``E R_i = A(beta) + alpha^2 B(beta)`` in player i's own ``alpha``, ``beta`` (the others' actions and i's bias
    fixed), ``A`` and ``B`` quadratics given by their coefficients of ``1, beta, beta^2``.

    Exact for every setting :class:`Setting` covers: by Thm 4.1 and D.3 each MSE is quadratic in ``beta_i`` and
    affine in ``E alpha_i^2`` (the own MSE through ``(1 - beta_i)^2 E||m_i - mbar||^2``, the others' through
    ``sum_j E alpha_j^2`` and their deviations), and the payments of Thm D.1 and B.2 are affine in ``E alpha_i^2``.
    The equilibrium check uses it for the slopes' exact range over a cell of its grid.
    """

    A: np.ndarray
    B: np.ndarray

    def value(self, alpha: float, beta: float) -> float:
        powers = np.array([1.0, beta, beta * beta])
        return float(powers @ self.A + alpha * alpha * (powers @ self.B))

    def slope_range(self, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Smallest and largest ``(dE R_i/d alpha, dE R_i/d beta)`` over the box ``lower <= (alpha, beta) <= upper``
        (``alpha >= 0``), exactly: ``d/d alpha = 2 alpha B(beta)`` is a product of a non-negative factor and a
        quadratic, extreme at the box's alpha ends and B's extremes; ``d/d beta = A'(beta) + alpha^2 B'(beta)`` is
        bilinear in ``(alpha^2, beta)``, extreme at the corners."""
        (a_lo, b_lo), (a_hi, b_hi) = lower, upper
        b_min, b_max = _quadratic_range(self.B, b_lo, b_hi)
        d_alpha = [2 * a * b for a in (a_lo, a_hi) for b in (b_min, b_max)]
        d_beta = [
            self.A[1] + 2 * self.A[2] * beta + a * a * (self.B[1] + 2 * self.B[2] * beta)
            for a in (a_lo, a_hi)
            for beta in (b_lo, b_hi)
        ]
        return np.array([min(d_alpha), min(d_beta)]), np.array([max(d_alpha), max(d_beta)])
