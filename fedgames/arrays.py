"""The few array operations that numpy and torch spell differently, behind one name each.

The batched stages (aggregation rules, server responses) are written once against these helpers plus what numpy
arrays and torch tensors already share (arithmetic, indexing, ``@``, ``.sum(axis)``, ``.mean(axis)``, ``einsum``,
``where``, ``stack``, ``clip``, ``amax``, ``isfinite`` from :func:`namespace`). A numpy input gives a numpy
result; a torch input gives a torch result of the same dtype on the same device, with no copy to the host.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (anything else is treated as a numpy array)."""
    return isinstance(x, torch.Tensor)


def namespace(x: Array) -> ModuleType:
    """``torch`` for a tensor, else ``numpy``: for the functions both spell alike (``einsum``, ``where``,
    ``stack(arrays, axis)``, ``clip(x, low, None)``, ``amax(x, axis)``, ``isfinite``)."""
    return torch if is_torch(x) else np


def sort(x: Array, axis: int) -> Array:
    """The values of ``x`` sorted ascending along ``axis``."""
    return torch.sort(x, dim=axis).values if is_torch(x) else np.sort(x, axis=axis)


def argsort(x: Array, axis: int) -> Array:
    """Stable ascending argsort along ``axis`` (equal values keep their index order)."""
    return torch.argsort(x, dim=axis, stable=True) if is_torch(x) else np.argsort(x, axis=axis, kind="stable")


def zeros(shape: tuple[int, ...], like: Array) -> Array:
    """Zeros of ``like``'s kind, dtype and device."""
    return torch.zeros(shape, dtype=like.dtype, device=like.device) if is_torch(like) else np.zeros(shape, like.dtype)


def arange(n: int, like: Array) -> Array:
    """``0, ..., n - 1`` as integer indices of ``like``'s kind and device."""
    return torch.arange(n, device=like.device) if is_torch(like) else np.arange(n)


def put_along_last(target: Array, index: Array, value: float) -> Array:
    """Set ``target[..., index[..., j]] = value`` in place along the last axis; return ``target``."""
    if is_torch(target):
        return target.scatter_(-1, index, value)
    np.put_along_axis(target, index, value, axis=-1)
    return target


_CPU_SLICE = 1 << 20  # entries per slice of a CPU reduction (a few MB: stays in cache)


def squared_distance(x: Array, y: Array | None = None, axis: int = -1) -> Array:
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


def vector_norm(x: Array, axis: int = -1) -> Array:
    """Euclidean norms along ``axis`` (the axis is dropped), accurate on a CPU too (:func:`squared_distance`)."""
    if not is_torch(x):
        return np.linalg.norm(x, axis=axis)
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return torch.linalg.vector_norm(x, dim=axis)
    return torch.sqrt(squared_distance(x, axis=axis))


def standard_normal(rng: np.random.Generator | torch.Generator, shape: tuple[int, ...], like: Array) -> Array:
    """Standard normal draws of ``shape`` from ``rng``: a numpy ``Generator`` for numpy inputs, a
    ``torch.Generator`` on ``like``'s device for tensors (then in ``like``'s dtype)."""
    if is_torch(like):
        return torch.randn(shape, generator=rng, dtype=like.dtype, device=like.device)
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
