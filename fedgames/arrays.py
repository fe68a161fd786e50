"""The few array operations that numpy and torch spell differently, behind one name each.

The batched stages (aggregation rules, server responses) are written once against these helpers plus what numpy
arrays and torch tensors already share (arithmetic, indexing, ``@``, ``.sum(axis)``, ``.mean(axis)``, ``einsum``,
``where``, ``stack``, ``clip``, ``amax``, ``isfinite`` from :func:`namespace`). A numpy input gives a numpy
result; a torch input gives a torch result of the same dtype on the same device, with no copy to the host.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

if TYPE_CHECKING:
    from typing_extensions import TypeIs

Array = np.ndarray | torch.Tensor
"""A numpy array or a torch tensor (the union, for code that takes either)."""

A = TypeVar("A", np.ndarray, torch.Tensor, Array)
"""A numpy array, a torch tensor, or either (:data:`Array`), the same throughout a signature: a helper returns the
kind it was given."""


def is_torch(x: object) -> TypeIs[torch.Tensor]:
    """Whether ``x`` is a torch tensor (anything else is treated as a numpy array)."""
    return isinstance(x, torch.Tensor)


def namespace(x: Array) -> ModuleType:
    """``torch`` for a tensor, else ``numpy``: for the functions both spell alike (``einsum``, ``where``,
    ``stack(arrays, axis)``, ``clip(x, low, None)``, ``amax(x, axis)``, ``isfinite``)."""
    return torch if is_torch(x) else np


def sort(x: A, axis: int) -> A:
    """The values of ``x`` sorted ascending along ``axis``."""
    return torch.sort(x, dim=axis).values if is_torch(x) else np.sort(x, axis=axis)


def argsort(x: A, axis: int) -> A:
    """Stable ascending argsort along ``axis`` (equal values keep their index order)."""
    return torch.argsort(x, dim=axis, stable=True) if is_torch(x) else np.argsort(x, axis=axis, kind="stable")


def zeros(shape: tuple[int, ...], like: A) -> A:
    """Zeros of ``like``'s kind, dtype and device."""
    return torch.zeros(shape, dtype=like.dtype, device=like.device) if is_torch(like) else np.zeros(shape, like.dtype)


def arange(n: int, like: A) -> A:
    """``0, ..., n - 1`` as integer indices of ``like``'s kind and device."""
    return torch.arange(n, device=like.device) if is_torch(like) else np.arange(n)


def put_along_last(target: A, index: A, value: float) -> A:
    """Set ``target[..., index[..., j]] = value`` in place along the last axis; return ``target``."""
    if is_torch(target):
        assert is_torch(index), "index must be of target's kind"
        return target.scatter_(-1, index, value)
    assert not is_torch(index), "index must be of target's kind"
    np.put_along_axis(target, index, value, axis=-1)
    return target


_CPU_SLICE = 1 << 20  # entries per slice of a CPU reduction (a few MB: stays in cache)


def squared_distance(x: A, y: A | None = None, axis: int = -1) -> A:
    """``||x - y||^2`` along ``axis`` (the axis is dropped; ``y`` broadcasts against ``x``; ``None``: 0).

    Torch tensors on a CPU are reduced in slices of ``axis``, each ``torch.linalg.vector_norm``-ed: PyTorch's CPU
    ``vector_norm`` of one float32 row of millions of entries errs by about 4e-4 relative (it accumulates
    sequentially), of a slice of thousands by about 1e-6, and the sliced difference stays in cache (twice as
    fast as forming it whole). On other devices (tree reductions), under ``torch.compile`` (Inductor's blocked
    reductions, fused with what produced ``x``) and for numpy (pairwise summation): one pass.
    """
    if not is_torch(x):
        return np.sum(np.square(x if y is None else x - y), axis=axis)
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return torch.linalg.vector_norm(x if y is None else x - y, dim=axis) ** 2
    axis = axis % x.dim()
    length = x.shape[axis]
    width = max(1 << 12, _CPU_SLICE * length // max(x.numel(), 1))
    center = None if y is None else torch.as_tensor(y, dtype=x.dtype).broadcast_to(x.shape)
    total = torch.zeros(x.shape[:axis] + x.shape[axis + 1 :], dtype=x.dtype)
    for start in range(0, length, width):
        size = min(width, length - start)
        part = x.narrow(axis, start, size)
        if center is not None:
            part = part - center.narrow(axis, start, size)
        total += torch.linalg.vector_norm(part, dim=axis) ** 2
    return total


def vector_norm(x: A, axis: int = -1) -> A:
    """Euclidean norms along ``axis`` (the axis is dropped), accurate on a CPU too (:func:`squared_distance`)."""
    if not is_torch(x):
        return np.linalg.norm(x, axis=axis)
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return torch.linalg.vector_norm(x, dim=axis)
    return torch.sqrt(squared_distance(x, axis=axis))


def standard_normal(rng: np.random.Generator | torch.Generator, shape: tuple[int, ...], like: A) -> A:
    """Standard normal draws of ``shape`` from ``rng``: a numpy ``Generator`` for numpy inputs, a
    ``torch.Generator`` on ``like``'s device for tensors (then in ``like``'s dtype)."""
    if is_torch(like):
        if not isinstance(rng, torch.Generator):
            raise TypeError(f"rng must be a torch.Generator for a tensor like, got {rng!r}")
        return torch.randn(shape, generator=rng, dtype=like.dtype, device=like.device)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator for an array like, got {rng!r}")
    return rng.standard_normal(shape)


__all__ = [
    "Array",
    "arange",
    "argsort",
    "is_torch",
    "namespace",
    "put_along_last",
    "sort",
    "squared_distance",
    "standard_normal",
    "vector_norm",
    "zeros",
]
