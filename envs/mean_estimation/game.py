"""The mean-estimation game of [H] §4 (SPEC §1) as batched numpy stages.

One episode is one round. ``MeanEstimationGame`` draws the data of ``B`` independent episodes at once and plays
them through a :class:`~fedgames.envs.protocol.Protocol`; the PettingZoo environment is this with ``B = 1``.
Nothing here imports PettingZoo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedgames.envs.config import SCALE_MAX, SCALE_MIN, GameConfig, at_least, each_player, number, param, players
from fedgames.envs.health import Health
from fedgames.envs.protocol import Protocol
from fedgames.memory import check_fits


@dataclass(frozen=True)
class World:
    """The hidden state of a batch of episodes (what nature drew before anyone acts).

    Attributes:
        mu: ``(B, d)`` global mean.
        xbar: ``(B, N, d)`` each player's sample mean.
        sample_var: ``(B, N)`` each player's unbiased estimate of ``E||x_ij - mu_i||^2`` (0 when n = 1).
        sigma2: ``(B, N)`` each player's true ``sigma_i^2``.
    """

    mu: np.ndarray
    xbar: np.ndarray
    sample_var: np.ndarray
    sigma2: np.ndarray


@dataclass(frozen=True)
class Outcome:
    """Everything one batch of episodes produced (all arrays batched over episodes and players); ``health``: which
    episodes diverged (a non-finite estimate, squared error, payment or reward; their rewards and payments are
    then 0, see :class:`~fedgames.envs.health.Health`)."""

    messages: np.ndarray
    aggregate: np.ndarray
    responses: np.ndarray
    estimates: np.ndarray
    sq_error: np.ndarray
    payments: np.ndarray | None
    rewards: np.ndarray
    health: Health


PRIOR_RATIO = 1e8
"""How many times the spread of the sample means the prior's ``prior_std`` may be: float64 then resolves the
estimation errors to about ``1e-8`` of their size."""

SIGMA_CV_MIN, SIGMA_CV_MAX = 1e-6, 10.0
"""The range of a non-zero ``sigma_cv``: below, the Gamma shape ``1 / sigma_cv^2`` is beyond what its sampler
draws; above, samples of ``sigma_i^2`` miss their mean (at ``sigma_cv = 1000`` 100,000 draws average 0.04)."""

STAGE_VALUES = 16
"""Float64 values per player and dimension one episode of a step holds at its peak (messages, responses,
estimates and their temporaries), for the memory check of ``n_players * dim``."""


@dataclass(frozen=True)
class MeanEstimationConfig(GameConfig):
    """The mean-estimation game's configuration (SPEC §1; the convention of :mod:`fedgames.envs.contract`).

    Attributes:
        n_players: ``N >= 2``.
        n_samples: ``n >= 1`` samples per player (with ``n = 1`` the observed sample variance is 0: undefined).
        dim: ``d >= 1``.
        sigma: ``0 < sigma <= 1e15``, the within-client noise scale (one value, or one per player).
        sigma_star: ``0 <= sigma_* <= 1e15``, the spread of client means around ``mu`` (the spread of the
            sample means, ``sqrt(sigma^2 / n + sigma_*^2)``, at least ``1e-15``).
        lam: ``lambda_i >= 0``, one value or one per player (eq. 2).
        alpha_max: top of the aggressiveness range (``0 < alpha_max <= 1e15``).
        bias_max: bias bound per coordinate (``0 <= bias_max <= 1e15``).
        prior_std: the prior of ``mu`` is ``N(0, prior_std^2 I_d)`` (``>= 0``, at most ``1e8`` times the spread
            of the sample means).
        sigma_cv: heterogeneity option: when ``> 0`` each episode draws ``sigma_i^2`` from a Gamma distribution
            with mean ``sigma_i^2`` and this coefficient of variation (``E sigma_i^2`` and so the theory are
            unchanged); 0 or in ``[1e-6, 10]``.
    """

    game: ClassVar[str] = "mean_estimation_v0"

    n_players: int = param(3, players(2))
    n_samples: int = param(10, at_least(1))
    dim: int = param(2, at_least(1))
    sigma: Any = param(1.0, each_player(strict=True), per_player=True)
    sigma_star: float = param(0.5, number(0.0, SCALE_MAX))
    lam: Any = param(1.0, each_player(), per_player=True)
    alpha_max: float = param(5.0, number(0.0, SCALE_MAX, strict=True))
    bias_max: float = param(1.0, number(0.0, SCALE_MAX))
    prior_std: float = param(1.0, number(0.0, SCALE_MAX))
    sigma_cv: float = param(0.0, number(0.0, SIGMA_CV_MAX))

    def validate(self) -> None:
        """The ranges in which the game's float64 stages (and its float32 observations and action bounds) stay
        finite and resolve the estimation errors: every ``sigma_i <=`` :data:`~fedgames.envs.config.SCALE_MAX`
        (squared, the observed sample variance and the action bounds stay within float32); the spread of the
        sample means ``sqrt(nu_i) >=`` :data:`~fedgames.envs.config.SCALE_MIN` (squared errors stay normal
        floats); ``prior_std`` at most :data:`PRIOR_RATIO` times it (a hidden mean that much larger drowns the
        errors in rounding; the game is translation invariant, so a smaller ``prior_std`` plays the same game);
        ``sigma_cv`` 0 or at least :data:`SIGMA_CV_MIN` (its Gamma shape ``1 / sigma_cv^2`` overflows below); the
        episode of ``n_players * dim`` values fits in memory."""
        sigma = np.asarray(self.sigma)
        if sigma.max() > SCALE_MAX:
            raise ValueError(f"sigma must be at most {SCALE_MAX:g}, got {float(sigma.max()):g}")
        spread = float(np.sqrt((sigma**2 / self.n_samples + self.sigma_star**2).min()))
        if spread < SCALE_MIN:
            raise ValueError(
                f"sigma and sigma_star: the spread of the sample means sqrt(sigma^2/n_samples + sigma_star^2) must "
                f"be at least {SCALE_MIN:g}, got {spread:.3g}"
            )
        if self.prior_std > PRIOR_RATIO * spread:
            raise ValueError(
                f"prior_std must be at most {PRIOR_RATIO:g} times the spread of the sample means ({spread:.3g}), "
                f"i.e. <= {PRIOR_RATIO * spread:.3g}, got {self.prior_std!r}: a larger hidden mean drowns the "
                "estimation errors in rounding (the game is translation invariant: a smaller prior_std plays it)"
            )
        if 0 < self.sigma_cv < SIGMA_CV_MIN:
            raise ValueError(f"sigma_cv must be 0 or in [{SIGMA_CV_MIN:g}, {SIGMA_CV_MAX:g}], got {self.sigma_cv!r}")
        check_fits(
            f"{self.game} with n_players={self.n_players} and dim={self.dim}",
            8 * STAGE_VALUES * self.n_players * self.dim,
        )


class MeanEstimationGame:
    """The batched stages of the mean-estimation game (SPEC §1); its configuration's fields (``n_players``, ``dim``,
    ``sigma`` ...) read as its attributes.

    Args:
        config: a :class:`MeanEstimationConfig` (default: the defaults), or its fields as keywords.
    """

    # the configuration's fields, copied onto the game (MeanEstimationConfig documents them)
    n_players: int
    n_samples: int
    dim: int
    sigma: np.ndarray
    sigma_star: float
    lam: np.ndarray
    alpha_max: float
    bias_max: float
    prior_std: float
    sigma_cv: float

    def __init__(self, config: MeanEstimationConfig | None = None, **fields: Any) -> None:
        self.config = config if config is not None else MeanEstimationConfig.from_kwargs(**fields)
        for name in self.config.names():
            setattr(self, name, getattr(self.config, name))

    @property
    def nu(self) -> np.ndarray:
        """``nu_i = E sigma_i^2 / n + sigma_*^2`` per player ([H] Thm 4.1)."""
        return self.sigma**2 / self.n_samples + self.sigma_star**2

    @property
    def action_names(self) -> tuple[str, ...]:
        return ("alpha", "beta") + tuple(f"b_{k + 1}" for k in range(self.dim))

    @property
    def obs_dim(self) -> int:
        return self.dim + 1

    def protocol(self) -> Protocol:
        """The plain protocol: mean aggregation, broadcast response, no payments."""
        low = np.concatenate([[0.0, 0.0], np.full(self.dim, -self.bias_max)])
        high = np.concatenate([[self.alpha_max, 1.0], np.full(self.dim, self.bias_max)])
        return Protocol(self.action_names, low, high)

    def sample_world(self, rng: np.random.Generator, batch: int) -> World:
        """Draw ``batch`` episodes' data (SPEC §1 "Data").

        The sample mean and the sample variance are drawn from their exact distributions (for Gaussian samples
        they are independent: ``xbar_i = mu_i + N(0, sigma_i^2/(n d) I)`` with ``mu_i = mu + N(0, sigma_*^2/d I)``,
        drawn as one Gaussian ``xbar_i ~ N(mu, (sigma_*^2 + sigma_i^2/n)/d I)``; ``(n-1) d s_i^2 / sigma_i^2 ~
        chi^2_{(n-1) d}``), which costs ``O(d)`` instead of ``O(n d)`` per player.
        """
        n_players, d, n = self.n_players, self.dim, self.n_samples
        mu = self.prior_std * rng.standard_normal((batch, d))
        sigma2 = np.broadcast_to(self.sigma**2, (batch, n_players)).copy()
        if self.sigma_cv > 0:
            shape = 1.0 / self.sigma_cv**2
            sigma2 = sigma2 * rng.gamma(shape, 1.0 / shape, size=(batch, n_players))
        spread = np.sqrt((self.sigma_star**2 + sigma2 / n) / d)
        xbar = mu[:, None, :] + spread[..., None] * rng.standard_normal((batch, n_players, d))
        if n > 1:
            dof = (n - 1) * d
            sample_var = sigma2 * rng.chisquare(dof, size=(batch, n_players)) / dof
        else:
            sample_var = np.zeros((batch, n_players))
        return World(mu=mu, xbar=xbar, sample_var=sample_var, sigma2=sigma2)

    def observe(self, world: World) -> np.ndarray:
        """``(B, N, d + 1)``: each player's own sample mean and sample variance — all it may legitimately use.
        With ``n_samples = 1`` the sample variance is undefined (``n - 1 = 0`` degrees of freedom) and observed as
        0: a constant, so it tells the player nothing, as it should."""
        return np.concatenate([world.xbar, world.sample_var[..., None]], axis=-1)

    def play(self, protocol: Protocol, world: World, actions: np.ndarray, rng: np.random.Generator) -> Outcome:
        """Play a batch of episodes; ``actions`` is ``(B, N, d + 2)`` laid out ``[alpha, beta, b_1 .. b_d]``.

        Attack (eq. 4): ``m_i = xbar_i + alpha_i xi_i + b_i`` with ``xi = g / sqrt(d)``. Defence (eq. 5): from
        its response ``r_i`` player i forms ``mbar^i = r_i - (m_i - xbar_i) / N`` (undoing its own manipulation)
        and keeps ``theta_i = (1 - beta_i) mbar^i + beta_i xbar_i``. Reward (eq. 2):
        ``R_i = (1/(N-1)) sum_{j != i} ||theta_j - mu||^2 - lambda_i ||theta_i - mu||^2 - p_i``.

        Random draws do not depend on the actions (common random numbers across profiles). Numerical health
        (:mod:`~fedgames.envs.health`): an episode with a non-finite estimate, squared error, payment or reward is
        diverged, and its rewards and payments are 0.
        """
        actions = protocol.check_actions(actions)
        n_players, d = self.n_players, self.dim
        alpha, beta, bias = actions[..., 0], actions[..., 1], actions[..., 2:]
        xi = rng.standard_normal((actions.shape[0], n_players, d))
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is flagged by the health check below
            manipulation = (alpha / np.sqrt(d))[..., None] * xi + bias
            messages = world.xbar + manipulation
            server = protocol.server_round(messages, rng)
            own_view = server.responses - manipulation / n_players
            estimates = own_view + beta[..., None] * (world.xbar - own_view)
            error = estimates - world.mu[:, None, :]
            sq_error = np.einsum("bnd,bnd->bn", error, error)
            others = (sq_error.sum(axis=1, keepdims=True) - sq_error) / (n_players - 1)
            rewards = others - self.lam * sq_error
            if server.payments is not None:
                rewards = rewards - server.payments
        health = Health.start(actions.shape[0])
        health.check(1, parameters=estimates, loss=sq_error, payment=server.payments, reward=rewards)
        return Outcome(
            messages=messages,
            aggregate=server.aggregate,
            responses=server.responses,
            estimates=estimates,
            sq_error=sq_error,
            payments=health.silence(server.payments),
            rewards=health.silence(rewards),
            health=health,
        )
