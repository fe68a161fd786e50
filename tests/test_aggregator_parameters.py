"""The robust aggregators' positive parameters: the message states the range, closed at infinity where infinity
is allowed (``clip_norm``'s ``tau = inf``: no clipping), open where it is not (``geometric_median``'s tolerances)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedgames.mechanisms.aggregators import clip_norm, geometric_median

MESSAGES = np.array([[[3.0, 4.0], [0.3, 0.4]]])


def test_clip_norm_allows_an_infinite_threshold():
    np.testing.assert_array_equal(clip_norm(MESSAGES, math.inf), MESSAGES)
    np.testing.assert_allclose(clip_norm(MESSAGES, 1.0), [[[0.6, 0.8], [0.3, 0.4]]], rtol=1e-15)
    for tau in (0.0, -1.0):
        with pytest.raises(ValueError, match=r"clip_norm: tau must satisfy 0 < tau <= inf, got tau="):
            clip_norm(MESSAGES, tau)


@pytest.mark.parametrize("name", ["tol", "eps"])
def test_geometric_median_tolerances_are_finite(name):
    for value in (0.0, math.inf):
        with pytest.raises(ValueError, match=rf"geometric_median: {name} must satisfy 0 < {name} < inf, got"):
            geometric_median(MESSAGES, **{name: value})
