"""The FedSGD game's batched simulator (SPEC §2; torch only): ``R`` independent runs advanced one round at a time.

Per round and run: draw the active clients (all, or ``m`` uniformly without replacement), give each a batch of
``batch_fraction`` of its data, let the engine form messages ``g + alpha xi`` and the server's step, and charge
what the protocol's payment stage asks (e.g. :class:`~fedgames.mechanisms.SidePayment`'s balanced payments,
[H] eq. 10, from each client's squared deviation from the aggregate). Runs whose parameters stop being finite
are flagged as diverged and frozen at their last finite parameters; nothing raises. The PettingZoo env and the
experiment runner both drive this class.

Some clients may be scripted Byzantine attackers (``byzantine``, :class:`~fedgames.envs.fedsgd.byzantine.
ByzantineClients`): their messages replace ``g + alpha xi`` before the server aggregates. A protocol's response
stage (e.g. :class:`~fedgames.mechanisms.NoisyResponse`) perturbs the model each active client receives, not the
server's model (:meth:`FedSGDGame.play_round`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.func import vmap

from fedgames.envs.fedsgd.byzantine import AttackSpec, ByzantineClients
from fedgames.envs.fedsgd.config import simulator_settings
from fedgames.envs.fedsgd.engine import (
    PRECISIONS,
    ClientBatch,
    Gradients,
    NoiseSegments,
    compiled,
    compiled_completion,
    complete_round,
    cuda_kernel_flags,
    decaying_lr,
    fedsgd_round,
    flatten,
    model_gradients,
    project,
    resolve_device,
    scale_segments_,
    unflatten,
)
from fedgames.envs.protocol import Protocol, broadcast
from fedgames.validation import integer


@dataclass(frozen=True)
class ClientData:
    """Every client's data, padded: ``x (N, n_max, ...)``, ``y (N, n_max)``, ``count (N,)`` real samples."""

    x: torch.Tensor
    y: torch.Tensor
    count: torch.Tensor

    @classmethod
    def from_arrays(cls, x: Any, y: Any, writer: Any, n_writers: int, device: str | torch.device = "cpu") -> ClientData:
        """From flat arrays (e.g. a ``FederatedDataset``'s ``x``, ``y``, ``writer``)."""
        x, y, writer = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long), torch.as_tensor(writer)
        count = torch.bincount(writer, minlength=n_writers)
        order = torch.argsort(writer, stable=True)
        slot = torch.arange(len(writer)) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        padded_x = torch.zeros((n_writers, int(count.max())) + tuple(x.shape[1:]), dtype=torch.float32)
        padded_y = torch.zeros((n_writers, int(count.max())), dtype=torch.long)
        padded_x[writer[order], slot] = x[order].float()
        padded_y[writer[order], slot] = y[order]
        return cls(padded_x.to(device), padded_y.to(device), count.to(device))

    @property
    def n_clients(self) -> int:
        return int(self.count.numel())


@dataclass(frozen=True)
class LastRound:
    """What the last round leaves behind: what the players observe of it and what the final self-correction
    removes (SPEC §2 "Final models and defence"; :meth:`FedSGDGame.final_parameters`). Shapes over the ``R`` runs
    and the ``m`` active clients.

    Attributes:
        active: ``(R, m)`` the active clients.
        weights: ``(R, m)`` their aggregation weights ``w_i`` (summing to 1 per run).
        alpha: ``(R, m)`` their aggressiveness; the noise is ``alpha xi`` with ``xi = scale * gaussian`` per segment
            of ``noise_segments``.
        gaussian: ``(R, m, P)`` (or ``(1, m, P)`` with common random numbers) the noise directions before scaling,
            ``None`` if nobody drew any.
        noise_segments: the parameter segments the noise is normalised over (``noise_norm``).
        lr: ``(R,)`` the step size ``gamma_T`` of the round.
        gradient_norm: ``(R, m)`` the norm of each active client's honest gradient.
        loss: ``(R, m)`` each active client's loss on its batch at the broadcast model.
        sq_deviation: ``(R, m)`` ``||m_T^i - mbar_T||^2`` (0 in a run frozen by divergence).
        response: ``(R, m, P)`` the response stage's perturbation ``r_T^i - mbar_T`` of the model each received,
            ``None`` under a plain broadcast.
    """

    active: torch.Tensor
    weights: torch.Tensor
    alpha: torch.Tensor
    gaussian: torch.Tensor | None
    noise_segments: NoiseSegments
    lr: torch.Tensor
    gradient_norm: torch.Tensor
    loss: torch.Tensor
    sq_deviation: torch.Tensor
    response: torch.Tensor | None


