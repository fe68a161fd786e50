"""The FedSGD game's objectives as pure functions of a parameter dict (SPEC §2 "Objectives"; torch only).

Each model gives ``init(generator) -> {name: tensor}`` and ``loss(params, x, y, weight) -> scalar``, the
``weight``-weighted mean loss over one client's (padded) batch. Pure functions of the parameters are what
``torch.func.grad`` and ``vmap`` need to differentiate every client of every run in one batched call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fedgames.envs.fedsgd.cnn_kernels import autotune, check_conv1, femnist_cnn_client_gradients

Params = dict[str, torch.Tensor]


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (values * weight).sum() / weight.sum().clamp_min(1e-12)


@dataclass(frozen=True)
class Quadratic:
    """``f(theta) = 0.5 (theta - theta*)^T A (theta - theta*)`` with per-sample gradient noise (strongly convex).

    A sample is ``z ~ N(0, noise^2 I)`` and its loss ``0.5 (theta - theta* - z)^T A (theta - theta* - z)``, so its
    gradient is ``A (theta - theta* - z)``, unbiased for ``grad f``. ``A = diag(eigenvalues)``: strong convexity
    ``m_sc = min`` and smoothness ``B = max`` eigenvalue, as Thm 6.1 needs.
    """

    eigenvalues: tuple[float, ...] = (1.0, 2.0)
    theta_star: tuple[float, ...] = (1.0, -1.0)
    noise: float = 1.0

    @property
    def strong_convexity(self) -> float:
        return min(self.eigenvalues)

    @property
    def smoothness(self) -> float:
        return max(self.eigenvalues)

    def init(self, generator: torch.Generator) -> Params:
        return {"theta": torch.zeros(len(self.eigenvalues))}

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` noise samples ``z`` (labels unused)."""
        return self.noise * torch.randn(n, len(self.eigenvalues), generator=generator), torch.zeros(n)

    def objective(self, params: Params) -> torch.Tensor:
        """The noiseless ``f(theta) - f(theta*)``."""
        theta = params["theta"]
        gap = theta - torch.tensor(self.theta_star, dtype=theta.dtype, device=theta.device)
        return 0.5 * (torch.tensor(self.eigenvalues, dtype=theta.dtype, device=theta.device) * gap**2).sum(-1)

    def loss(self, params: Params, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        gap = params["theta"] - torch.tensor(self.theta_star, dtype=x.dtype, device=x.device) - x
        per_sample = 0.5 * (torch.tensor(self.eigenvalues, dtype=x.dtype, device=x.device) * gap**2).sum(-1)
        return _weighted_mean(per_sample, weight)


@dataclass(frozen=True)
class Logistic:
    """Multinomial logistic regression on flattened inputs (convex)."""

    n_features: int
    n_classes: int

    def init(self, generator: torch.Generator) -> Params:
        return {"weight": torch.zeros(self.n_classes, self.n_features), "bias": torch.zeros(self.n_classes)}

    def logits(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1) @ params["weight"].T + params["bias"]

    def loss(self, params: Params, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return _weighted_mean(F.cross_entropy(self.logits(params, x), y, reduction="none"), weight)


@dataclass(frozen=True)
class FemnistCNN:
    """The LEAF FEMNIST CNN (SPEC §2): conv 5x5 32 (pad 2), ReLU, max-pool 2; conv 5x5 64 (pad 2), ReLU,
    max-pool 2; dense 2048, ReLU; dense ``n_classes``. Inputs ``(b, 28, 28)``; PyTorch's default initialisation."""

    n_classes: int = 62
    side: int = 28
    conv1: str = "auto"
    """How :meth:`client_gradients` runs the first convolution (``grouped``, ``padded`` or ``im2col``; see
    :mod:`~fedgames.envs.fedsgd.cnn_kernels`): the same result, different GPU kernels. ``auto``: the strategy and
    memory format :meth:`tune` found fastest, else ``grouped`` channels-last."""
    channels_last: bool = True
    """Whether those kernels keep activations channels-last in memory (else channels-first): the same result.
    Ignored under ``conv1="auto"``."""

    def __post_init__(self) -> None:
        check_conv1(self.conv1)

    def init(self, generator: torch.Generator) -> Params:
        flat = 64 * (self.side // 4) ** 2
        shapes = {
            "conv1.weight": (32, 1, 5, 5),
            "conv1.bias": (32,),
            "conv2.weight": (64, 32, 5, 5),
            "conv2.bias": (64,),
            "fc1.weight": (2048, flat),
            "fc1.bias": (2048,),
            "fc2.weight": (self.n_classes, 2048),
            "fc2.bias": (self.n_classes,),
        }
        fan_in = {"conv1": 25, "conv2": 32 * 25, "fc1": flat, "fc2": 2048}
        params = {}
        for name, shape in shapes.items():
            bound = 1.0 / math.sqrt(fan_in[name.split(".")[0]])  # kaiming_uniform(a=sqrt(5)) and bias: 1/sqrt(fan_in)
            params[name] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        return params

    def logits(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], 1, self.side, self.side)
        h = F.max_pool2d(F.relu(F.conv2d(h, params["conv1.weight"], params["conv1.bias"], padding=2)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, params["conv2.weight"], params["conv2.bias"], padding=2)), 2)
        h = F.relu(h.flatten(1) @ params["fc1.weight"].T + params["fc1.bias"])
        return h @ params["fc2.weight"].T + params["fc2.bias"]

    def loss(self, params: Params, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return _weighted_mean(F.cross_entropy(self.logits(params, x), y, reduction="none"), weight)

    def client_gradients(
        self, params: Params, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> tuple[Params, torch.Tensor]:
        """Every client's gradient and value of :meth:`loss` for ``R`` runs at once, by the hand-written grouped
        kernels of :mod:`~fedgames.envs.fedsgd.cnn_kernels` (the engine prefers them to ``torch.func``)."""
        return femnist_cnn_client_gradients(
            params, x, y, weight, side=self.side, conv1=self.conv1, channels_last=self.channels_last
        )

    def tune(self, params: Params, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> None:
        """Under ``conv1="auto"``: time the kernel variants on these inputs, once per device, compute dtype, runs
        and clients (:func:`~fedgames.envs.fedsgd.cnn_kernels.autotune`), so :meth:`client_gradients` runs the
        fastest. A few seconds on a GPU at 64 runs; the FedSGD game calls it on CUDA."""
        if self.conv1 == "auto":
            autotune(params, x, y, weight, side=self.side)
