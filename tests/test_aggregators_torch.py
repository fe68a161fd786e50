"""The aggregation rules on torch tensors (mechanisms/aggregators.py is array-generic): the same results as on
numpy for every rule and pre-aggregation step, tie-breaking included; dtype and device kept; no numpy round trip in
the robust-aggregation mechanism; on CUDA the output stays on the GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fedgames
from fedgames.mechanisms import aggregators as agg

CALLS = [
    ("mean", {}),
    ("median", {}),
    ("trimmed_mean", {"f": 2}),
    ("trimmed_mean", {"fraction": 0.3}),
    ("krum", {"f": 1}),
    ("krum", {"f": 2, "m": 3}),
    ("multi_krum", {"f": 1, "m": 4}),
    ("geometric_median", {}),
    ("geometric_median", {"max_iter": 3}),
    ("clip_norm", {"tau": 0.7}),
    ("clip_norm", {"tau": float("inf")}),
    ("nearest_neighbor_mixing", {"f": 2}),
]
FUNCTIONS = {**agg.RULES, **agg.PRE_AGGREGATIONS}
IDS = [f"{name}-{kwargs}" for name, kwargs in CALLS]


def inputs(kind: str, shape=(4, 7, 3), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "integer":  # many exact ties in coordinates and distances
        return rng.integers(-2, 3, size=shape).astype(np.float64)
    x = rng.normal(size=shape)
    if kind == "duplicates":
        x[:, 5] = x[:, 0]
        x[:, 6] = x[:, 1]
    return x


@pytest.mark.parametrize("kind", ["normal", "integer", "duplicates"])
@pytest.mark.parametrize("name, kwargs", CALLS, ids=IDS)
def test_torch_float64_equals_numpy(name, kwargs, kind):
    x = inputs(kind)
    expected = FUNCTIONS[name](x, **kwargs)
    tensor = torch.from_numpy(x.copy())
    got = FUNCTIONS[name](tensor, **kwargs)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64 and got.device == tensor.device
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(tensor, torch.from_numpy(x))  # input untouched


@pytest.mark.parametrize(
    "name, kwargs", [c for c in CALLS if c[0] in ("krum", "multi_krum", "nearest_neighbor_mixing")]
)
def test_ties_are_broken_alike(name, kwargs):
    """Integer messages with many equal scores / distances: the same messages are selected (another selection
    would move a mean of small integers by far more than the rounding of the averaging matmul)."""
    x = np.random.default_rng(9).integers(-1, 2, size=(3, 40, 2)).astype(np.float64)
    np.testing.assert_allclose(
        FUNCTIONS[name](torch.from_numpy(x), **kwargs).numpy(), FUNCTIONS[name](x, **kwargs), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("name, kwargs", CALLS, ids=IDS)
def test_float32_stays_float32(name, kwargs):
    x = inputs("normal", shape=(3, 7, 5), seed=1)
    got = FUNCTIONS[name](torch.from_numpy(x).float(), **kwargs)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), FUNCTIONS[name](x, **kwargs), rtol=1e-4, atol=1e-5)


def test_integer_tensors_are_computed_in_float64_and_empty_batches_work():
    x = torch.tensor(inputs("integer")).long()
    assert agg.median(x).dtype == torch.float64
    torch.testing.assert_close(agg.median(x), torch.from_numpy(agg.median(x.numpy())))
    assert agg.krum(torch.zeros(0, 5, 2), f=1).shape == (0, 2)
    assert agg.geometric_median(torch.zeros(0, 5, 2)).shape == (0, 2)


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (torch.zeros(5, 3), r"median: messages.*ndim=2 with shape \(5, 3\)"),
        (torch.zeros(2, 0, 3), r"median: messages needs n_players >= 1"),
        (torch.tensor([[[0.0, float("nan")]]]), r"median: messages must be finite"),
        (torch.zeros(1, 2, 2, dtype=torch.complex64), r"median: messages must be real"),
    ],
)
def test_torch_message_errors(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        agg.median(bad)


def test_robust_aggregation_mechanism_aggregates_tensors_natively(monkeypatch):
    env = fedgames.make(
        "mean_estimation_v0", mechanisms=["robust_aggregation:rule=krum,f=1,clip_norm=1.0"], n_players=5
    )
    messages = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(torch.Tensor, "numpy", lambda self: pytest.fail("numpy round trip"))
    got = env.protocol.aggregate(messages, None)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    expected = agg.krum(agg.clip_norm(messages, tau=1.0), f=1)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
@pytest.mark.parametrize("name, kwargs", CALLS, ids=IDS)
def test_cuda_output_stays_on_the_device(name, kwargs):
    x = inputs("duplicates")
    cuda = torch.from_numpy(x).cuda()
    got = FUNCTIONS[name](cuda, **kwargs)
    assert got.device == cuda.device and got.dtype == torch.float64
    np.testing.assert_allclose(got.cpu().numpy(), FUNCTIONS[name](x, **kwargs), rtol=1e-10, atol=1e-10)
