"""The batched FedSGD engine (SPEC §2 "Protocol" and "Performance"; torch only, no PettingZoo).

``R`` independent runs (seeds, alpha settings) each have ``m`` active clients per round. Within a run every
active client differentiates at the same weights; different runs have different weights. :func:`client_gradients`
computes all ``R x m`` per-client gradients in one call (``torch.func``: ``grad`` of the client's loss, ``vmap``
over clients with the run's parameters shared, ``vmap`` over runs), on whatever device the tensors live on.
:func:`naive_client_gradients` is the plain per-client autograd loop it must agree with.

A round (:func:`fedsgd_round`): messages ``m_t^i = g_t^i + alpha_t^i xi_t^i`` (:func:`noise_segments`, global or per
tensor; :func:`noisy_messages`), the server's aggregate ``mbar_t`` (a protocol stage: the weighted mean by
default), the step ``theta_{t+1} = Pi_W(theta_t - gamma_t mbar_t)`` (:func:`project`), and each client's squared
deviation ``||m_t^i - mbar_t||^2`` (what side payments charge). Everything after the gradients and the noise draws
is one function, :func:`complete_round`, which ``torch.compile`` fuses (:func:`compiled_completion`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import grad_and_value, vmap

from fedgames.arrays import squared_distance, vector_norm
from fedgames.envs.protocol import mean_aggregate

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ClientBatch:
    """The active clients' data of every run, padded to a common batch size.

    Attributes:
        x: ``(R, m, b, ...)`` inputs.
        y: ``(R, m, b)`` labels.
        weight: ``(R, m, b)`` 1 for a real sample, 0 for padding.
    """

    x: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor


Gradients = tuple[Params, torch.Tensor]
"""What a gradient routine returns: every active client's gradient ``{name: (R, m, *shape)}`` and its loss at
the broadcast parameters on its batch ``(R, m)`` (the forward pass computes it anyway; players observe it)."""


def client_gradients(loss: Callable[..., torch.Tensor], params: Params, batch: ClientBatch) -> Gradients:
    """Every active client's gradient and loss in every run, from parameters ``{name: (R, *shape)}``."""
    per_client = vmap(grad_and_value(loss), in_dims=(None, 0, 0, 0))
    return vmap(per_client, in_dims=(0, 0, 0, 0))(params, batch.x, batch.y, batch.weight)


def model_gradients(model: Any) -> Callable[..., Gradients]:
    """The gradient routine for ``model``: its own batched ``client_gradients(params, x, y, weight)`` when it has
    one (hand-written kernels, e.g. the FEMNIST CNN's), else :func:`client_gradients` of its loss."""
    own = getattr(model, "client_gradients", None)
    if own is None:
        return client_gradients

    def gradients(loss: Callable[..., torch.Tensor], params: Params, batch: ClientBatch) -> Gradients:
        return own(params, batch.x, batch.y, batch.weight)

    return gradients