@dataclass
class RunState:
    """The state of ``R`` runs.

    Attributes:
        theta: ``(R, P)`` current parameters.
        center: ``(R, P)`` the initial parameters, centre of the projection ball ``W`` (read only: with ``common``
            random numbers one row expanded).
        common: common random numbers: every run draws the same initialisation, active clients, batches and attack
            noise directions ``xi``, so runs differ only by their ``alpha`` (paired comparisons of settings).
        round: rounds played.
        diverged: ``(R,)`` runs whose parameters stopped being finite (frozen since).
        payments: ``(R, N)`` per client, what the protocol's payment stage charged it so far (zeros without one).
        last: the last round's :class:`LastRound` (``None`` before the first).
    """

    theta: torch.Tensor
    center: torch.Tensor
    diverged: torch.Tensor
    payments: torch.Tensor
    common: bool = False
    round: int = 0
    last: LastRound | None = None

    def state_dict(self) -> dict[str, Any]:
        """What continues these runs (for a checkpoint): every field but ``last``, which the next round replaces
        (so restore only between rounds, not to take the final self-correction)."""
        return {name: getattr(self, name) for name in ("theta", "center", "common", "round", "diverged", "payments")}

    @classmethod
    def from_state_dict(cls, data: Mapping[str, Any], device: str | torch.device) -> RunState:
        """The runs of a :meth:`state_dict`, their tensors on ``device``."""
        return cls(
            theta=data["theta"].to(device),
            center=data["center"].to(device),
            diverged=data["diverged"].to(device),
            payments=data["payments"].to(device),
            common=bool(data["common"]),
            round=int(data["round"]),
        )


def padded_width(needed: int, full: int, widths: int = 6) -> int:
    """The smallest of ``ceil(full / sqrt(2)^k)``, ``k < widths``, that holds ``needed <= full`` samples: the batch
    widths of a compiled game (a handful of shapes to compile for, at most 41% padding above the smallest)."""
    return min(w for w in (math.ceil(full / 2 ** (k / 2)) for k in range(widths)) if w >= needed)


