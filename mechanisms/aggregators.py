"""Batched (robust) aggregation rules and pre-aggregation steps.

Every function takes ``messages`` of shape ``(B, N, d)``: ``B`` independent
episodes, each with ``N`` players sending a message vector in ``R^d``.
Aggregation rules return an array of shape ``(B, d)``; pre-aggregation steps
return an array of shape ``(B, N, d)``.  All functions are pure and
deterministic, vectorised over the batch axis, never modify their input, and
raise ``ValueError`` for invalid parameters (the message names the parameter,
the value given and the allowed range), for ``messages`` that are not 3-D,
have ``N < 1`` or ``d < 1``, or contain NaN / inf.  ``B = 0`` is allowed.

Array-generic: each rule is one implementation over the helpers of
:mod:`fedgames.arrays`.  Numpy input (or anything ``np.asarray`` takes) is
computed in float64 and gives a numpy result; a torch tensor gives a tensor of
its own floating dtype (integer tensors: float64) on its own device (e.g. the
FedSGD engine's GPU messages), with no round trip through numpy.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch

from fedgames.arrays import (
    Array,
    arange,
    argsort,
    is_torch,
    namespace,
    put_along_last,
    sort,
    vector_norm,
    zeros,
)

__all__ = [
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "geometric_median",
    "clip_norm",
    "nearest_neighbor_mixing",
    "RULES",
    "PRE_AGGREGATIONS",
]


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _as_real(messages: object, rule: str) -> Array:
    """A torch tensor of a real floating dtype (integer and bool tensors become
    float64), or anything else as a float64 numpy array."""
    if not is_torch(messages):
        return np.asarray(messages, dtype=np.float64)
    if messages.is_complex():
        raise ValueError(f"{rule}: messages must be real, got dtype {messages.dtype}")
    return messages if messages.is_floating_point() else messages.to(torch.float64)


def _check_messages(messages: Array, rule: str) -> Array:
    """Return ``messages`` as a real array of shape (B, N, d) (see :func:`_as_real`), or raise."""
    x = _as_real(messages, rule)
    if x.ndim != 3:
        raise ValueError(
            f"{rule}: messages must have shape (B, N, d) (ndim == 3), got ndim={x.ndim} with shape {tuple(x.shape)}"
        )
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"{rule}: messages needs n_players >= 1 and d >= 1, got shape {tuple(x.shape)}")
    if not bool(namespace(x).isfinite(x).all()):
        raise ValueError(f"{rule}: messages must be finite, got NaN or inf entries")
    return x


def _check_int(rule: str, name: str, value: object) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not a bool), else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{rule}: {name} must be an integer, got {name}={value!r}")
    return int(value)


def _check_positive_float(rule: str, name: str, value: object, *, allow_inf: bool) -> float:
    """Return ``value`` as a float if it is a real number > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{rule}: {name} must be a real number > 0, got {name}={value!r}")
    v = float(value)
    if not v > 0 or (math.isinf(v) and not allow_inf):
        allowed = "0 < {} <= inf" if allow_inf else "0 < {} < inf"
        raise ValueError(f"{rule}: {name} must satisfy {allowed.format(name)}, got {name}={value!r}")
    return v


def _pairwise_sq_dists(x: Array) -> Array:
    """Squared Euclidean distances, shape (B, N, N): ``D[b, i, j] = ||x_bi - x_bj||^2``.

    Computed from explicit differences (one row of players at a time), not via
    the Gram-matrix identity, so that the result is exactly symmetric, has an
    exactly zero diagonal and gives exactly 0 for duplicated messages; this
    keeps tie-breaking reproducible.
    """
    xp = namespace(x)
    rows = []
    for i in range(x.shape[1]):
        diff = x[:, i : i + 1, :] - x
        rows.append(xp.einsum("bnd,bnd->bn", diff, diff))
    return xp.stack(rows, 1)


