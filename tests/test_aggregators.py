"""Tests for fedgames.mechanisms.aggregators.

Each batched rule is compared with an independent, per-episode reference
written with plain Python loops.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fedgames.mechanisms import aggregators as agg

# (B, N, d) shapes used for the reference comparisons.
SHAPES = [(1, 1, 1), (3, 2, 4), (4, 3, 1), (2, 5, 3), (5, 8, 2), (2, 11, 6)]


def _random(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


def _integer_valued(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Small integer values: many exact ties in coordinates and distances."""
    return np.random.default_rng(seed).integers(-2, 3, size=shape).astype(np.float64)


def _with_duplicates(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    x = _random(shape, seed)
    n = shape[1]
    if n >= 3:
        x[:, n - 1] = x[:, 0]
        x[:, n // 2] = x[:, 1]
    return x


INPUTS = [
    pytest.param(make, shape, seed, id=f"{make.__name__}-{shape}")
    for seed, (make, shape) in enumerate(itertools.product([_random, _integer_valued, _with_duplicates], SHAPES))
]


# ---------------------------------------------------------------------------
# Plain-loop references (one episode: a list of N vectors)
# ---------------------------------------------------------------------------


def sq_dist(a: np.ndarray, b: np.ndarray) -> float:
    return sum((float(u) - float(v)) ** 2 for u, v in zip(a, b))


def ref_mean(ep: np.ndarray) -> list[float]:
    n, d = ep.shape
    return [math.fsum(ep[i, k] for i in range(n)) / n for k in range(d)]


def ref_median(ep: np.ndarray) -> list[float]:
    n, d = ep.shape
    out = []
    for k in range(d):
        v = sorted(ep[:, k])
        out.append(v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2)
    return out


def ref_trimmed_mean(ep: np.ndarray, f: int) -> list[float]:
    n, d = ep.shape
    out = []
    for k in range(d):
        kept = sorted(ep[:, k])[f : n - f]
        out.append(math.fsum(kept) / len(kept))
    return out


def ref_krum_scores(ep: np.ndarray, f: int) -> list[float]:
    n = len(ep)
    scores = []
    for i in range(n):
        others = sorted(sq_dist(ep[i], ep[j]) for j in range(n) if j != i)
        scores.append(sum(others[: n - f - 2]))
    return scores


def ref_multi_krum(ep: np.ndarray, f: int, m: int) -> list[float]:
    scores = ref_krum_scores(ep, f)
    order = sorted(range(len(ep)), key=lambda i: (scores[i], i))
    return ref_mean(ep[order[:m]])


def ref_nnm(ep: np.ndarray, f: int) -> list[list[float]]:
    n = len(ep)
    out = []
    for i in range(n):
        others = sorted((sq_dist(ep[i], ep[j]), j) for j in range(n) if j != i)
        chosen = [i] + [j for _, j in others[: n - f - 1]]
        out.append(ref_mean(ep[chosen]))
    return out


def ref_clip(ep: np.ndarray, tau: float) -> list[list[float]]:
    out = []
    for v in ep:
        norm = math.sqrt(sum(float(c) ** 2 for c in v))
        s = tau / norm if norm > tau else 1.0
        out.append([float(c) * s for c in v])
    return out


def per_episode(ref, x: np.ndarray, *args) -> np.ndarray:
    return np.array([ref(ep, *args) for ep in x], dtype=np.float64)


def close(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# Reference comparisons
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("make, shape, seed", INPUTS)
def test_mean_median(make, shape, seed):
    x = make(shape, seed)
    close(agg.mean(x), per_episode(ref_mean, x))
    close(agg.median(x), per_episode(ref_median, x))


@pytest.mark.parametrize("make, shape, seed", INPUTS)
def test_trimmed_mean(make, shape, seed):
    x = make(shape, seed)
    n = shape[1]
    for f in range((n - 1) // 2 + 1):  # up to the largest allowed f
        close(agg.trimmed_mean(x, f=f), per_episode(ref_trimmed_mean, x, f))
    close(agg.trimmed_mean(x), per_episode(ref_mean, x))
    for fraction in (0.0, 0.2, 0.49):
        f = math.floor(fraction * n)
        close(agg.trimmed_mean(x, fraction=fraction), per_episode(ref_trimmed_mean, x, f))


@pytest.mark.parametrize("make, shape, seed", INPUTS)
def test_krum_and_multi_krum(make, shape, seed):
    x = make(shape, seed)
    n = shape[1]
    for f in range(max(0, (n - 3) // 2 + 1)):  # f = (n-3)//2 is the limit n = 2f + 3
        close(agg.krum(x, f=f), per_episode(ref_multi_krum, x, f, 1))
        for m in sorted({1, 2, n - f, n}):
            expected = per_episode(ref_multi_krum, x, f, m)
            close(agg.multi_krum(x, f=f, m=m), expected)
            close(agg.krum(x, f=f, m=m), expected)


def test_krum_returns_an_input_message_and_breaks_ties_by_index():
    # d = 1, N = 5, f = 1: scores over N - f - 2 = 2 neighbours are
    # [20, 8, 8, 20, big]; the tie between indices 1 and 2 goes to index 1.
    x = np.array([[[-3.0], [-1.0], [1.0], [3.0], [100.0]], [[-3.0], [1.0], [-1.0], [3.0], [100.0]]])
    np.testing.assert_array_equal(agg.krum(x, f=1), [[-1.0], [1.0]])
    # m = 3 takes indices 1, 2 and then 0 (score 20, lower index than 3).
    np.testing.assert_array_equal(agg.multi_krum(x, f=1, m=3), [[-1.0], [-1.0]])
    # Krum with m = 1 returns one of the messages exactly.
    y = _random((6, 7, 3), 123)
    out = agg.krum(y, f=2)
    assert all(any(np.array_equal(out[b], y[b, i]) for i in range(7)) for b in range(6))


def test_many_ties_large_n_use_stable_index_order():
    # N > 16, so an unstable sort (e.g. numpy's introsort) would reorder ties.
    x = np.random.default_rng(9).integers(-1, 2, size=(3, 40, 2)).astype(np.float64)
    for f in (0, 7, 18):
        for m in (1, 5, 21):
            close(agg.multi_krum(x, f=f, m=m), per_episode(ref_multi_krum, x, f, m))
    for f in (0, 13, 30, 39):
        close(agg.nearest_neighbor_mixing(x, f=f), per_episode(ref_nnm, x, f))


@pytest.mark.parametrize("make, shape, seed", INPUTS)
def test_nearest_neighbor_mixing(make, shape, seed):
    x = make(shape, seed)
    n = shape[1]
    for f in range(n):  # includes the limit f = n - 1
        close(agg.nearest_neighbor_mixing(x, f=f), per_episode(ref_nnm, x, f))
    np.testing.assert_array_equal(agg.nearest_neighbor_mixing(x, f=n - 1), x)
    close(agg.nearest_neighbor_mixing(x, f=0), np.repeat(agg.mean(x)[:, None], n, axis=1))


def test_nearest_neighbor_mixing_ties_by_index():
    # Message 0 is equidistant from messages 1 and 2; index 1 wins.
    x = np.array([[[0.0], [1.0], [-1.0], [5.0]]])
    out = agg.nearest_neighbor_mixing(x, f=2)
    np.testing.assert_array_equal(out[0, :, 0], [0.5, 0.5, -0.5, 3.0])


@pytest.mark.parametrize("make, shape, seed", INPUTS)
def test_clip_norm(make, shape, seed):
    x = make(shape, seed)
    for tau in (1e-3, 0.5, 1.0, 3.0, 1e9, math.inf):
        out = agg.clip_norm(x, tau=tau)
        close(out, per_episode(ref_clip, x, tau))
        assert np.all(np.linalg.norm(out, axis=2) <= tau * (1 + 1e-12))
    zeros = np.zeros(shape)
    np.testing.assert_array_equal(agg.clip_norm(zeros, tau=1.0), zeros)


# ---------------------------------------------------------------------------
# Geometric median
# ---------------------------------------------------------------------------


def objective(z: np.ndarray, ep: np.ndarray) -> float:
    return sum(math.sqrt(sq_dist(z, p)) for p in ep)


@pytest.mark.parametrize("shape", [(4, 3, 2), (3, 5, 3), (2, 8, 5), (2, 11, 2), (3, 6, 1)])
@pytest.mark.parametrize("make", [_random, _integer_valued, _with_duplicates])
def test_geometric_median_is_optimal(make, shape):
    x = make(shape, 7)
    z = agg.geometric_median(x, tol=1e-10)
    assert z.shape == (shape[0], shape[2])
    for ep, zb in zip(x, z):
        obj = objective(zb, ep)
        slack = 1e-8 * (1 + obj)
        candidates = list(ep) + [np.median(ep, axis=0), ep.mean(axis=0)]
        for c in candidates:
            assert obj <= objective(c, ep) + slack
        # First-order optimality (only meaningful away from the data points).
        dists = [math.sqrt(sq_dist(zb, p)) for p in ep]
        if min(dists) > 1e-6:
            grad = sum((zb - p) / r for p, r in zip(ep, dists))
            assert np.linalg.norm(grad) <= 1e-5 * len(ep)


def test_geometric_median_special_cases():
    # N = 2: the mean (midpoint) is already optimal.
    x = _random((3, 2, 4), 1)
    np.testing.assert_allclose(agg.geometric_median(x), x.mean(axis=1), rtol=0, atol=1e-12)
    # N = 1 and identical messages: the message itself.
    y = np.repeat(_random((2, 1, 3), 2), 4, axis=1)
    np.testing.assert_allclose(agg.geometric_median(y), y[:, 0], rtol=0, atol=1e-12)
    # A point with majority multiplicity is the geometric median (iterate hits a data point).
    p = np.array([1.0, -2.0])
    z = np.array([[p, p, p, [5.0, 5.0], [-4.0, 3.0]]])
    np.testing.assert_allclose(agg.geometric_median(z)[0], p, atol=1e-6)
    # d = 1, odd N: the geometric median is the median.
    w = _random((4, 7, 1), 3)
    np.testing.assert_allclose(agg.geometric_median(w, tol=1e-12), np.median(w, axis=1), atol=1e-6)


def test_geometric_median_max_iter_returns_iterate_and_is_batch_independent():
    x = _random((5, 6, 3), 4)
    z0 = x.mean(axis=1, keepdims=True)
    w = 1.0 / np.linalg.norm(x - z0, axis=2)
    one_step = (w[:, :, None] * x).sum(axis=1) / w.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(agg.geometric_median(x, max_iter=1), one_step, rtol=1e-12)
    full = agg.geometric_median(x)
    alone = np.concatenate([agg.geometric_median(x[b : b + 1]) for b in range(5)])
    np.testing.assert_allclose(full, alone, rtol=1e-13, atol=1e-13)


def ref_weiszfeld(ep: np.ndarray, tol: float, max_iter: int = 1000, eps: float = 1e-12) -> tuple[np.ndarray, int]:
    """One episode's smoothed Weiszfeld iterate, stopped by the documented rule ``||z_{t+1} - z_t|| <= tol (1 +
    max_i ||x_i - z_0||)``, and the number of steps it took."""
    z = ep.mean(axis=0)
    threshold = tol * (1.0 + max(math.sqrt(sq_dist(p, z)) for p in ep))
    for step in range(1, max_iter + 1):
        w = [1.0 / max(math.sqrt(sq_dist(z, p)), eps) for p in ep]
        new = sum(wi * p for wi, p in zip(w, ep)) / sum(w)
        moved = math.sqrt(sq_dist(new, z))
        z = new
        if moved <= threshold:
            return z, step
    return z, max_iter


@pytest.mark.parametrize("tol", [1e-2, 1e-4])
def test_geometric_median_stops_by_the_documented_rule(tol):
    """At a loose ``tol`` the iterate depends on the step it stops at: each episode's result is the reference
    loop's, stopped at the same step (a threshold off by any factor, or measured from another centre, stops some of
    the 300 episodes a step earlier or later, changing them by about ``tol``)."""
    x = np.random.default_rng(11).normal(size=(300, 7, 3)) * np.random.default_rng(12).uniform(0.1, 3, (300, 1, 1))
    z = agg.geometric_median(x, tol=tol)
    reference = [ref_weiszfeld(ep, tol) for ep in x]
    np.testing.assert_allclose(z, np.array([r for r, _ in reference]), rtol=1e-12, atol=1e-12)
    assert len({steps for _, steps in reference}) > 1  # the episodes stop at different steps


# ---------------------------------------------------------------------------
# Generic properties
# ---------------------------------------------------------------------------

CALLS = [
    ("mean", {}),
    ("median", {}),
    ("trimmed_mean", {"f": 2}),
    ("krum", {"f": 2}),
    ("multi_krum", {"f": 2, "m": 3}),
    ("geometric_median", {}),
    ("clip_norm", {"tau": 0.5}),
    ("nearest_neighbor_mixing", {"f": 2}),
]


@pytest.mark.parametrize("name, kwargs", CALLS)
def test_batch_shape_purity_and_empty_batch(name, kwargs):
    fn = {**agg.RULES, **agg.PRE_AGGREGATIONS}[name]
    x = _random((4, 7, 3), 5)
    before = x.copy()
    out = fn(x, **kwargs)
    np.testing.assert_array_equal(x, before)  # input untouched
    assert out.dtype == np.float64
    assert out.shape == ((4, 7, 3) if name in agg.PRE_AGGREGATIONS else (4, 3))
    stacked = np.concatenate([fn(x[b : b + 1], **kwargs) for b in range(4)])
    np.testing.assert_allclose(out, stacked, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(fn(x, **kwargs), out)  # deterministic
    empty = fn(np.zeros((0, 7, 3)), **kwargs)
    assert empty.shape == ((0, 7, 3) if name in agg.PRE_AGGREGATIONS else (0, 3))


def test_tables():
    assert set(agg.RULES) == {"mean", "median", "trimmed_mean", "krum", "multi_krum", "geometric_median"}
    assert set(agg.PRE_AGGREGATIONS) == {"clip_norm", "nearest_neighbor_mixing"}


def test_robustness_against_huge_attackers():
    rng = np.random.default_rng(11)
    b, n, f, d = 6, 11, 4, 5
    honest = rng.normal(scale=0.1, size=(b, n - f, d))
    attackers = 1e6 * (1 + rng.random(size=(b, f, d)))
    x = np.concatenate([attackers, honest], axis=1)
    x = x[:, rng.permutation(n)]  # attackers at arbitrary indices
    lo, hi = honest.min(axis=1), honest.max(axis=1)

    def within_honest_box(z):
        return np.all((z >= lo - 1e-9) & (z <= hi + 1e-9))

    assert within_honest_box(agg.median(x))
    assert within_honest_box(agg.trimmed_mean(x, f=f))
    assert within_honest_box(agg.krum(x, f=f))
    assert within_honest_box(agg.multi_krum(x, f=f, m=n - f))
    # The geometric median is not coordinate-wise bounded by the honest box,
    # but stays within a small multiple of the honest spread.
    radius = np.linalg.norm(honest - honest.mean(axis=1, keepdims=True), axis=2).max(axis=1)
    gm_err = np.linalg.norm(agg.geometric_median(x) - honest.mean(axis=1), axis=1)
    assert np.all(gm_err <= 3 * radius)
    assert not within_honest_box(agg.mean(x))
    assert np.all(np.abs(agg.mean(x)) > 1e5)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

X5 = np.zeros((2, 5, 3))


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: agg.krum(X5, f=2), r"krum: f=2 needs n_players > 2\*f \+ 2 = 6, got n_players=5"),
        (lambda: agg.krum(np.zeros((1, 4, 2)), f=1), r"f=1.*n_players=4"),
        (lambda: agg.multi_krum(X5, f=2, m=1), r"multi_krum: f=2.*n_players=5"),
        (lambda: agg.krum(X5, f=-1), r"krum: f.*f >= 0.*f=-1"),
        (lambda: agg.krum(X5, f=1.0), r"krum: f must be an integer, got f=1.0"),
        (lambda: agg.krum(X5, f=True), r"krum: f must be an integer"),
        (lambda: agg.krum(X5, f=1, m=0), r"krum: m must satisfy 1 <= m <= n_players = 5, got m=0"),
        (lambda: agg.multi_krum(X5, f=1, m=6), r"multi_krum: m .*got m=6"),
        (lambda: agg.trimmed_mean(X5, f=3), r"trimmed_mean: f .*0 <= f <= 2 .*got f=3"),
        (lambda: agg.trimmed_mean(np.zeros((1, 4, 1)), f=2), r"trimmed_mean: f .*0 <= f <= 1 for n_players=4, got f=2"),
        (
            lambda: agg.trimmed_mean(X5, fraction=False),
            r"fraction must be a real number in \[0, 0.5\), got fraction=False",
        ),
        (
            lambda: agg.trimmed_mean(X5, fraction="0.1"),
            r"fraction must be a real number in \[0, 0.5\), got fraction='0.1'",
        ),
        (lambda: agg.clip_norm(X5, tau=True), r"clip_norm: tau must be a real number > 0, got tau=True"),
        (
            lambda: agg.geometric_median(X5, tol="1e-8"),
            r"geometric_median: tol must be a real number > 0, got tol='1e-8'",
        ),
        (lambda: agg.trimmed_mean(X5, f=-1), r"trimmed_mean: f.*got f=-1"),
        (lambda: agg.trimmed_mean(X5, f=1, fraction=0.2), r"f=1 and fraction=0.2"),
        (lambda: agg.trimmed_mean(X5, fraction=0.5), r"fraction.*0 <= fraction < 0.5.*fraction=0.5"),
        (lambda: agg.trimmed_mean(X5, fraction=-0.1), r"fraction.*fraction=-0.1"),
        (lambda: agg.trimmed_mean(X5, fraction=math.nan), r"fraction.*fraction=nan"),
        (lambda: agg.clip_norm(X5, tau=0.0), r"clip_norm: tau must satisfy 0 < tau.*tau=0.0"),
        (lambda: agg.clip_norm(X5, tau=-1.0), r"tau.*tau=-1.0"),
        (lambda: agg.clip_norm(X5, tau=math.nan), r"tau.*tau=nan"),
        (lambda: agg.nearest_neighbor_mixing(X5, f=5), r"nearest_neighbor_mixing: f .*0 <= f < n_players = 5, got f=5"),
        (lambda: agg.nearest_neighbor_mixing(X5, f=-1), r"nearest_neighbor_mixing: f.*got f=-1"),
        (lambda: agg.geometric_median(X5, tol=0.0), r"geometric_median: tol.*tol=0.0"),
        (lambda: agg.geometric_median(X5, max_iter=0), r"geometric_median: max_iter.*max_iter=0"),
        (lambda: agg.geometric_median(X5, eps=-1e-3), r"geometric_median: eps.*eps=-0.001"),
    ],
)
def test_parameter_errors(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize("name, kwargs", CALLS)
@pytest.mark.parametrize(
    "bad, pattern",
    [
        (np.zeros((5, 3)), r"messages.*ndim=2"),
        (np.zeros((1, 2, 5, 3)), r"messages.*ndim=4"),
        (np.zeros((2, 0, 3)), r"messages.*n_players >= 1"),
        (np.zeros((2, 5, 0)), r"messages.*d >= 1"),
        (np.where(np.arange(30).reshape(2, 5, 3) == 7, np.nan, 0.0), r"messages.*NaN or inf"),
        (np.where(np.arange(30).reshape(2, 5, 3) == 7, np.inf, 0.0), r"messages.*NaN or inf"),
    ],
)
def test_message_errors(name, kwargs, bad, pattern):
    fn = {**agg.RULES, **agg.PRE_AGGREGATIONS}[name]
    kwargs = {**kwargs, "f": 1} if "f" in kwargs else kwargs
    kwargs = {**kwargs, "m": 1} if "m" in kwargs else kwargs
    with pytest.raises(ValueError, match=name + ": " + pattern):
        fn(bad, **kwargs)
