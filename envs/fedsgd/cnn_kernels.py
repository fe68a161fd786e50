"""Per-client gradients of the FEMNIST CNN for many runs at once, by hand (SPEC §2 "Performance").

Within a run every active client differentiates at the run's weights, so the forward pass and the gradients with
respect to the *activations* are shared-weight computations over all ``m x b`` samples of the run: convolutions
with the runs as groups (``groups = R``) and batched matrix products over runs. Only the gradients with respect to
the *weights* must stay per client: batched matrix products over ``R x m`` (dense layers) and convolution weight
gradients with ``groups = R x m`` (convolutions). :func:`torch.func.vmap` over runs and clients does every step per
``(run, client)`` pair instead (groups of ``b`` samples); this path gives the large shared-weight steps to the
library kernels whole. The result equals :func:`fedgames.envs.fedsgd.engine.naive_client_gradients` of
:meth:`FemnistCNN.loss <fedgames.envs.fedsgd.models.FemnistCNN.loss>` (tests/test_fedsgd_engine.py).

Under ``torch.autocast`` the computation runs in the autocast dtype (bf16 on a GPU) with the softmax in float32;
the gradients come back in the parameters' dtype.
"""

from __future__ import annotations

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


def _per_client(t: torch.Tensor, runs: int, clients: int) -> torch.Tensor:
    """``(S, R * c, H, W)`` activations with ``S = m * b`` ordered by (client, sample) -> ``(b, R * m * c, H, W)``:
    one convolution group per (run, client)."""
    s, rc, h, w = t.shape
    c, b = rc // runs, s // clients
    return t.reshape(clients, b, runs, c, h, w).permute(1, 2, 0, 3, 4, 5).reshape(b, runs * clients * c, h, w)