def _selection_mean(x: Array, idx: Array) -> Array:
    """Means of selected messages: ``out[b, s] = mean_j x[b, idx[b, s, j]]``.

    ``x`` has shape (B, N, d) and ``idx`` shape (B, S, k) with entries in
    ``[0, N)`` and no repeats along the last axis; returns shape (B, S, d).
    Uses a (B, S, N) averaging matrix instead of gathering a (B, S, k, d) copy.
    """
    weights = zeros(tuple(idx.shape[:-1]) + (x.shape[1],), like=x)
    return put_along_last(weights, idx, 1.0 / idx.shape[-1]) @ x


def _no_self(dists: Array, value: float) -> Array:
    """``dists`` with its diagonal (each message's distance to itself) set to ``value``, in place."""
    diagonal = list(range(dists.shape[1]))
    dists[:, diagonal, diagonal] = value
    return dists


def _krum_scores(x: Array, f: int, rule: str) -> Array:
    """Krum scores, shape (B, N), after validating ``f`` against N = x.shape[1]."""
    f = _check_int(rule, "f", f)
    n = x.shape[1]
    if f < 0:
        raise ValueError(f"{rule}: f must satisfy f >= 0, got f={f}")
    if n <= 2 * f + 2:
        raise ValueError(f"{rule}: f={f} needs n_players > 2*f + 2 = {2 * f + 2}, got n_players={n}")
    # Exclude each message's distance to itself; +inf sorts last.
    dists = _no_self(_pairwise_sq_dists(x), math.inf)
    return sort(dists, 2)[:, :, : n - f - 2].sum(2)


# ---------------------------------------------------------------------------
# Aggregation rules: (B, N, d) -> (B, d)
# ---------------------------------------------------------------------------


def mean(messages: Array) -> Array:
    """Arithmetic mean over players: ``out[b] = (1/N) * sum_i messages[b, i]``.

    Not robust: a single player can move the output arbitrarily far.
    """
    x = _check_messages(messages, "mean")
    return x.mean(1)


def median(messages: Array) -> Array:
    """Coordinate-wise median over players.

    ``out[b, k] = median(messages[b, :, k])``; for even N this is the mean of
    the two middle values (as ``numpy.median``).

    Source: Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed
    Learning: Towards Optimal Statistical Rates", ICML 2018.
    """
    x = _check_messages(messages, "median")
    ordered, half = sort(x, 1), x.shape[1] // 2
    if x.shape[1] % 2:
        return ordered[:, half]
    return (ordered[:, half - 1] + ordered[:, half]) / 2


def trimmed_mean(messages: Array, f: int | None = None, fraction: float | None = None) -> Array:
    """Coordinate-wise trimmed mean.

    Per episode b and coordinate k, sort ``messages[b, :, k]`` ascending into
    ``v_1 <= ... <= v_N``, drop the f smallest and the f largest values and
    return ``(1 / (N - 2f)) * sum_{j=f+1}^{N-f} v_j``.

    At most one of ``f`` and ``fraction`` may be given; with neither, f = 0
    (the plain mean).  ``fraction`` must lie in [0, 0.5) and means
    ``f = floor(fraction * N)``.  Requires ``f >= 0`` and ``N - 2f >= 1``.

    Source: Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed
    Learning: Towards Optimal Statistical Rates", ICML 2018.
    """
    x = _check_messages(messages, "trimmed_mean")
    n = x.shape[1]
    if f is not None and fraction is not None:
        raise ValueError(f"trimmed_mean: give at most one of f and fraction, got f={f!r} and fraction={fraction!r}")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
            raise ValueError(f"trimmed_mean: fraction must be a real number in [0, 0.5), got fraction={fraction!r}")
        if not 0.0 <= float(fraction) < 0.5:
            raise ValueError(f"trimmed_mean: fraction must satisfy 0 <= fraction < 0.5, got fraction={fraction!r}")
        f = math.floor(float(fraction) * n)
    f = 0 if f is None else _check_int("trimmed_mean", "f", f)
    if f < 0 or n - 2 * f < 1:
        raise ValueError(
            f"trimmed_mean: f must satisfy 0 <= f and n_players - 2*f >= 1, i.e. "
            f"0 <= f <= {(n - 1) // 2} for n_players={n}, got f={f}"
        )
    return sort(x, 1)[:, f : n - f, :].mean(1)


