"""``fedgames.arrays``: the numpy/torch helpers' reductions (accuracy of the sliced CPU norms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedgames.arrays import squared_distance, vector_norm


def test_cpu_norms_of_long_float32_rows_are_accurate():
    """A few-million-entry float32 row (a CNN's parameter count): the sliced reduction is within 1e-5 relative of
    the float64 value (a single ``torch.linalg.vector_norm`` erred by about 4e-4 in torch 2.13's CPU build)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4_000_000, generator=g) + 0.5
    y = torch.randn(2, 1, 4_000_000, generator=g)
    exact = ((x.double() - y.double()) ** 2).sum(-1)
    assert (squared_distance(x, y).double() / exact - 1).abs().max() < 1e-5
    norms = vector_norm(x).double()
    assert (norms / (x.double() ** 2).sum(-1).sqrt() - 1).abs().max() < 1e-5


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_torch_and_numpy_agree_along_any_axis(axis):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 5, 7)), rng.normal(size=(3, 1, 7))
    for center in (None, y):
        expected = squared_distance(x, center, axis=axis)
        got = squared_distance(torch.as_tensor(x), None if center is None else torch.as_tensor(center), axis=axis)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(vector_norm(torch.as_tensor(x), axis).numpy(), np.linalg.norm(x, axis=axis), rtol=1e-12)
