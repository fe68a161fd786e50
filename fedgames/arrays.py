"""The few array operations that numpy and torch spell differently, behind one name each.

The batched stages (aggregation rules, server responses) are written once against these helpers plus what numpy
arrays and torch tensors already share (arithmetic, indexing, ``@``, ``.sum(axis)``, ``.mean(axis)``, ``einsum``,
``where``, ``stack``, ``clip``, ``amax``, ``isfinite`` from :func:`namespace`). A numpy input gives a numpy
result; a torch input gives a torch result of the same dtype on the same device, with no copy to the host.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]


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


def vector_norm(x: Array, axis: int = -1) -> Array:
    """Euclidean norms along ``axis`` (the axis is dropped)."""
    return torch.linalg.vector_norm(x, dim=axis) if is_torch(x) else np.linalg.norm(x, axis=axis)


def standard_normal(rng: np.random.Generator | torch.Generator, shape: tuple[int, ...], like: Array) -> Array:
    """Standard normal draws of ``shape`` from ``rng``: a numpy ``Generator`` for numpy inputs, a
    ``torch.Generator`` on ``like``'s device for tensors (then in ``like``'s dtype)."""
    if is_torch(like):
        return torch.randn(shape, generator=rng, dtype=like.dtype, device=like.device)
    return rng.standard_normal(shape)


__all__ = ["Array", "arange", "argsort", "is_torch", "namespace", "put_along_last", "sort", "standard_normal",
           "vector_norm", "zeros"]