def multi_krum(messages: Array, f: int, m: int) -> Array:
    """Multi-Krum: the mean of the m messages with the lowest Krum scores.

    For each message i, ``score(i)`` is the SUM of the squared Euclidean
    distances from ``x_i`` to its ``N - f - 2`` nearest OTHER messages
    (Blanchard et al. 2017).  The messages are ordered by score with a stable
    sort (equal scores: lower index first) and the first m are averaged.

    Requires ``f >= 0``, ``N > 2f + 2`` (so that ``N - f - 2 >= 1``) and
    ``1 <= m <= N``.

    Note: some libraries (e.g. ByzFL's ``Krum`` / ``MultiKrum``) score each
    message by averaging over its ``N - f - 1`` nearest other messages
    instead; this implementation sums over ``N - f - 2`` as in Blanchard et
    al., so the selected messages can differ from theirs.

    Source: Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with
    Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017.
    """
    return _multi_krum(messages, f, m, "multi_krum")


def krum(messages: Array, f: int, m: int = 1) -> Array:
    """Krum: the message with the lowest Krum score (Blanchard et al. 2017).

    ``score(i)`` is the SUM of squared Euclidean distances from ``x_i`` to its
    ``N - f - 2`` nearest OTHER messages; with ``m = 1`` the message with the
    lowest score is returned, ties going to the lowest index (stable sort).
    With ``m > 1`` this is :func:`multi_krum` (the mean of the m best-scored
    messages).  Requires ``f >= 0``, ``N > 2f + 2`` and ``1 <= m <= N``.

    Note: some libraries (e.g. ByzFL) score each message over its
    ``N - f - 1`` nearest other messages instead; this implementation uses
    ``N - f - 2`` as in Blanchard et al.

    Source: Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with
    Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017.
    """
    return _multi_krum(messages, f, m, "krum")


def _multi_krum(messages: Array, f: int, m: int, rule: str) -> Array:
    x = _check_messages(messages, rule)
    n = x.shape[1]
    m = _check_int(rule, "m", m)
    if not 1 <= m <= n:
        raise ValueError(f"{rule}: m must satisfy 1 <= m <= n_players = {n}, got m={m}")
    scores = _krum_scores(x, f, rule)
    best = argsort(scores, 1)[:, :m]
    return _selection_mean(x, best[:, None, :])[:, 0, :]


def geometric_median(messages: Array, tol: float = 1e-8, max_iter: int = 1000, eps: float = 1e-12) -> Array:
    """Approximate geometric median by the (smoothed) Weiszfeld algorithm.

    The geometric median of ``x_1, ..., x_N`` is ``argmin_z sum_i ||z - x_i||``.
    Per episode, starting from the coordinate-wise mean ``z_0``, iterate

        w_i     = 1 / max(||z_t - x_i||, eps)
        z_{t+1} = sum_i w_i x_i / sum_i w_i

    (Weiszfeld 1937).  Flooring the distance at ``eps`` is the smoothing of
    Pillutla, Kakade, Harchaoui (2022): it keeps the weights finite when the
    iterate coincides with (or comes within eps of) a data point, in which case
    that point gets a weight of about ``1/eps`` and the iterate stays (almost)
    at it.  With this smoothing the algorithm minimises a smoothed objective
    that equals ``sum_i ||z - x_i||`` up to at most ``N * eps / 2``.

    Stopping: episode b is frozen once ``||z_{t+1} - z_t|| <= tol * (1 + scale_b)``
    with ``scale_b = max_i ||x_bi - z_0||`` (the spread of the episode's
    messages), and the loop ends when every episode is frozen, i.e. when the
    largest update over the batch is below its tolerance.  Freezing per
    episode makes each result independent of the other episodes in the batch.
    If some episode has not converged after ``max_iter`` iterations, its
    current iterate is returned WITHOUT any error or warning (Weiszfeld
    converges, but can be slow when the median lies at or near a data point).

    Requires ``tol > 0``, ``max_iter >= 1`` (integer) and ``eps > 0``.

    Sources: E. Weiszfeld, "Sur le point pour lequel la somme des distances de
    n points donnés est minimum", Tohoku Math. J. 43, 1937; K. Pillutla,
    S. M. Kakade, Z. Harchaoui, "Robust Aggregation for Federated Learning",
    IEEE Trans. Signal Process. 70, 2022.
    """
    x = _check_messages(messages, "geometric_median")
    tol = _check_positive_float("geometric_median", "tol", tol, allow_inf=False)
    eps = _check_positive_float("geometric_median", "eps", eps, allow_inf=False)
    max_iter = _check_int("geometric_median", "max_iter", max_iter)
    if max_iter < 1:
        raise ValueError(f"geometric_median: max_iter must satisfy max_iter >= 1, got max_iter={max_iter}")
    xp = namespace(x)
    z = x.mean(1)
    threshold = tol * (1.0 + xp.amax(vector_norm(x - z[:, None, :], 2), 1))
    active = arange(x.shape[0], like=x)
    for _ in range(max_iter):
        if len(active) == 0:
            break
        xa, za = x[active], z[active]
        weights = 1.0 / xp.clip(vector_norm(xa - za[:, None, :], 2), eps, None)
        z_new = xp.einsum("bn,bnd->bd", weights, xa) / weights.sum(1)[:, None]
        z[active] = z_new
        moved = vector_norm(z_new - za, 1) > threshold[active]
        active = active[moved]
    return z


