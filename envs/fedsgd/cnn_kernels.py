"""Per-client gradients of the FEMNIST CNN for many runs at once, by hand (SPEC §2 "Performance").

Layout: every (run, client) pair is a convolution group — activations ``(b, R x m x channels, H, W)`` with the
client's ``b`` samples as the batch and ``groups = R x m``, each run's filters repeated for its clients — so the
library's convolution backward gives the per-client weight gradients directly, together with the input gradient,
and nothing is regrouped between layers. Activations are channels-last by default (``(b, H, W, channels)`` in
memory: max-pooling is about 10x faster than channels-first on a CPU, and it is cuDNN's native layout for tensor
cores; ``channels_last=False`` keeps channels-first).
The dense layers are batched products over runs (forward and input gradients, all ``m x b`` samples of a run
against its weights) and over (run, client) pairs (weight gradients). Only the small ``(b, R x m x 3136)`` features
change layout, between the convolutions and the dense layers. The result equals
:func:`fedgames.envs.fedsgd.engine.naive_client_gradients` of
:meth:`FemnistCNN.loss <fedgames.envs.fedsgd.models.FemnistCNN.loss>` (tests/test_fedsgd_engine.py);
:func:`torch.func.vmap` does the same per-pair work through generic batching rules.

Under ``torch.autocast`` the computation runs in the autocast dtype (bf16 on a GPU) with the softmax in float32;
the gradients come back in that dtype, the losses in the parameters'.

Which first-convolution strategy and memory format run fastest depends on the GPU: ``conv1="auto"`` (the
default of :class:`~fedgames.envs.fedsgd.models.FemnistCNN`) runs what :func:`autotune` measured fastest for the
inputs' device, dtype and shape (the FedSGD game tunes on its first CUDA round), else ``grouped`` channels-last.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]

_POOL = ([2, 2], [2, 2], [0, 0], [1, 1], False)  # kernel, stride, padding, dilation, ceil_mode of max_pool2d(2)


def _compute_dtype(reference: torch.Tensor) -> torch.dtype:
    device = reference.device.type
    if reference.is_floating_point() and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return reference.dtype


def _pool(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ops.aten.max_pool2d_with_indices(h, *_POOL)


def _unpool(grad: torch.Tensor, h: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.max_pool2d_with_indices_backward(grad, h, *_POOL, indices)


def _per_client(p: torch.Tensor, clients: int) -> torch.Tensor:
    """``(R, k, *rest)`` run parameters -> ``(R x m x k, *rest)``: each run's repeated for its ``m`` clients."""
    return p[:, None].expand((p.shape[0], clients) + tuple(p.shape[1:])).reshape((-1,) + tuple(p.shape[2:]))


