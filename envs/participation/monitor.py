"""Monitoring and early warning over the server's view of the participation game (SPEC §9, [G] §12, App. E.6,
E.15).

A :class:`Monitor` reads, round by round, only what the server sees — who took part, their public and challenge
scores, the reported metric — and raises four named signals (:data:`SIGNALS`), each with the round it first fired
and the value that triggered it:

- ``participation_near_threshold``: the participation rate is within ``margin`` above the domino threshold of
  the retention map ([G] Thm 7.2, when the theory gives one) or below it, or it has fallen ``falls`` rounds in a
  row, each fall at least the one before (a decline that accelerates: leaving an unstable state, where the
  approach to a stable one slows down);
- ``retention_variance_rising``: the variance of the round-to-round retention (the share of last round's
  participants that stayed) over the last ``window`` rounds (fewer, at least two, early in a run) exceeds
  ``1 / N`` (more than one client's worth of spread) and ``factor`` times its value a round earlier (critical
  slowing down before a tipping point);
- ``metric_welfare_gap``: the reported metric minus the welfare estimate that challenges give, the challenged
  participants' mean challenge score, exceeds ``z_{1 - alpha / T}`` times its standard deviation under honesty
  (exact for the mean metric). Under expected mixing every participant is challenged and the gap is
  ``(1 - pi)(mean s - mean h)``, standard deviation ``(1 - pi) sqrt((sigma_s^2 + sigma_h^2) / |P|)``; under random
  challenges of ``n_c`` of the ``n`` participants it is ``(1 - n_c / n)(mean of the others' s - mean of the
  challenged h)`` (scores centred at the honest ``q0_i``), standard deviation ``(1 - n_c / n)
  sqrt(sigma_s^2 / (n - n_c) + sigma_h^2 / n_c)``; either way ``(1 - pi) delta ubar`` in expectation;
- ``gaming_detected``: the GLS test of SPEC §8 (:mod:`~fedgames.envs.participation.detection`), accumulated per
  client over the rounds it took part in (with the challenge scores of the rounds it was challenged in), rejects
  for some client at level ``alpha / (N T)`` (Bonferroni over the clients and the rounds it is read in).

The two statistical signals thus raise a false alarm on an honest run with probability at most ``alpha`` each
(``alpha`` the stated level); the two dynamic ones stay silent while participation settles at a stable state
above the threshold. The monitor runs on ``B`` episodes at once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import norm

from fedgames.envs.participation.game import ParticipationConfig, participation_config, theory_setting
from fedgames.envs.participation.theory import Setting, domino_threshold
from fedgames.envs.protocol import Protocol
from fedgames.mechanisms.audit import MIXINGS, ScoreTest, score_payment, score_test
from fedgames.validation import integer, real

SIGNALS = ("participation_near_threshold", "retention_variance_rising", "metric_welfare_gap", "gaming_detected")


@dataclass(frozen=True)
class Signal:
    """A signal that fired: its name, the round it first fired in (1-based) and the value that triggered it."""

    name: str
    round: int
    value: float


@dataclass
class Monitor:
    """SPEC §9's monitor over ``batch`` episodes of ``n_players`` clients and ``horizon`` rounds.

    Args:
        n_players: ``N``.
        horizon: ``T``, the rounds a run lasts (the Bonferroni count of the statistical signals).
        test: the GLS terms (:class:`~fedgames.mechanisms.audit.ScoreTest`: the honest ``q0``, ``delta``,
            ``gamma`` and the scores' noise, which the server knows); ``None``: no ``gaming_detected`` nor
            ``metric_welfare_gap``.
        pi: the challenge-mixing ratio of the paid score, in ``[0, 1]``.
        mixing: ``"expected"`` (every participant's challenge score seen, weight ``pi``) or ``"random"``
            (:data:`~fedgames.mechanisms.audit.MIXINGS`).
        threshold: the domino threshold of the retention map, or ``None`` (no theory for it).
        margin: how close above the threshold counts as near, ``>= 0``.
        falls: ``r``, consecutive accelerating falls that fire the participation signal (``>= 2``).
        window: rounds of the rolling retention variance (``>= 2``).
        factor: how much the rolling variance must grow (``>= 1``).
        alpha: the false-alarm level of each statistical signal over a run, in ``(0, 1)``.
        batch: episodes monitored together.
    """

    n_players: int
    horizon: int
    test: ScoreTest | None = None
    pi: float = 0.0
    mixing: str = "expected"
    threshold: float | None = None
    margin: float = 0.05
    falls: int = 3
    window: int = 3
    factor: float = 2.0
    alpha: float = 0.05
    batch: int = 1
    round: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        integer("n_players", self.n_players, 1)
        integer("horizon", self.horizon, 1)
        integer("batch", self.batch, 1)
        real("pi", self.pi, 0.0, 1.0)
        if self.mixing not in MIXINGS:
            raise ValueError(f"mixing must be one of {MIXINGS}, got {self.mixing!r}")
        if self.threshold is not None:
            real("threshold", self.threshold, 0.0, 1.0)
        real("margin", self.margin)
        integer("falls", self.falls, 2)
        integer("window", self.window, 2)
        real("factor", self.factor, 1.0)
        real("alpha", self.alpha, 0.0, 1.0, strict=True, strict_maximum=True)
        shape = (self.batch, self.n_players)
        self._numerator, self._information = np.zeros(shape), np.zeros(shape)
        self._present: np.ndarray | None = None
        self._participation: list[np.ndarray] = []
        self._retention: list[np.ndarray] = []
        self._run = np.zeros(self.batch, dtype=int)  # consecutive accelerating falls
        self.first: dict[str, np.ndarray] = {name: np.zeros(self.batch, dtype=int) for name in SIGNALS}
        self.values: dict[str, np.ndarray] = {name: np.full(self.batch, np.nan) for name in SIGNALS}

    def update(
        self,
        present: np.ndarray,
        scores: np.ndarray,
        challenges: np.ndarray,
        metric: np.ndarray,
        challenged: np.ndarray | None = None,
    ) -> dict:
        """Read one round: ``present``, ``scores``, ``challenges`` ``(B, N)`` (scores of the absent ignored), the
        reported ``metric`` ``(B,)`` and which participants were challenged (``(B, N)``; ``None``: all of them,
        expected mixing's view; challenge scores off them ignored). Returns ``{signal: (fired (B,), value (B,))}``
        for this round; the first firing of each is kept in :attr:`first` (its round, 0 while silent) and
        :attr:`values`."""
        present = np.asarray(present, dtype=bool)
        challenged = present if challenged is None else np.asarray(challenged, dtype=bool) & present
        self.round += 1
        now = {
            "participation_near_threshold": self._near_threshold(present.mean(1)),
            "retention_variance_rising": self._variance_rising(present),
            "metric_welfare_gap": self._gap(present, scores, challenges, challenged, np.asarray(metric, dtype=float)),
            "gaming_detected": self._detected(present, scores, challenges, challenged),
        }
        for name, (fired, value) in now.items():
            new = fired & (self.first[name] == 0)
            self.first[name] = np.where(new, self.round, self.first[name])
            self.values[name] = np.where(new, value, self.values[name])
        self._present = present
        return now

    def signals(self, episode: int = 0) -> list[Signal]:
        """The signals that have fired in ``episode``, in the order they first fired."""
        fired = [Signal(n, int(self.first[n][episode]), float(self.values[n][episode])) for n in SIGNALS]
        return sorted((s for s in fired if s.round > 0), key=lambda s: s.round)

    def report(self, episode: int = 0) -> dict[str, dict[str, float] | None]:
        """``{signal: {"round": .., "value": ..} or None}`` for ``episode`` (what ``infos`` and reports carry)."""
        fired = {s.name: {"round": s.round, "value": s.value} for s in self.signals(episode)}
        return {name: fired.get(name) for name in SIGNALS}

    def _near_threshold(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        history = self._participation
        if len(history) >= 2:
            fall, before = history[-1] - x, history[-2] - history[-1]
            accelerating = (fall > 0) & ((self._run == 0) | (fall >= before))
            self._run = np.where(accelerating, self._run + 1, np.where(fall > 0, 1, 0))
        elif history:
            self._run = (history[-1] - x > 0).astype(int)
        history.append(x)
        near = np.zeros(x.shape, dtype=bool) if self.threshold is None else x <= self.threshold + self.margin
        return near | (self._run >= self.falls), x

    def _variance_rising(self, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        silent = (np.zeros(self.batch, dtype=bool), np.full(self.batch, np.nan))
        if self._present is None:
            return silent
        before = self._present.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            self._retention.append(np.where(before > 0, (present & self._present).sum(1) / before, np.nan))
        w = self.window
        if len(self._retention) < 3:  # two rolling variances, each of at least two retentions
            return silent
        recent = np.var(np.stack(self._retention[-w:]), axis=0)
        earlier = np.var(np.stack(self._retention[-w - 1 : -1]), axis=0)
        fired = (recent > 1 / self.n_players) & (recent > self.factor * earlier)
        return np.nan_to_num(fired, nan=False).astype(bool), recent

    def _gap(
        self,
        present: np.ndarray,
        scores: np.ndarray,
        challenges: np.ndarray,
        challenged: np.ndarray,
        metric: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        silent = np.zeros(self.batch, dtype=bool), np.full(self.batch, np.nan)
        if self.test is None or self.pi == 1:
            return silent
        count, seen = present.sum(1), challenged.sum(1)
        sigma_s2, sigma_h2 = self.test.score_noise**2, self.test.challenge_noise**2
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.mixing == "expected":
                gap = metric - np.where(present, challenges, 0.0).sum(1) / count
                sd = (1 - self.pi) * np.sqrt((sigma_s2 + sigma_h2) / count)
            else:  # only the challenged show their challenge score; the others are paid on their public one
                q0 = np.broadcast_to(np.asarray(self.test.q0, dtype=float), present.shape)
                plain = present & ~challenged
                share = seen / count
                gap = (1 - share) * (
                    np.where(plain, scores - q0, 0.0).sum(1) / (count - seen)
                    - np.where(challenged, challenges - q0, 0.0).sum(1) / seen
                )
                sd = (1 - share) * np.sqrt(sigma_s2 / (count - seen) + sigma_h2 / seen)
        critical = norm.ppf(1 - self.alpha / self.horizon)
        return np.nan_to_num(gap > critical * sd, nan=False).astype(bool), gap

    def _detected(
        self, present: np.ndarray, scores: np.ndarray, challenges: np.ndarray, challenged: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        if self.test is None:
            return np.zeros(self.batch, dtype=bool), np.full(self.batch, np.nan)
        self._numerator += np.where(present, self.test.numerator(scores, challenges, challenged), 0.0)
        self._information += np.where(present, self.test.information(challenged), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(self._information > 0, self._numerator / np.sqrt(self._information), -np.inf)
        largest = z.max(1)
        critical = norm.ppf(1 - self.alpha / (self.n_players * self.horizon))
        return largest > critical, largest


@functools.lru_cache(maxsize=64)
def _threshold(setting: Setting) -> float | None:
    """The domino threshold of ``setting`` (remembered: every episode's monitor asks again)."""
    return domino_threshold(setting)


def game_monitor(config: ParticipationConfig, protocol: Protocol, batch: int = 1, **options: Any) -> Monitor:
    """A :class:`Monitor` for the participation game of ``config`` (its players, rounds and score rules) under
    ``protocol``: the paid score's ``pi``, the GLS terms of the game's rules (none where a score is noiseless)
    and the domino threshold of its mean-field theory where the theory covers the protocol
    (:func:`~fedgames.envs.participation.game.theory_setting`); ``options`` as :class:`Monitor`'s."""
    try:
        threshold = _threshold(theory_setting(config, protocol))
    except ValueError:  # the mean-field theory does not cover this protocol (e.g. audits within a budget)
        threshold = None
    noiseless = min(config.score_noise, config.challenge_noise) == 0
    test = None if noiseless else score_test(config, "monitor")
    payment = score_payment(protocol, "monitor")
    return Monitor(
        config.n_players, config.rounds, test, float(payment.pi), payment.mixing, threshold, batch=batch, **options
    )


def env_monitor(env: Any, batch: int = 1, **options: Any) -> Monitor:
    """:func:`game_monitor` for ``env``, a ``participation_v0`` env with any mechanisms around it (its config read
    through the game contract, :func:`~fedgames.envs.participation.game.participation_config`, under
    ``env.protocol``)."""
    return game_monitor(participation_config(env), env.protocol, batch, **options)


__all__ = ["SIGNALS", "Monitor", "Signal", "env_monitor", "game_monitor"]