# ---------------------------------------------------------------------------
# Pre-aggregation steps: (B, N, d) -> (B, N, d)
# ---------------------------------------------------------------------------


def clip_norm(messages: Array, tau: float) -> Array:
    """Scale each message to Euclidean norm at most ``tau``.

    ``out[b, i] = x_bi * min(1, tau / ||x_bi||)`` (messages with norm <= tau,
    including zero, are returned unchanged).  Requires ``tau > 0``
    (``tau = inf`` means no clipping).

    Static norm clipping as a pre-aggregation step, see e.g. Karimireddy, He,
    Jaggi, "Learning from History for Byzantine Robust Optimization",
    ICML 2021, and Allouah et al. (AISTATS 2023).
    """
    x = _check_messages(messages, "clip_norm")
    tau = _check_positive_float("clip_norm", "tau", tau, allow_inf=True)
    xp = namespace(x)
    norms = vector_norm(x, 2)[..., None]
    clipped = norms > tau
    return x * xp.where(clipped, tau / xp.where(clipped, norms, 1.0), 1.0)


def nearest_neighbor_mixing(messages: Array, f: int) -> Array:
    """Nearest neighbour mixing (NNM).

    Each message ``x_i`` is replaced by the mean of its ``N - f`` nearest
    messages in Euclidean distance, ``x_i`` itself INCLUDED (it is always
    counted first, even if other messages are equal to it); ties among the
    other messages are broken by index order (stable sort).  ``f = 0`` replaces
    every message by the plain mean; ``f = N - 1`` is the identity.  Requires
    ``0 <= f < N``.

    Source: Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Fixing by
    Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity",
    AISTATS 2023.
    """
    x = _check_messages(messages, "nearest_neighbor_mixing")
    n = x.shape[1]
    f = _check_int("nearest_neighbor_mixing", "f", f)
    if not 0 <= f < n:
        raise ValueError(f"nearest_neighbor_mixing: f must satisfy 0 <= f < n_players = {n}, got f={f}")
    # Force each message to be its own first neighbour (distances are >= 0).
    dists = _no_self(_pairwise_sq_dists(x), -1.0)
    return _selection_mean(x, argsort(dists, 2)[:, :, : n - f])


# ---------------------------------------------------------------------------
# Name tables
# ---------------------------------------------------------------------------

RULES: dict[str, Callable[..., Array]] = {
    "mean": mean,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
    "geometric_median": geometric_median,
}
"""Aggregation rules by name: each maps (B, N, d) messages to (B, d)."""

PRE_AGGREGATIONS: dict[str, Callable[..., Array]] = {
    "clip_norm": clip_norm,
    "nearest_neighbor_mixing": nearest_neighbor_mixing,
}
"""Pre-aggregation steps by name: each maps (B, N, d) messages to (B, N, d)."""