def _conv_backward(
    grad_out: torch.Tensor, inputs: torch.Tensor, weight: torch.Tensor, groups: int, input_grad: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Input (if asked), weight and bias gradients of a 5x5 'same' grouped convolution."""
    return torch.ops.aten.convolution_backward(
        grad_out,
        inputs,
        weight,
        [weight.shape[0]],
        [1, 1],
        [2, 2],
        [1, 1],
        False,
        [0, 0],
        groups,
        [input_grad, True, True],
    )


class _Conv1:
    """The first convolution (one input channel, 32 filters per group) on ``(b, G, side, side)`` inputs,
    ``G = R x m`` groups, output ``(b, G x 32, side, side)``, and its per-group weight and bias gradients.
    Strategies:

    - ``grouped``: a convolution with ``groups = G``. One input channel per group makes PyTorch pick its native
      depthwise kernels rather than cuDNN (a third of the GPU time of a round on an H200, README).
    - ``padded``: the same with a zero second input channel, so the convolution is no longer depthwise.
    - ``im2col``: the 5x5 patches ``(G, 25, b x side^2)`` times the filters, one batched product per group (and
      per group for the weight gradient).
    """

    def __init__(self, strategy: str, h0: torch.Tensor, memory_format: torch.memory_format) -> None:
        check_conv1(strategy)
        self.strategy, self.memory_format = strategy, memory_format
        b, self.groups, side, _ = h0.shape
        if strategy == "padded":
            h0 = torch.stack([h0, torch.zeros_like(h0)], dim=2).flatten(1, 2).contiguous(memory_format=memory_format)
        elif strategy == "im2col":  # (G, 25, b * side^2)
            patches = F.unfold(h0.reshape(b * self.groups, 1, side, side), 5, padding=2)
            h0 = patches.reshape(b, self.groups, 25, side * side).permute(1, 2, 0, 3).reshape(self.groups, 25, -1)
        self.inputs, self.b, self.side = h0, b, side

    def forward(self, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``w (G x 32, 1, 5, 5)``, ``bias (G x 32,)``."""
        if self.strategy == "im2col":
            out = torch.baddbmm(bias.reshape(self.groups, 32, 1), w.reshape(self.groups, 32, 25), self.inputs)
            out = out.reshape(self.groups * 32, self.b, self.side, self.side).transpose(0, 1)
            return out.contiguous(memory_format=self.memory_format)
        if self.strategy == "padded":
            w = torch.cat([w, torch.zeros_like(w)], dim=1)
        return F.conv2d(self.inputs, w, bias, padding=2, groups=self.groups)

    def weight_grads(self, grad_out: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight ``(G x 32, 1, 5, 5)`` and bias ``(G x 32,)`` gradients."""
        if self.strategy == "im2col":
            g = grad_out.transpose(0, 1).reshape(self.groups, 32, -1)  # (G, 32, b * side^2)
            return torch.bmm(g, self.inputs.transpose(1, 2)).reshape(w.shape), g.sum(-1).flatten()
        if self.strategy == "padded":
            _, grad_w, grad_b = _conv_backward(
                grad_out, self.inputs, torch.cat([w, torch.zeros_like(w)], dim=1), self.groups, input_grad=False
            )
            return grad_w[:, :1], grad_b
        _, grad_w, grad_b = _conv_backward(grad_out, self.inputs, w, self.groups, input_grad=False)
        return grad_w, grad_b


CONV1_STRATEGIES = ("grouped", "padded", "im2col")
KernelChoice = tuple[str, bool]
"""A first-convolution strategy and whether activations are channels-last."""
UNTUNED: KernelChoice = ("grouped", True)
"""What ``conv1="auto"`` runs where nothing was tuned, e.g. on a CPU (there within about 20% of the fastest
variant, which changes with R and precision: the README's FedSGD CPU benchmark table)."""
_TUNED: dict[tuple[Any, ...], KernelChoice] = {}


def check_conv1(strategy: str) -> str:
    """``strategy`` if it names a first-convolution strategy or ``"auto"``, else a ``ValueError`` listing them."""
    if strategy != "auto" and strategy not in CONV1_STRATEGIES:
        raise ValueError(f"conv1 must be 'auto' or one of {CONV1_STRATEGIES}, got {strategy!r}")
    return strategy


def fastest(candidates: Mapping[Any, Callable[[], object]], synchronize: Callable[[], None], repeats: int = 3) -> Any:
    """The key of the candidate that runs fastest: each once to warm up (cuDNN's own autotuning, the allocator),
    then ``repeats`` times timed, ``synchronize`` waiting for the device."""
    seconds = {}
    for key, run in candidates.items():
        run()
        synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        synchronize()
        seconds[key] = time.perf_counter() - start
    return min(seconds, key=seconds.__getitem__)


def _tuning_key(params: Params, weight: torch.Tensor) -> tuple[Any, ...]:
    return (str(weight.device), _compute_dtype(params["fc1.weight"]), *weight.shape[:2])


def autotune(params: Params, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, side: int = 28) -> KernelChoice:
    """Time every (first-convolution strategy, memory format) on these inputs and remember the fastest for their
    device, compute dtype (autocast included), runs and clients, which ``conv1="auto"`` then uses. Once per key:
    later calls return the remembered choice."""
    key = _tuning_key(params, weight)
    if key not in _TUNED:
        device = weight.device
        candidates = {
            (strategy, last): functools.partial(
                femnist_cnn_client_gradients, params, x, y, weight, side, strategy, last
            )
            for strategy in CONV1_STRATEGIES
            for last in (True, False)
        }
        _TUNED[key] = fastest(candidates, lambda: torch.cuda.synchronize(device) if device.type == "cuda" else None)
    return _TUNED[key]


def kernel_choice(conv1: str, channels_last: bool, params: Params, weight: torch.Tensor) -> KernelChoice:
    """The strategy and memory format to run: as given, or for ``conv1="auto"`` the tuned ones (:func:`autotune`)
    for these inputs, else :data:`UNTUNED`."""
    if conv1 != "auto":
        return conv1, channels_last
    return _TUNED.get(_tuning_key(params, weight), UNTUNED)


def femnist_cnn_client_gradients(
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    side: int = 28,
    conv1: str = "grouped",
    channels_last: bool = True,
) -> tuple[Params, torch.Tensor]:
    """Every client's gradient of its weighted mean cross-entropy, ``{name: (R, m, *shape)}`` in the computation's
    dtype (bfloat16 under bf16 autocast: :func:`~fedgames.envs.fedsgd.engine.flatten` casts them as it concatenates
    them, one pass instead of two), and that loss ``(R, m)`` in the parameters' dtype.

    Args:
        params: ``{name: (R, *shape)}``, the FEMNIST CNN's parameters of each run.
        x: ``(R, m, b, side, side)`` inputs; ``y``: ``(R, m, b)`` labels; ``weight``: ``(R, m, b)`` sample weights
            (0 for padding).
        conv1: how the first convolution runs (:class:`_Conv1`; all give the same result), or ``"auto"``: as
            :func:`autotune` found fastest for such inputs (then ``channels_last`` too), else :data:`UNTUNED`.
        channels_last: activations channels-last in memory (else channels-first); the same result.
    """
    runs, clients, b = weight.shape
    groups, q = runs * clients, side // 4
    conv1, channels_last = kernel_choice(conv1, channels_last, params, weight)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    dtype = _compute_dtype(params["fc1.weight"])
    with torch.autocast(x.device.type, enabled=False):
        p = {k: v.to(dtype) for k, v in params.items()}
        w1, w2 = _per_client(p["conv1.weight"], clients), _per_client(p["conv2.weight"], clients)
        h0 = x.to(dtype).permute(2, 0, 1, 3, 4).reshape(b, groups, side, side)
        first = _Conv1(conv1, h0.contiguous(memory_format=memory_format), memory_format)
        # relu(maxpool(a)) == maxpool(relu(a)): the ReLU runs in place on the 4x smaller pooled tensor, and
        # relu(m) > 0 where m > 0, so the pooled activations give the ReLU masks too
        a1 = first.forward(w1, _per_client(p["conv1.bias"], clients))
        p1, i1 = _pool(a1)
        p1 = p1.relu_()
        a2 = F.conv2d(p1, w2, _per_client(p["conv2.bias"], clients), padding=2, groups=groups)
        p2, i2 = _pool(a2)
        p2 = p2.relu_()
        # (b, G x 64, q, q) -> (R, m x b, 64 q^2): a run's samples ordered by (client, sample)
        f = p2.reshape(b, runs, clients, 64, q, q).permute(1, 2, 0, 3, 4, 5).reshape(runs, clients * b, -1)
        z1 = torch.baddbmm(p["fc1.bias"][:, None], f, p["fc1.weight"].transpose(1, 2))
        h1 = F.relu(z1)
        logits = torch.baddbmm(p["fc2.bias"][:, None], h1, p["fc2.weight"].transpose(1, 2))
        # d(client loss)/d(logits) = (softmax - onehot) * w / sum(w) over the client's samples
        scale = weight / weight.sum(-1, keepdim=True).clamp_min(1e-12)
        log_probs = torch.log_softmax(logits.to(torch.promote_types(dtype, torch.float32)), dim=-1)
        labels = y.reshape(runs, clients * b, 1)
        losses = -(log_probs.gather(-1, labels)[..., 0] * scale.flatten(1)).reshape(runs, clients, b).sum(-1)
        probs = log_probs.exp().scatter_add_(-1, labels, -torch.ones_like(labels, dtype=log_probs.dtype))
        dlogits = (probs * scale.reshape(runs, clients * b, 1)).to(dtype)

        def per(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(groups, b, t.shape[-1])

        grads = {"fc2.weight": torch.bmm(per(dlogits).transpose(1, 2), per(h1)), "fc2.bias": per(dlogits).sum(1)}
        dz1 = torch.bmm(dlogits, p["fc2.weight"]) * (z1 > 0)
        dm2 = torch.bmm(dz1, p["fc1.weight"]).reshape(runs, clients, b, 64, q, q).permute(2, 0, 1, 3, 4, 5).reshape(
            p2.shape
        ).contiguous(memory_format=memory_format) * (p2 > 0)
        # each activation is dropped once its backward is done: the round's peak memory is the first layer's
        da2 = _unpool(dm2, a2, i2)
        del a2, i2, dm2
        dp1, grads["conv2.weight"], grads["conv2.bias"] = _conv_backward(da2, p1, w2, groups, input_grad=True)
        del da2
        assert dp1 is not None  # asked for: input_grad=True
        da1 = _unpool(dp1 * (p1 > 0), a1, i1)
        del a1, i1, dp1
        grads["conv1.weight"], grads["conv1.bias"] = first.weight_grads(da1, w1)
        del da1, first
        # the largest gradient (R x m x 6.4M entries) last, with no activation left beside it
        grads["fc1.weight"] = torch.bmm(per(dz1).transpose(1, 2), per(f))
        grads["fc1.bias"] = per(dz1).sum(1)
    return (
        {name: grads[name].reshape((runs, clients) + tuple(v.shape[1:])) for name, v in params.items()},
        losses.to(params["fc1.weight"].dtype),
    )