def response_seed(seed: int) -> int:
    """The seed of the response stage's generator for a run seeded ``seed`` (an independent stream, so a noisy
    response leaves the simulator's draws as they are; see :meth:`FedSGDGame.play_round`)."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


class FedSGDGame:
    """Configuration and batched rounds of the FedSGD game.

    Args:
        model: an objective from :mod:`fedgames.envs.fedsgd.models`.
        clients: the clients' training data.
        active: clients per round (``None``: all, full participation).
        lr: ``"constant"`` (``lr_value``) or ``"decaying"`` (``4 / (m_sc (eta + t))``).
        lr_value, strong_convexity, eta: the step-size constants (each ``> 0``).
        radius: projection radius ``> 0`` around the initial parameters (``inf``: none).
        noise_norm: ``"global"`` or ``"per_tensor"``.
        weighting: ``"size"`` (dataset-size-weighted mean) or ``"uniform"``.
        batch_fraction: share of a client's data in its batch each round (``0.9`` in [H] B.3).
        alpha_max: top of each player's aggressiveness range.
        precision: a key of :data:`~fedgames.envs.fedsgd.engine.PRECISIONS`: ``"tf32"`` (the default: float32
            with TF32 tensor cores on CUDA, PyTorch's own default for convolutions; exactly float32 on a CPU),
            ``"float32"`` (IEEE float32 on CUDA too) or ``"bfloat16"`` (the per-client gradients under bf16
            autocast; GPU speed). The model, messages and payments stay in the state's dtype.
        compile: ``torch.compile`` the per-client gradients and the rest of each round (``True`` or a mode such
            as ``"max-autotune"``; see :func:`~fedgames.envs.fedsgd.engine.compiled` and
            :func:`~fedgames.envs.fedsgd.engine.compiled_completion`): fused kernels after a one-off compilation
            (about 20 s for the CNN on a CPU), the same result to rounding. Default ``False``.
        byzantine: ``{client index: attack}`` scripted Byzantine clients (see
            :class:`~fedgames.envs.fedsgd.byzantine.ByzantineClients`; default none). Their ``alpha`` is ignored.

    Mechanisms act through a :class:`~fedgames.envs.protocol.Protocol` (:meth:`protocol` gives the plain one; a
    mechanism wrapper's ``apply`` changes a stage): its action bounds check ``alpha``, its aggregation stage is the
    server's rule (given the dataset-size or uniform weights) and its payment stage charges the active clients.
    """

    def __init__(
        self,
        model: Any,
        clients: ClientData,
        active: int | None = None,
        lr: str = "constant",
        lr_value: float = 0.06,
        strong_convexity: float | None = None,
        eta: float = 1.0,
        radius: float = math.inf,
        noise_norm: str = "per_tensor",
        weighting: str = "size",
        batch_fraction: float = 0.9,
        alpha_max: float = 10.0,
        precision: str = "tf32",
        byzantine: Mapping[int, AttackSpec] | None = None,
        compile: bool | str = False,
    ) -> None:
        self.model, self.clients = model, clients
        n = clients.n_clients
        self.active = n if active is None else integer("active", active, 2, n)
        settings = simulator_settings(  # the checks of fedsgd_v0's config fields of the same names
            lr=lr,
            lr_value=lr_value,
            strong_convexity=strong_convexity,
            eta=eta,
            radius=radius,
            noise_norm=noise_norm,
            weighting=weighting,
            batch_fraction=batch_fraction,
            alpha_max=alpha_max,
            precision=precision,
            compile=compile,
        )
        self.lr: str = settings["lr"]
        self.lr_value: float = settings["lr_value"]
        self.eta: float = settings["eta"]
        self.strong_convexity: float | None = settings["strong_convexity"]
        if self.lr == "decaying" and self.strong_convexity is None:
            self.strong_convexity = getattr(model, "strong_convexity", None)
            if self.strong_convexity is None:
                raise ValueError("lr='decaying' needs strong_convexity (m_sc) for this objective")
        self.radius: float = settings["radius"]  # +inf: no projection
        self.noise_norm: str = settings["noise_norm"]
        self.weighting: str = settings["weighting"]
        self.batch_fraction: float = settings["batch_fraction"]
        self._largest_batch = int(self._batch_size(clients.count).max())
        self.alpha_max: float = settings["alpha_max"]
        self.precision: str = settings["precision"]
        self._kernel = model_gradients(model)
        self.compile: bool | str = settings["compile"]
        self._gradients = compiled(self._precise_gradients, compile)
        self._complete = compiled_completion(compile)
        self.byzantine = None if not byzantine else ByzantineClients(byzantine, n, self.active)
        self.like = {k: v.to(clients.x.device) for k, v in model.init(torch.Generator().manual_seed(0)).items()}

    def __getstate__(self) -> dict[str, Any]:  # compiled routines do not pickle: rebuilt on unpickling
        return {k: v for k, v in self.__dict__.items() if k not in ("_gradients", "_complete")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._gradients = compiled(self._precise_gradients, self.compile)
        self._complete = compiled_completion(self.compile)

    def gradients(self, loss: Any, params: dict[str, torch.Tensor], batch: ClientBatch) -> Gradients:
        """Every active client's gradient and loss (the engine's ``gradients`` stage), under bf16 autocast if
        asked (then possibly in bfloat16: the round casts them as it flattens them), compiled if asked; on CUDA
        with cuDNN's autotuner and TF32 as the precision says (:func:`~fedgames.envs.fedsgd.engine.cuda_kernel_flags`)
        and the model's kernels tuned to the device first where it can (``tune``, e.g.
        :meth:`FemnistCNN.tune <fedgames.envs.fedsgd.models.FemnistCNN.tune>`)."""
        with cuda_kernel_flags(batch.x.device, PRECISIONS[self.precision].tf32):
            tune = getattr(self.model, "tune", None)
            if tune is not None and batch.x.device.type == "cuda":  # eagerly, before any compiled call
                with PRECISIONS[self.precision].autocast_on(batch.x.device):
                    tune(params, batch.x, batch.y, batch.weight)
            return self._gradients(loss, params, batch)

    def _precise_gradients(self, loss: Any, params: dict[str, torch.Tensor], batch: ClientBatch) -> Gradients:
        with PRECISIONS[self.precision].autocast_on(batch.x.device):
            return self._kernel(loss, params, batch)

    def protocol(self) -> Protocol:
        """The plain protocol: ``alpha in [0, alpha_max]``, the (weighted) mean, no payments."""
        return Protocol(("alpha",), np.array([0.0]), np.array([self.alpha_max]))

    def start(
        self, runs: int, generator: torch.Generator, dtype: torch.dtype = torch.float32, common: bool = False
    ) -> RunState:
        """``runs`` fresh runs from the model's initialisation (one draw per run, or one for all with ``common``
        random numbers: see :class:`RunState`), computed in ``dtype``.

        Models initialise on the CPU: a GPU ``generator`` seeds a CPU one for that."""
        device = self.clients.x.device
        if generator.device.type != "cpu":
            seed = torch.randint(2**62, (1,), generator=generator, device=generator.device)
            generator = torch.Generator().manual_seed(int(seed))
        inits = [
            flatten({k: v[None] for k, v in self.model.init(generator).items()}, 1)
            for _ in range(1 if common else runs)
        ]
        center = torch.cat(inits).to(device=device, dtype=dtype).expand(runs, -1)  # one stored row when common
        return RunState(
            theta=center.clone(),
            center=center,
            common=common,
            diverged=torch.zeros(runs, dtype=torch.bool, device=device),
            payments=torch.zeros(runs, self.clients.n_clients, device=device, dtype=dtype),
        )

    def step_size(self, t: int) -> float:
        """``gamma_t`` for round ``t`` (from 1)."""
        if self.lr == "constant":
            return self.lr_value
        assert self.strong_convexity is not None  # lr="decaying" always has one (__init__)
        return decaying_lr(self.strong_convexity, self.eta, t)

    def draw_batches(
        self, active: torch.Tensor, generator: torch.Generator, draws: int
    ) -> tuple[ClientBatch, torch.Tensor]:
        """The active clients' batches and data sizes: ``ceil(batch_fraction * n)`` of each client's ``n`` samples,
        drawn uniformly without replacement (``draws`` independent choices: ``R``, or 1 shared by all runs).

        A batch is padded (weight 0) to the round's largest one, or, when compiled, to the next of a few fixed
        widths (:func:`padded_width`: compiled kernels are specialised to each shape)."""
        count = self.clients.count[active]
        n_max = self.clients.x.shape[1]
        size = self._batch_size(count)
        real_sample = torch.arange(n_max, device=count.device) < count[..., None]
        scores = torch.rand((draws,) + active.shape[1:] + (n_max,), generator=generator, device=count.device)
        scores = torch.where(real_sample, scores.expand(active.shape + (n_max,)), 2.0)
        width = int(size.max())
        if self.compile:
            width = padded_width(width, self._largest_batch)
        chosen = torch.argsort(scores, dim=-1)[..., :width]  # its first `size` entries: the batch, in random order
        weight = (torch.arange(width, device=count.device) < size[..., None]).float()
        rows = active[..., None].expand_as(chosen)
        return ClientBatch(self.clients.x[rows, chosen], self.clients.y[rows, chosen], weight), count.float()

    def _batch_size(self, count: torch.Tensor) -> torch.Tensor:
        return torch.ceil(self.batch_fraction * count).clamp_min(1)

    def play_round(
        self,
        state: RunState,
        alpha: torch.Tensor,
        generator: torch.Generator,
        protocol: Protocol | None = None,
        response_generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Advance every run by one round with aggressiveness ``alpha`` ``(R, N)`` under ``protocol`` (default:
        :meth:`protocol`); return the active clients ``(R, m)``. Diverged runs stay frozen.

        Response stage (SPEC §4 "noisy server response ... noise on the broadcast model"). [H] defines the noisy
        response for mean estimation only (Thm 5.1: player i receives ``mbar + sqrt(C) eps_i ||m_i - mbar||``).
        Here the protocol's ``respond`` stage runs on the round's messages and aggregate, and its perturbation of
        the aggregate lands on the model each active client receives, never on the server's:
        ``theta^i_{t+1} = theta_{t+1} + (r_t^i - mbar_t)``, i.e. under
        :class:`~fedgames.mechanisms.NoisyResponse`
        ``theta^i_{t+1} = theta_{t+1} + sqrt(C) ||m_t^i - mbar_t|| eps_t^i`` with ``E||eps||^2 = 1``, so
        ``E||theta^i_{t+1} - theta_{t+1}||^2 = C ||m_t^i - mbar_t||^2`` and a client whose message equals the
        aggregate receives the exact model. Every round's gradients are taken at the server's ``theta_t`` ([H] §6:
        ``g_t(theta_t^s, x^i)``), so a received copy only matters once no round follows: the last round's
        perturbation is kept in ``state.last.response`` and enters the final model
        (:meth:`final_parameters`). ``response_generator`` draws the response noise (default: ``generator``);
        a separate one leaves the server's trajectory (batches, attack noise) identical with and without a noisy
        response.
        """
        protocol = protocol or self.protocol()
        runs, n = alpha.shape
        if n != self.clients.n_clients or runs != state.theta.shape[0]:
            raise ValueError(
                f"alpha must have shape ({state.theta.shape[0]}, {self.clients.n_clients}), got {tuple(alpha.shape)}"
            )
        protocol.check_actions(alpha.detach().cpu().numpy()[..., None])
        state.last = None  # frees the last round's noise directions, (R, m, P), before this round's are drawn
        device = state.theta.device
        draws = 1 if state.common else runs
        active = torch.rand(draws, n, generator=generator, device=device).argsort(-1)[:, : self.active]
        active = active.expand(runs, -1)
        batch, sizes = self.draw_batches(active, generator, draws)
        weights = sizes if self.weighting == "size" else torch.ones_like(sizes)
        t = state.round + 1
        lr = torch.full((runs,), self.step_size(t), device=device, dtype=state.theta.dtype)
        corrupt = None
        byzantine = self.byzantine
        if byzantine is not None:
            alpha = alpha.masked_fill(byzantine.mask.to(alpha.device), 0.0)  # no noise for scripted clients

            def corrupt(honest: torch.Tensor, messages: torch.Tensor) -> torch.Tensor:
                return byzantine.corrupt(honest, messages, active, generator)

        result = fedsgd_round(
            self.model.loss,
            state.theta,
            self.like,
            batch,
            alpha.gather(1, active).to(state.theta.dtype),
            weights,
            lr,
            generator,
            noise_norm=self.noise_norm,
            center=None if math.isinf(self.radius) else state.center,
            radius=self.radius,
            aggregate=protocol.aggregate,
            gradients=self.gradients,
            corrupt=corrupt,
            shared_noise=state.common,
            complete=self._complete if corrupt is None else complete_round,
        )  # Byzantine hooks: a new closure a round
        usable = torch.isfinite(result.theta.sum(-1))  # one pass: any NaN / inf (or an overflowing model) shows
        finite = usable & ~state.diverged
        state.diverged = state.diverged | ~usable
        state.theta = (
            result.theta
            if bool(finite.all())  # the usual case: no (R, P) select
            else torch.where(finite[:, None], result.theta, state.theta)
        )
        deviation = torch.where(finite[:, None], result.sq_deviation, torch.zeros_like(result.sq_deviation))
        charged = protocol.payments(result.messages, result.aggregate, result.sq_deviation)
        if charged is not None:
            charged = torch.where(finite[:, None], charged, torch.zeros_like(charged))
            state.payments.scatter_add_(1, active, charged.to(state.payments.dtype))
        response = None
        if protocol.respond is not broadcast:
            responses = protocol.respond(result.messages, result.aggregate, response_generator or generator)
            response = responses - result.aggregate[:, None, :]
        state.round = t
        state.last = LastRound(
            active=active,
            weights=weights / weights.sum(1, keepdim=True),
            alpha=result.alpha,
            gaussian=result.gaussian,
            noise_segments=result.noise_segments,
            lr=lr,
            gradient_norm=result.gradient_norm,
            loss=result.loss,
            sq_deviation=deviation,
            response=response,
        )
        return active

    def final_parameters(self, state: RunState, player: int) -> torch.Tensor:
        """``theta^i_{T+1}``: the model player i received, with its own last noise removed if it was active in the
        last round (SPEC §2 "Final models and defence"):
        ``Pi_W(theta_{T+1} + (r_T^i - mbar_T) + gamma_T w_i alpha_T^i xi_T^i)``, where ``r_T^i - mbar_T`` is the
        response stage's perturbation (0 under a plain broadcast; see :meth:`play_round`)."""
        last = state.last
        if last is None:
            return state.theta
        hit = last.active == player
        corrected = state.theta
        if last.gaussian is not None:
            own = hit * last.weights * last.alpha * last.lr[:, None]  # (R, m): i's step of the noise
            gaussian = last.gaussian.expand(own.shape + (-1,))
            step = torch.einsum("rm,rmp->rp", own.to(gaussian.dtype), gaussian)
            corrected = corrected + scale_segments_(step, last.noise_segments)
        if last.response is not None:
            corrected = corrected + (hit[..., None] * last.response).sum(1)
        return corrected if math.isinf(self.radius) else project(corrected, state.center, self.radius)

    def evaluate(
        self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, chunk: int = 2048
    ) -> dict[str, torch.Tensor]:
        """Mean loss ``(R,)`` of parameters ``(R, P)`` on ``(x, y)``, and accuracy where the model has logits."""
        params = unflatten(theta, {k: v[None] for k, v in self.like.items()}, 1)
        losses, correct = (
            torch.zeros(theta.shape[0], device=theta.device),
            torch.zeros(theta.shape[0], device=theta.device),
        )
        logits = getattr(self.model, "logits", None)
        for start in range(0, len(y), chunk):
            xs, ys = x[start : start + chunk], y[start : start + chunk]
            ones = torch.ones(len(ys), device=theta.device)
            losses += vmap(self.model.loss, in_dims=(0, None, None, None))(params, xs, ys, ones) * len(ys)
            if logits is not None:
                predicted = vmap(logits, in_dims=(0, None))(params, xs).argmax(-1)
                correct += (predicted == ys).float().sum(-1)
        result = {"loss": losses / len(y)}
        if logits is not None:
            result["accuracy"] = correct / len(y)
        return result


__all__ = [
    "PRECISIONS",
    "ClientData",
    "FedSGDGame",
    "LastRound",
    "RunState",
    "padded_width",
    "resolve_device",
    "response_seed",
]