def _conv_weight_grads(inputs: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor, runs: int, clients: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(run, client) weight and bias gradients ``(R, m, ...)`` of a 5x5 'same' convolution whose run weights are
    ``weight (R, c_out, c_in, 5, 5)``."""
    per_weight = weight.new_empty((runs * clients,) + tuple(weight.shape[1:])).flatten(0, 1)
    _, grad_w, grad_b = torch.ops.aten.convolution_backward(
        _per_client(grad_out, runs, clients), _per_client(inputs, runs, clients), per_weight, [per_weight.shape[0]],
        [1, 1], [2, 2], [1, 1], False, [0, 0], runs * clients, [False, True, True])
    return (grad_w.reshape((runs, clients) + tuple(weight.shape[1:])),
            grad_b.reshape(runs, clients, weight.shape[1]))


def _conv_input_grad(grad_out: torch.Tensor, inputs: torch.Tensor, weight: torch.Tensor, runs: int) -> torch.Tensor:
    """The gradient with respect to a grouped convolution's input (shared run weights, ``groups = R``)."""
    return torch.ops.aten.convolution_backward(grad_out, inputs, weight.flatten(0, 1), None, [1, 1], [2, 2], [1, 1],
                                               False, [0, 0], runs, [True, False, False])[0]


class _Conv1:
    """The first convolution (one input channel, 32 filters) of ``R`` runs on ``(S, R, side, side)`` inputs, output
    ``(S, R * 32, side, side)``, and its per-(run, client) weight and bias gradients. Strategies:

    - ``grouped``: a convolution with ``groups = R``. One input channel per group makes PyTorch pick its native
      depthwise kernels rather than cuDNN (a third of the GPU time of a round on an H200, README).
    - ``padded``: the same with a zero second input channel, so the convolution is no longer depthwise.
    - ``im2col``: the 5x5 patches ``(R, 25, S x side^2)`` times the filters, one batched product per run (and per
      (run, client) for the weight gradient).
    """

    def __init__(self, strategy: str, h0: torch.Tensor, runs: int, clients: int) -> None:
        check_conv1(strategy)
        self.strategy, self.runs, self.clients = strategy, runs, clients
        s, _, side, _ = h0.shape
        if strategy == "padded":
            h0 = torch.stack([h0, torch.zeros_like(h0)], dim=2).flatten(1, 2)  # (S, R * 2, side, side)
        elif strategy == "im2col":  # (R, 25, S * side^2)
            patches = F.unfold(h0.transpose(0, 1).reshape(runs * s, 1, side, side), 5, padding=2)
            h0 = patches.reshape(runs, s, 25, side * side).transpose(1, 2).reshape(runs, 25, -1)
        self.inputs, self.s, self.side = h0, s, side

    def forward(self, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        runs, s, side = self.runs, self.s, self.side
        if self.strategy == "im2col":
            out = torch.baddbmm(bias[..., None], w.reshape(runs, 32, 25), self.inputs)  # (R, 32, S * side^2)
            return out.reshape(runs, 32, s, side * side).permute(2, 0, 1, 3).reshape(s, runs * 32, side, side)
        if self.strategy == "padded":
            w = torch.cat([w, torch.zeros_like(w)], dim=2)
        return F.conv2d(self.inputs, w.flatten(0, 1), bias.flatten(), padding=2, groups=runs)

    def weight_grads(self, grad_out: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        runs, clients, side = self.runs, self.clients, self.side
        if self.strategy == "im2col":
            b = self.s // clients
            g = grad_out.reshape(clients, b, runs, 32, side * side).permute(2, 0, 3, 1, 4)
            g = g.reshape(runs * clients, 32, b * side * side)
            patches = self.inputs.reshape(runs, 25, clients, b * side * side).permute(0, 2, 3, 1)
            grad_w = torch.bmm(g, patches.reshape(runs * clients, b * side * side, 25))
            return grad_w.reshape(runs, clients, 32, 1, 5, 5), g.sum(-1).reshape(runs, clients, 32)
        if self.strategy == "padded":
            grad_w, grad_b = _conv_weight_grads(self.inputs, grad_out, torch.cat([w, torch.zeros_like(w)], dim=2),
                                                runs, clients)
            return grad_w[:, :, :, :1], grad_b
        return _conv_weight_grads(self.inputs, grad_out, w, runs, clients)


CONV1_STRATEGIES = ("grouped", "padded", "im2col")


def check_conv1(strategy: str) -> str:
    """``strategy`` if it names a first-convolution strategy, else a ``ValueError`` listing them."""
    if strategy not in CONV1_STRATEGIES:
        raise ValueError(f"conv1 must be one of {CONV1_STRATEGIES}, got {strategy!r}")
    return strategy


def femnist_cnn_client_gradients(params: Params, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                                 side: int = 28, conv1: str = "grouped") -> tuple[Params, torch.Tensor]:
    """Every client's gradient of its weighted mean cross-entropy, ``{name: (R, m, *shape)}``, and that loss
    ``(R, m)``.

    Args:
        params: ``{name: (R, *shape)}``, the FEMNIST CNN's parameters of each run.
        x: ``(R, m, b, side, side)`` inputs; ``y``: ``(R, m, b)`` labels; ``weight``: ``(R, m, b)`` sample weights
            (0 for padding).
        conv1: how the first convolution runs (:class:`_Conv1`; all give the same result).
    """
    runs, clients, b = weight.shape
    s = clients * b
    dtype = _compute_dtype(params["fc1.weight"])
    with torch.autocast(x.device.type, enabled=False):
        p = {k: v.to(dtype) for k, v in params.items()}
        w1, w2 = p["conv1.weight"], p["conv2.weight"]
        # forward: runs are convolution groups, (client, sample) the batch
        first = _Conv1(conv1, x.to(dtype).reshape(runs, s, side, side).transpose(0, 1), runs, clients)
        # relu(maxpool(a)) == maxpool(relu(a)), and the ReLU then runs on the 4x smaller pooled tensor
        a1 = first.forward(w1, p["conv1.bias"])
        m1, i1 = _pool(a1)
        p1 = F.relu(m1)
        a2 = F.conv2d(p1, w2.flatten(0, 1), p["conv2.bias"].flatten(), padding=2, groups=runs)
        m2, i2 = _pool(a2)
        p2 = F.relu(m2)
        f = p2.reshape(s, runs, -1).transpose(0, 1)  # (R, S, 3136)
        z1 = torch.baddbmm(p["fc1.bias"][:, None], f, p["fc1.weight"].transpose(1, 2))
        h1 = F.relu(z1)
        logits = torch.baddbmm(p["fc2.bias"][:, None], h1, p["fc2.weight"].transpose(1, 2))
        # d(client loss)/d(logits) = (softmax - onehot) * w / sum(w) over the client's samples
        scale = weight / weight.sum(-1, keepdim=True).clamp_min(1e-12)
        log_probs = torch.log_softmax(logits.to(torch.promote_types(dtype, torch.float32)), dim=-1)
        labels = y.reshape(runs, s, 1)
        losses = -(log_probs.gather(-1, labels)[..., 0] * scale.reshape(runs, s)).reshape(runs, clients, b).sum(-1)
        probs = log_probs.exp().scatter_add_(-1, labels, -torch.ones_like(labels, dtype=log_probs.dtype))
        dlogits = (probs * scale.reshape(runs, s, 1)).to(dtype)

        def per(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(runs * clients, b, t.shape[-1])

        grads = {"fc2.weight": torch.bmm(per(dlogits).transpose(1, 2), per(h1)), "fc2.bias": per(dlogits).sum(1)}
        dz1 = torch.bmm(dlogits, p["fc2.weight"]) * (z1 > 0)
        grads["fc1.weight"] = torch.bmm(per(dz1).transpose(1, 2), per(f))
        grads["fc1.bias"] = per(dz1).sum(1)
        dm2 = torch.bmm(dz1, p["fc1.weight"]).transpose(0, 1).reshape(p2.shape) * (m2 > 0)
        da2 = _unpool(dm2, a2, i2)
        grads["conv2.weight"], grads["conv2.bias"] = _conv_weight_grads(p1, da2, w2, runs, clients)
        da1 = _unpool(_conv_input_grad(da2, p1, w2, runs) * (m1 > 0), a1, i1)
        grads["conv1.weight"], grads["conv1.bias"] = first.weight_grads(da1, w1)
    return ({name: grads[name].reshape((runs, clients) + tuple(v.shape[1:])).to(v.dtype) for name, v in params.items()},
            losses.to(params["fc1.weight"].dtype))
