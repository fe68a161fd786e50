"""The batched FedSGD engine: batched == naive per-client loop, noise normalisation, projection, and SGD theory
on the quadratic objective (exact expected loss recursion vs simulation, within 4 standard errors)."""

from __future__ import annotations

import math
import time

import pytest
import torch

from fedgames.envs.fedsgd import cnn_kernels
from fedgames.envs.fedsgd.cnn_kernels import CONV1_STRATEGIES
from fedgames.envs.fedsgd.engine import (
    ClientBatch,
    client_gradients,
    compiled_completion,
    complete_round,
    decaying_lr,
    draw_directions,
    fedsgd_round,
    flatten,
    model_gradients,
    naive_client_gradients,
    noise_segments,
    noisy_messages,
    project,
    scale_segments_,
    unflatten,
)
from fedgames.envs.fedsgd.models import FemnistCNN, Logistic, Quadratic
from fedgames.envs.protocol import mean_aggregate

MODELS = [
    pytest.param(Quadratic(), (2,), 1, id="quadratic"),
    pytest.param(Logistic(16, 5), (4, 4), 5, id="logistic"),
    pytest.param(FemnistCNN(), (28, 28), 62, id="cnn"),
]


def _setup(model, x_shape, n_classes, runs=3, clients=3, batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    like = model.init(g)
    params = {
        k: torch.stack([v + 0.01 * torch.randn(v.shape, generator=g) for _ in range(runs)]) for k, v in like.items()
    }
    x = torch.rand((runs, clients, batch) + x_shape, generator=g)
    y = torch.randint(0, n_classes, (runs, clients, batch), generator=g)
    weight = (torch.rand(runs, clients, batch, generator=g) > 0.3).float()
    weight[..., 0] = 1.0  # every client has at least one real sample; the rest is padding
    return like, params, ClientBatch(x, y, weight)


@pytest.mark.parametrize("model, x_shape, n_classes", MODELS)
def test_batched_gradients_equal_the_per_client_loop(model, x_shape, n_classes):
    _, params, batch = _setup(model, x_shape, n_classes)
    batched, batched_loss = client_gradients(model.loss, params, batch)
    naive, naive_loss = naive_client_gradients(model.loss, params, batch)
    for name in params:
        torch.testing.assert_close(batched[name], naive[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched_loss, naive_loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model, x_shape, n_classes", MODELS)
def test_round_batched_equals_naive(model, x_shape, n_classes):
    """Messages and the updated model agree between the batched engine and the naive loop (same noise seed)."""
    like, params, batch = _setup(model, x_shape, n_classes)
    theta = flatten(params, 1)
    runs, clients = batch.weight.shape[:2]
    alpha = torch.rand(runs, clients, generator=torch.Generator().manual_seed(3))
    sizes = batch.weight.sum(-1)
    lr = torch.full((runs,), 0.06)
    results = [
        fedsgd_round(
            model.loss,
            theta,
            like,
            batch,
            alpha,
            sizes,
            lr,
            torch.Generator().manual_seed(9),
            noise_norm="per_tensor",
            gradients=gradients,
        )
        for gradients in (client_gradients, naive_client_gradients)
    ]
    for field in ("messages", "aggregate", "theta", "sq_deviation"):
        torch.testing.assert_close(getattr(results[0], field), getattr(results[1], field), rtol=1e-5, atol=1e-6)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("conv1", CONV1_STRATEGIES)
@pytest.mark.parametrize("device", DEVICES)
def test_cnn_grouped_kernels_equal_the_per_client_loop(device, conv1, channels_last):
    """The CNN's hand-written grouped path (what the game uses for it), with each first-convolution strategy and
    memory format == autograd per client, in float64 (so only rounding separates them), padding, uneven sample
    weights and blank image rows (ties in max-pooling, as on the glyphs' background) included."""
    model = FemnistCNN(conv1=conv1, channels_last=channels_last)
    _, params, batch = _setup(model, (28, 28), 62, runs=2, clients=3, batch=5)
    params = {k: v.double().to(device) for k, v in params.items()}
    blank = batch.x.double()
    blank[..., :8, :] = 0.0
    batch = ClientBatch(
        blank.to(device), batch.y.to(device), (batch.weight.double() * torch.linspace(0.5, 2.0, 5).double()).to(device)
    )
    assert model_gradients(model) is not client_gradients
    grouped, grouped_loss = model_gradients(model)(model.loss, params, batch)
    naive, naive_loss = naive_client_gradients(model.loss, params, batch)
    for name in params:
        assert grouped[name].dtype == torch.float64
        torch.testing.assert_close(grouped[name], naive[name], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grouped_loss, naive_loss, rtol=1e-10, atol=1e-12)


def test_unknown_conv1_strategy_is_rejected():
    with pytest.raises(
        ValueError,
        match=r"conv1 must be 'auto' or one of \('grouped', 'padded', 'im2col'\), "
        r"got 'winograd'",
    ):
        FemnistCNN(conv1="winograd")


def test_fastest_times_every_candidate_after_a_warm_up():
    calls, synced = [], []
    candidates = {
        name: (lambda name=name, pause=pause: calls.append(name) or time.sleep(pause))
        for name, pause in (("slow", 0.02), ("quick", 0.0), ("middling", 0.01))
    }
    assert cnn_kernels.fastest(candidates, lambda: synced.append(1), repeats=2) == "quick"
    assert calls == ["slow"] * 3 + ["quick"] * 3 + ["middling"] * 3 and len(synced) == 6


def test_auto_runs_the_tuned_kernels(monkeypatch):
    """``conv1="auto"``: untuned, grouped channels-last; after :func:`autotune` on such inputs (device, dtype, runs,
    clients; here on the CPU, which the game never tunes), the recorded choice, one of the variants, and it is
    what runs; the gradients equal the fixed variants' (all are exact)."""
    monkeypatch.setattr(cnn_kernels, "_TUNED", {})
    ran = []

    class Spy(cnn_kernels._Conv1):
        def __init__(self, strategy, h0, memory_format):
            ran.append((strategy, memory_format == torch.channels_last))
            super().__init__(strategy, h0, memory_format)

    monkeypatch.setattr(cnn_kernels, "_Conv1", Spy)
    model = FemnistCNN()
    assert model.conv1 == "auto"
    _, params, batch = _setup(model, (28, 28), 62, runs=2, clients=2, batch=4)
    params = {k: v.double() for k, v in params.items()}
    x, y, weight = batch.x.double(), batch.y, batch.weight.double()
    untuned, _ = model.client_gradients(params, x, y, weight)
    assert ran == [cnn_kernels.UNTUNED]
    model.tune(params, x, y, weight)
    assert len(ran) == 1 + 6 * 4  # every variant: a warm-up and three timed calls
    ((key, choice),) = cnn_kernels._TUNED.items()
    assert key == ("cpu", torch.float64, 2, 2) and choice in set(ran[1:])
    ran.clear()
    tuned, _ = model.client_gradients(params, x, y, weight)
    model.tune(params, x, y, weight)  # remembered: nothing timed again
    assert ran == [choice]
    for name in params:
        torch.testing.assert_close(tuned[name], untuned[name], rtol=1e-10, atol=1e-12)
    model.client_gradients({k: v[:1] for k, v in params.items()}, x[:1], y[:1], weight[:1])  # another key: untuned
    assert ran[-1] == cnn_kernels.UNTUNED


def test_bf16_autocast_keeps_gradient_directions():
    """Under bf16 autocast (8 significant bits) each per-client gradient tensor keeps its direction: cosine
    similarity with the float32 gradient above 0.99; they come in bfloat16 (the round casts them as it flattens)."""
    model = FemnistCNN()
    _, params, batch = _setup(model, (28, 28), 62, runs=2, clients=2, batch=8)
    exact, _ = model.client_gradients(params, batch.x, batch.y, batch.weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = model.client_gradients(params, batch.x, batch.y, batch.weight)
    for name in params:
        assert low[name].dtype == torch.bfloat16
        cosine = torch.nn.functional.cosine_similarity(low[name].flatten(2), exact[name].flatten(2), dim=-1)
        assert cosine.min() > 0.99, name


def test_flatten_round_trip():
    like = FemnistCNN(n_classes=10).init(torch.Generator().manual_seed(0))
    stacked = {k: torch.stack([v, 2 * v]) for k, v in like.items()}
    back = unflatten(flatten(stacked, 1), stacked, 1)
    for name in like:
        assert torch.equal(back[name], stacked[name])


@pytest.mark.parametrize("mode", ["global", "per_tensor"])
def test_noise_directions_have_unit_expected_squared_norm(mode):
    """E xi = 0 and E||xi||^2 = 1 (globally, or per tensor), within 4 standard errors from the samples."""
    like = {"w": torch.zeros(3, 4), "b": torch.zeros(3), "v": torch.zeros(7)}
    gaussian = torch.randn(20_000, 22, generator=torch.Generator().manual_seed(1))
    xi = scale_segments_(gaussian, noise_segments(like, mode)).double()
    blocks = [xi] if mode == "global" else list(torch.split(xi, [12, 3, 7], dim=-1))
    for block in blocks:
        sq = (block**2).sum(-1)
        se = sq.std() / math.sqrt(sq.numel())
        assert abs(sq.mean().item() - 1.0) < 4 * se.item()
        mean_se = block.std(0) / math.sqrt(block.shape[0])
        assert torch.all(block.mean(0).abs() < 4 * mean_se)
    with pytest.raises(ValueError, match="noise_norm"):
        noise_segments(like, "per_layer")


def test_flatten_casts_while_concatenating():
    """bf16 gradients flattened into float32 equal their upcast, concatenated; the same dtype is a plain cat."""
    g = torch.Generator().manual_seed(0)
    parts = {"w": torch.randn(2, 3, 4, 5, generator=g).bfloat16(), "b": torch.randn(2, 3, 4, generator=g).bfloat16()}
    flat = flatten(parts, 2, dtype=torch.float32)
    assert flat.dtype == torch.float32 and flat.shape == (2, 3, 24)
    assert torch.equal(flat, torch.cat([parts["w"].float().flatten(2), parts["b"].float()], -1))
    assert flatten(parts, 2).dtype == torch.bfloat16


def test_noisy_messages_scale_each_segment():
    """``g + alpha xi`` with ``xi = scale * gaussian`` per segment, eager (into a copy or in place) and compiled;
    shared ``(1, m, P)`` draws broadcast over the runs."""
    like = {"w": torch.zeros(3, 4), "b": torch.zeros(3), "v": torch.zeros(7)}
    segments = noise_segments(like, "per_tensor")
    assert segments == ((0, 12, 1 / math.sqrt(12)), (12, 15, 1 / math.sqrt(3)), (15, 22, 1 / math.sqrt(7)))
    assert noise_segments(like, "global") == ((0, 22, 1 / math.sqrt(22)),)
    g = torch.Generator().manual_seed(0)
    honest, alpha = torch.randn(4, 3, 22, generator=g, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64)
    for lead in ((4, 3), (1, 3)):
        gaussian = torch.randn(lead + (22,), generator=torch.Generator().manual_seed(5)).double()
        expected = honest + alpha[..., None] * scale_segments_(gaussian.clone(), segments)
        torch.testing.assert_close(noisy_messages(honest, alpha, gaussian, segments), expected)
        fused = torch.compile(noisy_messages, dynamic=False)(honest, alpha, gaussian, segments)
        torch.testing.assert_close(fused, expected, rtol=1e-12, atol=1e-14)
        mutable = honest.clone()
        assert noisy_messages(mutable, alpha, gaussian, segments, in_place=True) is mutable
        torch.testing.assert_close(mutable, expected)


def test_only_noisy_clients_draw_directions():
    """Honest clients (alpha = 0) get zero directions and draw nothing; nobody noisy: ``None``; shared draws are
    ``(1, m, P)`` whatever alpha."""
    alpha = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])
    gaussian = draw_directions(alpha, 6, torch.float64, torch.Generator().manual_seed(0))
    assert gaussian.dtype == torch.float64 and torch.all(gaussian[alpha == 0] == 0)
    drawn = torch.randn((3, 6), generator=torch.Generator().manual_seed(0)).double()
    assert torch.equal(gaussian[alpha > 0], drawn)
    assert draw_directions(torch.zeros(2, 3), 6, torch.float32, torch.Generator()) is None
    assert draw_directions(torch.zeros(2, 3), 6, torch.float32, torch.Generator(), shared=True).shape == (1, 3, 6)


@pytest.mark.parametrize("noise", ["none", "shared", "per_client", "some"])
def test_compiled_completion_equals_eager(noise):
    """The fused (``torch.compile``) rest of a round gives the eager messages, aggregate, projected step,
    squared deviations and gradient norms, in float64 to rounding; also from bfloat16 gradients. Eager, gradients
    flattened beforehand (as ``fedsgd_round`` does, to free them early) give exactly the same."""
    g = torch.Generator().manual_seed(0)
    runs, clients, size = 3, 4, 50
    like = {"w": torch.zeros(5, 8), "b": torch.zeros(10)}
    grads = {
        "w": torch.randn(runs, clients, 5, 8, generator=g, dtype=torch.float64),
        "b": torch.randn(runs, clients, 10, generator=g, dtype=torch.float64),
    }
    alpha = {
        "none": torch.zeros(runs, clients),
        "shared": torch.rand(runs, clients, generator=g),
        "per_client": torch.rand(runs, clients, generator=g) + 0.1,
        "some": torch.tensor([[0.0, 1.0, 0.0, 2.0]] * runs),
    }[noise].double()
    gaussian = draw_directions(alpha, size, torch.float64, g, shared=noise == "shared")
    theta = torch.randn(runs, size, generator=g, dtype=torch.float64)
    args = (
        alpha,
        gaussian,
        noise_segments(like, "per_tensor"),
        torch.rand(runs, clients, generator=g, dtype=torch.float64) + 0.5,
        torch.full((runs,), 0.3, dtype=torch.float64),
        torch.zeros_like(theta),
        2.0,
    )
    for grad_dtype in (torch.float64, torch.bfloat16):
        cast = {k: v.to(grad_dtype) for k, v in grads.items()}
        eager = complete_round(cast, theta, *args)
        fused = compiled_completion(True)(cast, theta, *args)
        for e, f in zip(eager, complete_round(flatten(cast, 2, dtype=torch.float64), theta, *args)):
            assert torch.equal(f, e)
        for e, f in zip(eager, fused):
            assert f.dtype == torch.float64
            torch.testing.assert_close(f, e, rtol=1e-10, atol=1e-12)
        assert torch.all(eager[0].norm(dim=-1) <= 2.0 + 1e-12)  # projected on the ball


def test_weighted_mean_and_projection():
    messages = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mean_aggregate(messages, torch.ones(2, 3)), messages.mean(1))
    weights = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(mean_aggregate(messages, weights)[1], messages[1, 1])
    center = torch.zeros(2, 5)
    far, near = 10 * messages[:, 0], 0.01 * messages[:, 0]
    assert torch.allclose(project(far, center, 1.0).norm(dim=-1), torch.ones(2))
    assert torch.equal(project(near, center, 1.0), near)
    assert torch.equal(project(far, center, math.inf), far)


@pytest.mark.parametrize(("m_sc", "eta", "t"), [(1.0, 10.0, 1), (0.5, 3.0, 7), (2.0, 100.0, 50)])
def test_decaying_lr_is_thm_6_1_schedule(m_sc: float, eta: float, t: int):
    """Thm 6.1's schedule ``gamma_t = 4 / (m_sc (eta + t))``, written out here independently of ``decaying_lr``
    (the simulated and exact gaps below both call it, so they cannot catch a wrong constant)."""
    assert decaying_lr(m_sc, eta, t) == pytest.approx(4 / (m_sc * (eta + t)), rel=1e-15)


def _expected_gap(model: Quadratic, rounds: int, clients: int, batch: int, eta: float) -> float:
    """Exact ``E f(theta_T) - f*`` of honest FedSGD on the quadratic with ``gamma_t = 4/(m_sc (eta + t))``.

    Per coordinate k, ``e = theta - theta*`` follows ``e_{t+1} = (1 - gamma a_k) e_t + gamma a_k zbar_t`` with
    ``zbar`` the mean of ``clients x batch`` noise samples, so ``E e_{t+1}^2 = (1 - gamma a_k)^2 E e_t^2 +
    gamma^2 a_k^2 noise^2 / (clients batch)``.
    """
    gap = 0.0
    for a, star in zip(model.eigenvalues, model.theta_star):
        second = star**2
        for t in range(1, rounds + 1):
            gamma = decaying_lr(model.strong_convexity, eta, t)
            second = (1 - gamma * a) ** 2 * second + gamma**2 * a**2 * model.noise**2 / (clients * batch)
        gap += 0.5 * a * second
    return gap


def _simulate_gap(model: Quadratic, rounds: int, runs: int, clients: int, batch: int, eta: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(rounds)
    like = model.init(g)
    theta = flatten({k: v[None].repeat(runs, *([1] * v.dim())) for k, v in like.items()}, 1).double()
    like = {k: v.double() for k, v in like.items()}
    for t in range(1, rounds + 1):
        z, y = model.sample(runs * clients * batch, g)
        data = ClientBatch(
            z.double().reshape(runs, clients, batch, -1),
            y.reshape(runs, clients, batch),
            torch.ones(runs, clients, batch, dtype=torch.float64),
        )
        lr = torch.full((runs,), decaying_lr(model.strong_convexity, eta, t), dtype=torch.float64)
        theta = fedsgd_round(
            model.loss,
            theta,
            like,
            data,
            torch.zeros(runs, clients, dtype=torch.float64),
            torch.ones(runs, clients, dtype=torch.float64),
            lr,
            g,
        ).theta
    return model.objective({"theta": theta})


@pytest.mark.parametrize("rounds", [25, 100])
def test_quadratic_honest_loss_matches_sgd_theory(rounds):
    """Simulated E f(theta_T) - f* (2000 runs in one batch) equals the exact recursion within 4 SE."""
    model, eta = Quadratic(eigenvalues=(1.0, 2.0), theta_star=(1.0, -1.0), noise=2.0), 10.0
    gaps = _simulate_gap(model, rounds, runs=2000, clients=3, batch=4, eta=eta)
    se = gaps.std() / math.sqrt(gaps.numel())
    assert abs(gaps.mean().item() - _expected_gap(model, rounds, 3, 4, eta)) < 4 * se.item()


def test_quadratic_loss_decreases_like_one_over_t():
    """With gamma_t = 4/(m_sc (eta + t)) the exact expected gap is Theta(1/T): T * gap settles to a constant
    (its relative change between T and 2T shrinks as T grows)."""
    model, eta = Quadratic(eigenvalues=(1.0, 3.0), theta_star=(2.0, 1.0), noise=1.0), 5.0
    scaled = [t * _expected_gap(model, t, 3, 4, eta) for t in (100, 200, 400, 800, 1600)]
    changes = [abs(b / a - 1) for a, b in zip(scaled, scaled[1:])]
    assert all(later < earlier for earlier, later in zip(changes, changes[1:]))
    assert changes[-1] < 0.05