def _tf32_settings(tf32: bool) -> tuple[list[tuple[Any, str]], Any]:
    """The float32-precision switches of CUDA matrix products and cuDNN convolutions, and the value for ``tf32``:
    PyTorch >= 2.9's ``fp32_precision`` (reading its legacy ``allow_tf32`` after a mix of both raises), else
    ``allow_tf32``."""
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return [(matmul, "fp32_precision"), (conv, "fp32_precision")], "tf32" if tf32 else "ieee"
    return [(matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")], tf32


@contextmanager
def cuda_kernel_flags(device: torch.device, tf32: bool) -> Iterator[None]:
    """On a CUDA ``device``: cuDNN's autotuner on (``benchmark``: the fastest convolution algorithm for each input
    shape, found on its first use; runs then agree to rounding, not bitwise) and TensorFloat-32 tensor cores for
    float32 matrix products and convolutions on or off (``tf32``: 10 significant bits in the products, float32
    accumulation), all restored on exit. Elsewhere nothing."""
    if device.type != "cuda":
        yield
        return
    keep = {"allow_tf32": None, "fp32_precision": None}  # the precision is set below, with the newest API there is
    keep = {k: v for k, v in keep.items() if k in inspect.signature(torch.backends.cudnn.flags).parameters}
    with torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False, **keep):
        settings, value = _tf32_settings(tf32)
        previous = [getattr(owner, name) for owner, name in settings]
        for owner, name in settings:
            setattr(owner, name, value)
        try:
            yield
        finally:
            for (owner, name), old in zip(settings, previous):
                setattr(owner, name, old)


@dataclass(frozen=True)
class Precision:
    """How the per-client gradients are computed: under ``autocast`` to that dtype (``None``: in the state's dtype)
    and with TensorFloat-32 tensor cores for float32 products on CUDA (``tf32``; see :func:`cuda_kernel_flags`)."""

    autocast: torch.dtype | None
    tf32: bool

    def autocast_on(self, device: torch.device | str) -> torch.autocast:
        """The ``torch.autocast`` context of this precision on ``device`` (disabled without an autocast dtype)."""
        device_type = torch.device(device).type
        return torch.autocast(device_type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None)


PRECISIONS = {
    "float32": Precision(None, tf32=False),
    "tf32": Precision(None, tf32=True),
    "bfloat16": Precision(torch.bfloat16, tf32=True),
}
"""``float32``: IEEE float32 throughout; ``tf32``: float32 storage, TF32 products on CUDA (as float32 on a CPU);
``bfloat16``: bf16 autocast, the GPU's fastest."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; otherwise ``device`` checked (``cpu``, ``cuda``, ``cuda:1``,
    ...) with an error naming the parameter."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available on this machine (use 'cpu' or 'auto')")
    return resolved


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(compile: bool | str) -> str | None:
    """The ``torch.compile`` mode that ``compile`` asks for: ``None`` for ``False``, ``"default"`` for ``True``, else
    one of :data:`COMPILE_MODES` (anything else is a ``ValueError``)."""
    if compile is False:
        return None
    if compile is not True and compile not in COMPILE_MODES:
        raise ValueError(f"compile must be False, True or one of {COMPILE_MODES}, got {compile!r}")
    return "default" if compile is True else compile


def compiled(routine: Callable[..., Gradients], compile: bool | str) -> Callable[..., Gradients]:
    """``routine`` (a gradient routine) under :func:`torch.compile` with static shapes, or ``routine`` itself for
    ``compile=False``.

    ``compile``: ``True`` (the default mode) or a mode of :data:`COMPILE_MODES`. Compiling fuses the elementwise,
    pooling and casting passes around the matrix products into generated kernels; the first call (per input shape)
    pays a one-off compilation. The result equals the eager one to rounding. Under ``"reduce-overhead"`` (CUDA
    graphs) the routine's outputs live in memory its next call reuses, so the losses are copied out; the gradients
    must be consumed before the next call (:func:`fedsgd_round` flattens them at once).
    """
    mode = compile_mode(compile)
    if mode is None:
        return routine
    fused = torch.compile(routine, mode=mode, dynamic=False)
    if mode != "reduce-overhead":
        return fused

    def graphed(loss: Callable[..., torch.Tensor], params: Params, batch: ClientBatch) -> Gradients:
        torch.compiler.cudagraph_mark_step_begin()
        grads, losses = fused(loss, params, batch)
        return grads, losses.clone()

    return graphed


def naive_client_gradients(loss: Callable[..., torch.Tensor], params: Params, batch: ClientBatch) -> Gradients:
    """The reference: one autograd call per run and client."""
    runs, clients = batch.weight.shape[:2]
    out = {
        name: torch.empty((runs, clients) + p.shape[1:], dtype=p.dtype, device=p.device) for name, p in params.items()
    }
    losses = torch.empty((runs, clients), dtype=next(iter(params.values())).dtype, device=batch.weight.device)
    for r in range(runs):
        for c in range(clients):
            leaves = {name: p[r].detach().clone().requires_grad_(True) for name, p in params.items()}
            value = loss(leaves, batch.x[r, c], batch.y[r, c], batch.weight[r, c])
            grads = torch.autograd.grad(value, list(leaves.values()))
            for name, g in zip(leaves, grads):
                out[name][r, c] = g
            losses[r, c] = value.detach()
    return out, losses


def flatten(tensors: Params, lead: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``{name: (*lead_dims, *shape)}`` -> ``(*lead_dims, P)`` in the dict's order, in ``dtype`` if given (cast and
    concatenated in one pass: e.g. bf16 gradients into the float32 messages)."""
    parts = [t.reshape(t.shape[:lead] + (-1,)) for t in tensors.values()]
    if dtype is None or all(part.dtype == dtype for part in parts):
        return torch.cat(parts, dim=-1)
    out = torch.empty(
        parts[0].shape[:-1] + (sum(part.shape[-1] for part in parts),), dtype=dtype, device=parts[0].device
    )
    return torch.cat(parts, dim=-1, out=out)


def unflatten(flat: torch.Tensor, like: Params, lead: int) -> Params:
    """The inverse of :func:`flatten`, shaped like ``like``'s tensors (which carry ``lead`` leading dims)."""
    out, start = {}, 0
    for name, t in like.items():
        size = math.prod(t.shape[lead:])
        out[name] = flat[..., start : start + size].reshape(flat.shape[:-1] + t.shape[lead:])
        start += size
    return out


NoiseSegments = tuple[tuple[int, int, float], ...]
"""Ranges ``[start, stop)`` of the flat parameter vector with the scale of the attack noise on each: the directions
are ``xi = scale * gaussian`` there, ``gaussian`` standard normal (see :func:`noise_segments`)."""


def noise_segments(like: Params, mode: str) -> NoiseSegments:
    """Where the noise ``xi`` has which scale, so that ``E xi = 0`` with unit expected squared norm (SPEC §2).

    ``global``: one range, ``E||xi||^2 = 1`` over the whole parameter vector (the theory). ``per_tensor``: each
    weight tensor and bias vector separately has ``E||xi_k||^2 = 1`` ([H] B.3), so the whole vector has as many
    units as there are tensors. ``like`` holds one set of parameter shapes (no leading dims).
    """
    sizes = [t.numel() for t in like.values()]
    if mode == "global":
        return ((0, sum(sizes), 1.0 / math.sqrt(sum(sizes))),)
    if mode == "per_tensor":
        starts = [sum(sizes[:k]) for k in range(len(sizes))]
        return tuple((start, start + n, 1.0 / math.sqrt(n)) for start, n in zip(starts, sizes))
    raise ValueError(f"noise_norm must be 'global' or 'per_tensor', got {mode!r}")


def scale_segments_(x: torch.Tensor, segments: NoiseSegments) -> torch.Tensor:
    """``x`` ``(..., P)`` times each segment's scale, in place (standard normals into directions ``xi``)."""
    for start, stop, scale in segments:
        x[..., start:stop].mul_(scale)
    return x


def noisy_messages(
    honest: torch.Tensor, alpha: torch.Tensor, gaussian: torch.Tensor, segments: NoiseSegments, in_place: bool = False
) -> torch.Tensor:
    """``m = g + alpha xi`` ``(R, m, P)`` from the honest gradients ``g``, with ``xi = scale * gaussian`` per segment,
    in one pass (``gaussian`` may be ``(1, m, P)``, shared by the runs).

    Eager: segment by segment into a copy of ``honest``, or into ``honest`` itself if ``in_place``. Under
    ``torch.compile``: the segments concatenated, the form Inductor fuses into what reads the messages (writes into
    slices it would not fuse: 4x slower on a CPU).
    """
    if torch.compiler.is_compiling():
        return torch.cat(
            [
                honest[..., start:stop] + alpha[..., None] * scale * gaussian[..., start:stop]
                for start, stop, scale in segments
            ],
            dim=-1,
        )
    messages = honest if in_place else honest.clone()
    for start, stop, scale in segments:
        messages[..., start:stop].addcmul_(alpha[..., None] * scale, gaussian[..., start:stop])
    return messages


def project(theta: torch.Tensor, center: torch.Tensor, radius: float) -> torch.Tensor:
    """``Pi_W``: the Euclidean projection of each run's ``theta`` ``(R, P)`` on the ball of ``radius`` around
    ``center`` (``radius = inf``: no projection)."""
    if math.isinf(radius):
        return theta
    offset = theta - center
    norm = vector_norm(offset)[:, None]
    return center + offset * torch.clamp(radius / norm.clamp_min(1e-300), max=1.0)


@dataclass(frozen=True)
class RoundResult:
    """One batched round: the new flat parameters ``(R, P)``, messages ``(R, m, P)``, the aggregate ``(R, P)``,
    each client's squared deviation ``||m_i - mbar||^2`` ``(R, m)``, the norm of its honest gradient and its loss
    at ``theta_t`` on its batch ``(R, m)``, and its noise ``alpha xi`` as ``alpha`` ``(R, m)`` and the directions
    ``xi = scale * gaussian`` per segment of ``noise_segments`` (``gaussian``: ``(R, m, P)``, or ``(1, m, P)``
    shared by all runs; ``None``: nobody drew noise), kept apart because only the final self-correction needs the
    product."""

    theta: torch.Tensor
    messages: torch.Tensor
    aggregate: torch.Tensor
    sq_deviation: torch.Tensor
    gradient_norm: torch.Tensor
    loss: torch.Tensor
    alpha: torch.Tensor
    gaussian: torch.Tensor | None
    noise_segments: NoiseSegments


Aggregator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Corruption = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def complete_round(
    grads: Params | torch.Tensor,
    theta: torch.Tensor,
    alpha: torch.Tensor,
    gaussian: torch.Tensor | None,
    segments: NoiseSegments,
    agg_weights: torch.Tensor,
    lr: torch.Tensor,
    center: torch.Tensor | None,
    radius: float,
    aggregate: Aggregator = mean_aggregate,
    corrupt: Corruption | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Everything of a round after the gradients and the noise draws, as :func:`fedsgd_round` documents it: the
    flat honest gradients (in ``theta``'s dtype), the messages, the aggregate, the step and projection, each
    client's squared deviation and honest gradient norm. Returns ``(theta_next, messages, aggregate,
    sq_deviation, gradient_norm)``.

    ``grads``: the gradients as a routine returns them (then flattened and cast here: what the compiled form fuses
    into its first pass), or already flat ``(R, m, P)`` in ``theta``'s dtype, which becomes the messages.

    Elementwise passes and reductions over ``(R, m, P)`` arrays (about 5 GB each for the CNN at ``R = 64``) bound
    this stage on a GPU: :func:`compiled_completion` fuses them.
    """
    honest = grads if isinstance(grads, torch.Tensor) else flatten(grads, 2, dtype=theta.dtype)
    gradient_norm = vector_norm(honest)
    messages = honest
    if gaussian is not None:
        messages = noisy_messages(honest, alpha, gaussian, segments, in_place=corrupt is None)
    if corrupt is not None:
        messages = corrupt(honest, messages)
    mbar = aggregate(messages, agg_weights)
    updated = torch.addcmul(theta, lr[:, None], mbar, value=-1)  # no (R, P) temporary
    if center is not None:
        updated = project(updated, center, radius)
    sq_deviation = torch.stack(
        [squared_distance(messages[:, c], mbar) for c in range(messages.shape[1])], dim=1
    )  # per client: no (R, m, P) temporary
    return updated, messages, mbar, sq_deviation, gradient_norm


def compiled_completion(compile: bool | str) -> Callable[..., tuple[torch.Tensor, ...]]:
    """:func:`complete_round` under :func:`torch.compile` (static shapes) for ``compile`` as in :func:`compiled`,
    or itself for ``False``. Inductor fuses the cast, noise, aggregate, step and reductions into a few passes over
    the ``(R, m, P)`` arrays (one kernel on a CPU; at ``R = 8`` 1.4x faster than eager from float32 gradients, 2x
    from bf16). Never CUDA graphs: the results outlive the call."""
    mode = compile_mode(compile)
    if mode is None:
        return complete_round
    mode = "max-autotune-no-cudagraphs" if mode.startswith("max-autotune") else "default"
    return torch.compile(complete_round, mode=mode, dynamic=False)


def draw_directions(
    alpha: torch.Tensor, size: int, dtype: torch.dtype, generator: torch.Generator, shared: bool = False
) -> torch.Tensor | None:
    """The standard normals behind the noise directions of the clients with ``alpha > 0`` (``(R, m, size)``,
    zeros for the others; ``(1, m, size)`` for all clients when ``shared`` by the runs; ``None`` when nobody is
    noisy and nothing is shared). Honest clients draw nothing: with millions of parameters per client the draws
    cost most of a CPU round's noise."""
    noisy = alpha > 0
    device = alpha.device
    if shared:
        return torch.randn((1,) + tuple(alpha.shape[1:]) + (size,), generator=generator, device=device).to(dtype)
    count = int(noisy.sum())  # one device sync decides between the three cases
    if count == noisy.numel():
        return torch.randn(tuple(alpha.shape) + (size,), generator=generator, device=device).to(dtype)
    if count == 0:
        return None
    gaussian = torch.zeros(tuple(alpha.shape) + (size,), dtype=dtype, device=device)
    gaussian[noisy] = torch.randn((count, size), generator=generator, device=device).to(dtype)
    return gaussian


def fedsgd_round(
    loss: Callable[..., torch.Tensor],
    theta: torch.Tensor,
    like: Params,
    batch: ClientBatch,
    alpha: torch.Tensor,
    agg_weights: torch.Tensor,
    lr: torch.Tensor,
    generator: torch.Generator,
    noise_norm: str = "global",
    center: torch.Tensor | None = None,
    radius: float = math.inf,
    aggregate: Aggregator = mean_aggregate,
    gradients: Callable[..., Gradients] = client_gradients,
    corrupt: Corruption | None = None,
    shared_noise: bool = False,
    complete: Callable[..., tuple[torch.Tensor, ...]] = complete_round,
) -> RoundResult:
    """One FedSGD round for ``R`` runs at once.

    Args:
        loss: the model's ``loss(params, x, y, weight)``.
        theta: ``(R, P)`` flat parameters broadcast this round.
        like: one set of parameter tensors giving names and shapes (for unflattening).
        batch: the active clients' data.
        alpha: ``(R, m)`` each active client's aggressiveness.
        agg_weights: ``(R, m)`` aggregation weights (dataset sizes, or ones).
        lr: ``(R,)`` step sizes ``gamma_t``.
        generator: draws the attack noise.
        noise_norm: ``"global"`` or ``"per_tensor"`` (:func:`noise_segments`).
        center, radius: the ball ``W`` of the projection (default: none).
        aggregate: ``(messages, weights) -> (R, P)``, the server's rule (a protocol's aggregation stage; by default
            the weighted mean).
        gradients: :func:`client_gradients`, a model's own (:func:`model_gradients`) or the reference
            :func:`naive_client_gradients`.
        corrupt: ``(honest (R, m, P), messages (R, m, P)) -> messages``, the scripted Byzantine clients' hook
            (:meth:`fedgames.envs.fedsgd.byzantine.ByzantineClients.corrupt`): replaces their rows of
            ``g + alpha xi`` before aggregation (``alpha`` and ``xi`` stay as drawn). Default: no Byzantine
            client.
        shared_noise: every run draws the same directions ``xi`` (always, whatever ``alpha``): common random
            numbers across runs that differ only by ``alpha``.
        complete: :func:`complete_round`, or its compiled form (:func:`compiled_completion`).
    """
    params = unflatten(theta, {k: v[None] for k, v in like.items()}, 1)
    grads: Params | torch.Tensor
    grads, losses = gradients(loss, params, batch)
    if complete is complete_round:  # eager: the per-tensor gradients are freed before the noise is drawn
        grads = flatten(grads, 2, dtype=theta.dtype)  # (one (R, m, P) array less at the round's peak)
    segments = noise_segments(like, noise_norm)
    gaussian = draw_directions(alpha, segments[-1][1], theta.dtype, generator, shared=shared_noise)
    updated, messages, mbar, sq_deviation, gradient_norm = complete(
        grads, theta, alpha, gaussian, segments, agg_weights, lr, center, radius, aggregate, corrupt
    )
    return RoundResult(
        theta=updated,
        messages=messages,
        aggregate=mbar,
        sq_deviation=sq_deviation,
        gradient_norm=gradient_norm,
        loss=losses.to(theta.dtype),
        alpha=alpha,
        gaussian=gaussian,
        noise_segments=segments,
    )


def decaying_lr(m_sc: float, eta: float, t: int) -> float:
    """``gamma_t = 4 / (m_sc (eta + t))`` (Thm 6.1's schedule; ``t`` counts from 1)."""
    return 4.0 / (m_sc * (eta + t))


__all__ = [
    "ClientBatch",
    "Gradients",
    "NoiseSegments",
    "PRECISIONS",
    "Precision",
    "RoundResult",
    "client_gradients",
    "compile_mode",
    "complete_round",
    "compiled",
    "compiled_completion",
    "cuda_kernel_flags",
    "decaying_lr",
    "draw_directions",
    "fedsgd_round",
    "flatten",
    "model_gradients",
    "naive_client_gradients",
    "noise_segments",
    "noisy_messages",
    "project",
    "resolve_device",
    "scale_segments_",
    "unflatten",
]
