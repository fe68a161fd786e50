"""The FedSGD game's batched simulator: client data padding, participation, payment bookkeeping, divergence,
the final self-correction and learning on small real data."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

import fedgames
from fedgames.envs.fedsgd import cnn_kernels
from fedgames.envs.fedsgd.data import digits_federated, synthetic_femnist
from fedgames.envs.fedsgd.engine import _tf32_settings, cuda_kernel_flags, flatten
from fedgames.envs.fedsgd.game import ClientData, FedSGDGame, padded_width
from fedgames.envs.fedsgd.models import FemnistCNN, Logistic, Quadratic
from fedgames.mechanisms import RobustAggregation
from fedgames.mechanisms.side_payment import DeviationPayment


def quadratic_clients(n_clients: int = 6, per_client: int = 5, seed: int = 0) -> tuple[Quadratic, ClientData]:
    model = Quadratic(eigenvalues=(1.0, 2.0), theta_star=(1.0, -1.0), noise=1.0)
    g = torch.Generator().manual_seed(seed)
    z, y = model.sample(n_clients * per_client, g)
    writer = torch.arange(n_clients).repeat_interleave(per_client)
    return model, ClientData.from_arrays(z, y, writer, n_clients)


def test_client_data_padding_keeps_every_sample_once():
    x = torch.arange(7, dtype=torch.float32)[:, None]
    writer = torch.tensor([2, 0, 2, 1, 2, 0, 2])
    data = ClientData.from_arrays(x, torch.arange(7), writer, 4)
    assert data.count.tolist() == [2, 1, 4, 0]
    for client in range(4):
        n = int(data.count[client])
        assert sorted(data.y[client, :n].tolist()) == [i for i in range(7) if writer[i] == client]
        assert torch.equal(data.x[client, :n, 0], data.y[client, :n].float())


@pytest.mark.parametrize("full", [5, 96, 700])
def test_compiled_batch_widths_are_few_and_tight(full):
    """Every needed width gets one of at most 6 widths, no smaller than needed and (above full / 4) less than
    sqrt(2) times it plus rounding."""
    widths = {n: padded_width(n, full) for n in range(1, full + 1)}
    assert len(set(widths.values())) <= 6
    assert all(w >= n for n, w in widths.items())
    assert all(w <= math.sqrt(2) * n + 1 for n, w in widths.items() if n > full / 4)


@pytest.mark.parametrize("compile", [False, True])
def test_batches_are_uniform_draws_without_replacement(compile):
    """Each active client's batch holds ``ceil(batch_fraction * n)`` distinct samples of its own data, every sample
    equally likely (inclusion frequency within 4 binomial SE of ``size / n``); batches are as wide as the round's
    largest (eager) or the next of the fixed widths ``ceil(5 / sqrt(2)^k)`` (compiled: few shapes)."""
    counts = [3, 7, 10, 1, 5]
    writer = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    ids = torch.arange(len(writer), dtype=torch.float32)
    clients = ClientData.from_arrays(ids[:, None], torch.arange(len(writer)), writer, len(counts))
    game = FedSGDGame(
        Quadratic(eigenvalues=(1.0,), theta_star=(0.0,)), clients, active=3, batch_fraction=0.5, compile=compile
    )
    g = torch.Generator().manual_seed(0)
    draws, runs = 4000, 2
    included = torch.zeros(len(writer))
    appearances = torch.zeros(len(writer))
    for _ in range(draws // runs):
        active = torch.stack([torch.randperm(len(counts), generator=g)[:3] for _ in range(runs)])
        batch, sizes = game.draw_batches(active, g, runs)
        size = torch.ceil(0.5 * sizes)
        width = batch.weight.shape[-1]
        assert width == int(size.max()) if not compile else width in (5, 4, 3, 2) and width >= size.max()
        assert torch.equal(batch.weight.sum(-1), size)
        for r in range(runs):
            for c in range(3):
                picked = batch.y[r, c][batch.weight[r, c] > 0]
                assert len(set(picked.tolist())) == len(picked)
                assert (writer[picked] == active[r, c]).all()
                assert torch.equal(batch.x[r, c][batch.weight[r, c] > 0, 0], ids[picked])
                included[picked] += 1
                appearances[writer == active[r, c]] += 1
    p = torch.ceil(0.5 * torch.tensor(counts, dtype=torch.float32))[writer] / torch.tensor(counts)[writer]
    se = (p * (1 - p) / appearances).sqrt().clamp_min(1e-12)
    z = ((included / appearances - p) / se)[p < 1]
    assert z.abs().max() < 4, z


def payment_protocol(game: FedSGDGame, C: float, balanced: bool):
    """``game``'s protocol with the side-payment mechanism's rule as its payment stage."""
    return game.protocol().with_stage(None, payment_rules=(DeviationPayment(C, balanced),))


@pytest.mark.parametrize("active", [None, 3])
def test_participation_and_balanced_bookkeeping(active):
    """m distinct active clients per run and round; the payment stage charges the active clients alone (plain
    payments are positive there and nowhere else); balanced payments sum to zero over the clients of each run after
    every round. Payments leave the trajectory alone: the plain and the balanced runs stay identical."""
    model, clients = quadratic_clients()
    game = FedSGDGame(model, clients, active=active, lr="decaying", eta=5.0, noise_norm="global")
    plain, balanced = payment_protocol(game, 1.0, False), payment_protocol(game, 1.0, True)
    g, g_balanced = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    state, state_balanced = game.start(4, g), game.start(4, g_balanced)
    alpha = torch.rand(4, clients.n_clients, generator=torch.Generator().manual_seed(2)) + 0.1
    m = clients.n_clients if active is None else active
    for _ in range(10):
        before = state.payments.clone()
        chosen = game.play_round(state, alpha, g, plain)
        game.play_round(state_balanced, alpha, g_balanced, balanced)
        assert torch.equal(state.theta, state_balanced.theta)
        assert chosen.shape == (4, m)
        assert all(len(set(row.tolist())) == m for row in chosen)
        inside = torch.zeros_like(state.payments, dtype=torch.bool).scatter_(1, chosen, True)
        assert torch.equal((state.payments - before) > 0, inside)
        balance = state_balanced.payments.sum(1)
        # floating-point rounding bound of these sums: a few eps per term added (the plain total is what is moved)
        bound = 8 * clients.n_clients * torch.finfo(state.payments.dtype).eps * state.payments.sum(1)
        assert torch.all(balance.abs() <= bound)


@pytest.mark.parametrize("from_messages", [True, False])
@pytest.mark.parametrize("balanced", [True, False])
def test_side_payment_stage_runs_on_the_engine(balanced, from_messages):
    """The mean-estimation game's side-payment stage (the same function) charges the FedSGD clients on torch
    tensors what SPEC §2 says, written out from each round's squared deviations: an active client pays
    ``C ||m_t^i - mbar_t||^2`` and, balanced, receives ``1/(n_t - 1)`` of the other active clients' payments. The
    same whether the rule reads the messages or takes the round's deviations (``from_deviation``)."""
    model, clients = quadratic_clients()
    game = FedSGDGame(model, clients, active=3, noise_norm="global")
    C = 0.3
    rule = DeviationPayment(C, balanced)
    protocol = game.protocol().with_stage(None, payment_rules=((lambda m, a: rule(m, a)) if from_messages else rule,))
    g = torch.Generator().manual_seed(2)
    state = game.start(5, g)
    alpha = torch.rand(5, clients.n_clients, generator=g)
    expected, moved = torch.zeros_like(state.payments), torch.zeros(5)
    for _ in range(8):
        game.play_round(state, alpha, g, protocol)
        deviation = state.last.sq_deviation
        share = (deviation.sum(1, keepdim=True) - deviation) / (deviation.shape[1] - 1)
        expected.scatter_add_(1, state.last.active, C * (deviation - share if balanced else deviation))
        moved += C * deviation.sum(1)
    torch.testing.assert_close(state.payments, expected)
    if balanced:  # a few eps of rounding per term added
        assert torch.all(state.payments.sum(1).abs() <= 8 * clients.n_clients * torch.finfo(moved.dtype).eps * moved)


def test_robust_aggregation_stage_runs_on_the_engine():
    """The robust-aggregation mechanism's stage (numpy rules) aggregates the engine's torch messages: with the
    coordinate-wise median of three clients an attacker with a huge alpha cannot move the model far, unlike
    under the mean."""
    model, clients = quadratic_clients(n_clients=3)
    game = FedSGDGame(model, clients, lr_value=0.1, noise_norm="global", alpha_max=1000.0)
    mechanism = RobustAggregation(fedgames.make("mean_estimation_v0", n_players=3), rule="median")
    median = game.protocol().with_stage(mechanism, aggregate=mechanism.aggregate)
    alpha = torch.tensor([[1000.0, 0.0, 0.0]])
    finals = {}
    for name, protocol in (("mean", game.protocol()), ("median", median)):
        g = torch.Generator().manual_seed(0)
        state = game.start(1, g)
        for _ in range(20):
            game.play_round(state, alpha, g, protocol)
        finals[name] = float(model.objective({"theta": state.theta})[0])
    assert finals["median"] < 1.0 < finals["mean"]


def test_divergence_is_flagged_not_raised():
    model, clients = quadratic_clients()
    game = FedSGDGame(model, clients, lr="constant", lr_value=5.0)  # gamma * max eigenvalue = 10 > 2: diverges
    g = torch.Generator().manual_seed(0)
    state = game.start(3, g)
    alpha = torch.zeros(3, clients.n_clients)
    for _ in range(400):
        game.play_round(state, alpha, g)
    assert state.diverged.all()
    assert torch.isfinite(state.theta).all()


def test_final_self_correction_removes_own_last_noise():
    """theta^i = theta_{T+1} + gamma_T w_i alpha_T^i xi_T^i: with only player i noisy, its corrected model equals
    the one the server would have reached had i been honest (same data, same batches)."""
    model, clients = quadratic_clients(n_clients=4)
    game = FedSGDGame(model, clients, lr="constant", lr_value=0.1, noise_norm="global")
    noisy = torch.zeros(1, 4)
    noisy[0, 2] = 3.0
    finals = []
    for alpha in (noisy, torch.zeros(1, 4)):
        g = torch.Generator().manual_seed(5)
        state = game.start(1, g)
        for _ in range(3):
            game.play_round(state, alpha, g)
        finals.append((game.final_parameters(state, 2), game.final_parameters(state, 0), state.theta))
    (corrected, other, shared), (_, _, honest_last) = finals
    assert torch.equal(other, shared)  # player 0 was honest: nothing to remove
    assert not torch.allclose(shared, honest_last)
    # the last round's noise is removed, the earlier rounds' noise has moved theta and stays
    assert torch.norm(corrected - honest_last) < torch.norm(shared - honest_last)


def test_one_round_self_correction_recovers_the_honest_model():
    """With ``rounds=1`` the only noise player i sent is the last round's, so ``theta^i = theta_2 + gamma_1 w_i
    alpha_1^i xi_1^i`` is exactly the model an honest i would have produced (up to rounding): a correction scaled
    by any factor other than 1 leaves ``(k - 1) gamma_1 w_i alpha xi`` behind."""
    model, clients = quadratic_clients(n_clients=4)
    game = FedSGDGame(model, clients, lr="constant", lr_value=0.1, noise_norm="global")
    noisy = torch.zeros(1, 4)
    noisy[0, 2] = 3.0
    models = []
    for alpha in (noisy, torch.zeros(1, 4)):
        g = torch.Generator().manual_seed(5)
        state = game.start(1, g)
        game.play_round(state, alpha, g)
        models.append((game.final_parameters(state, 2), state.theta))
    (corrected, shared), (_, honest) = models
    assert torch.norm(shared - honest) > 1e-3  # the noise moved the shared model: the check can fail
    torch.testing.assert_close(corrected, honest, rtol=0.0, atol=1e-6)


def test_bad_alpha_is_rejected():
    model, clients = quadratic_clients()
    game = FedSGDGame(model, clients)
    state = game.start(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="alpha must have shape"):
        game.play_round(state, torch.zeros(2, 3), torch.Generator())
    with pytest.raises(ValueError, match="alpha is nan"):
        game.play_round(state, torch.full((2, clients.n_clients), math.nan), torch.Generator())
    with pytest.raises(ValueError, match=r"alpha=11 is outside its allowed range \[0, 10\]"):
        game.play_round(state, torch.full((2, clients.n_clients), 11.0), torch.Generator())
    with pytest.raises(ValueError, match="active"):
        FedSGDGame(model, clients, active=1)
    with pytest.raises(ValueError, match="noise_norm"):
        FedSGDGame(model, clients, noise_norm="per_layer")


def test_logistic_federated_learning_on_digits_beats_chance():
    """Honest FedSGD with 3 of 10 writers per round learns scikit-learn's digits well above chance (10%)."""
    data = digits_federated(n_writers=10, partition="dirichlet", alpha=1.0, seed=0)
    train, test = data.split(0.2, seed=0)
    clients = ClientData.from_arrays(train.x, train.y, train.writer, train.n_writers)
    game = FedSGDGame(Logistic(64, 10), clients, active=3, lr_value=0.5)
    g = torch.Generator().manual_seed(0)
    state = game.start(2, g)
    start = game.evaluate(state.theta, torch.as_tensor(test.x), torch.as_tensor(test.y))
    for _ in range(100):
        game.play_round(state, torch.zeros(2, clients.n_clients), g)
    end = game.evaluate(state.theta, torch.as_tensor(test.x), torch.as_tensor(test.y))
    assert torch.all(end["loss"] < start["loss"])
    # 10 classes, 360 test images: chance 0.1 with binomial SE 0.016; ask for far more than chance
    assert torch.all(end["accuracy"] > 0.5)


def test_start_uses_model_initialisation():
    model, clients = quadratic_clients()
    game = FedSGDGame(model, clients)
    state = game.start(2, torch.Generator().manual_seed(0))
    expected = flatten({k: v[None] for k, v in model.init(torch.Generator()).items()}, 1)
    assert torch.equal(state.theta, expected.repeat(2, 1))
    assert torch.equal(state.center, state.theta)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_cnn_round_in_bf16_and_tf32_follows_float32(device):
    """A CNN round with the gradients under bf16 autocast, or with TF32 products, moves the model in the float32
    round's direction (cosine above 0.99 with the same seed; TF32 is float32 on a CPU), and everything stays on the
    clients' device."""
    data = synthetic_femnist(n_writers=4, seed=0, mean_samples=6)
    clients = ClientData.from_arrays(data.x, data.y, data.writer, data.n_writers, device=device)
    steps = {}
    for precision in ("float32", "tf32", "bfloat16"):
        game = FedSGDGame(FemnistCNN(), clients, active=3, precision=precision)
        g = torch.Generator(device=device).manual_seed(0)
        state = game.start(2, g)
        start = state.theta.clone()
        game.play_round(state, torch.zeros(2, 4, device=device), g)
        assert state.theta.device.type == device and state.payments.device.type == device
        steps[precision] = state.theta - start
    for precision in ("tf32", "bfloat16"):
        cosine = torch.nn.functional.cosine_similarity(steps[precision], steps["float32"], dim=-1)
        assert cosine.min() > 0.99
    if device == "cpu":
        assert torch.equal(steps["tf32"], steps["float32"])


def _backend_flags() -> tuple:
    switches, _ = _tf32_settings(True)  # this PyTorch's TF32 switches of products and convolutions
    precision = tuple(getattr(owner, name) for owner, name in switches)
    return torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, precision


@pytest.mark.parametrize("device", ["cpu", "cuda"])  # the flags are set without a GPU too
@pytest.mark.parametrize("tf32", [False, True])
def test_cuda_kernel_flags_hold_only_inside(device, tf32):
    """For a CUDA device the gradient stage runs with cuDNN's autotuner and TF32 for products and convolutions as
    asked, and the global flags are as before afterwards (also after an error); for a CPU nothing is touched."""
    before = _backend_flags()
    with pytest.raises(RuntimeError, match="inside"):
        with cuda_kernel_flags(torch.device(device), tf32):
            inside = _backend_flags()
            raise RuntimeError("inside")
    _, precision = _tf32_settings(tf32)
    assert inside == ((True, False, (precision, precision)) if device == "cuda" else before)
    assert _backend_flags() == before


@pytest.mark.parametrize("device", DEVICES)
def test_game_tunes_the_cnn_kernels_on_cuda_only(device, monkeypatch):
    """The first CUDA round times the CNN's kernel variants under the round's autocast dtype (then remembered);
    a CPU round times nothing (the fixed variant: reproducible wall times and results)."""
    monkeypatch.setattr(cnn_kernels, "_TUNED", {})
    data = synthetic_femnist(n_writers=4, seed=0, mean_samples=6)
    clients = ClientData.from_arrays(data.x, data.y, data.writer, data.n_writers, device=device)
    game = FedSGDGame(FemnistCNN(), clients, active=3, precision="bfloat16")
    g = torch.Generator(device=device).manual_seed(0)
    state = game.start(2, g)
    game.play_round(state, torch.zeros(2, 4, device=device), g)
    expected = {(str(clients.x.device), torch.bfloat16, 2, 3)} if device == "cuda" else set()
    assert set(cnn_kernels._TUNED) == expected


def test_unknown_precision_is_rejected():
    model, clients = quadratic_clients()
    with pytest.raises(ValueError, match="precision must be one of"):
        FedSGDGame(model, clients, precision="float16")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("objective", ["quadratic", "cnn"])
def test_compiled_gradients_equal_eager(objective, device):
    """``compile=True`` (torch.compile of the vmap path for the quadratic, of the hand-written kernels for the CNN,
    and of the rest of the round) plays the same rounds as eager execution, in float64 to rounding: parameters,
    payment records and observed gradient norms."""
    if objective == "quadratic":
        model, clients = quadratic_clients()
        clients = ClientData(clients.x.to(device), clients.y.to(device), clients.count.to(device))
    else:
        data = synthetic_femnist(n_writers=4, seed=0, mean_samples=6)
        model = FemnistCNN()
        clients = ClientData.from_arrays(data.x, data.y, data.writer, data.n_writers, device=device)
    alpha = torch.linspace(0.0, 1.0, clients.n_clients, dtype=torch.float64, device=device).repeat(2, 1)
    records = []
    for compile in (False, True):
        game = FedSGDGame(model, clients, active=3, compile=compile)
        g = torch.Generator(device=device).manual_seed(0)
        state = game.start(2, g, dtype=torch.float64)
        for _ in range(2):
            game.play_round(state, alpha, g, payment_protocol(game, 1.0, False))
        records.append((state.theta, state.payments, state.last.sq_deviation, state.last.gradient_norm))
    for compiled, eager in zip(*records):
        torch.testing.assert_close(compiled, eager, rtol=1e-10, atol=1e-12)


def test_unknown_compile_mode_is_rejected():
    model, clients = quadratic_clients()
    with pytest.raises(ValueError, match="compile must be False, True or one of .*'max-autotune'"):
        FedSGDGame(model, clients, compile="fast")


def test_env_passes_precision_and_compile_to_the_game_and_pickles():
    assert fedgames.make("fedsgd_v0", device="cpu").unwrapped.game.precision == "tf32"  # the default
    env = fedgames.make("fedsgd_v0", device="cpu", precision="bfloat16", compile="default")
    assert env.unwrapped.game.precision == "bfloat16"
    assert env.unwrapped.game.compile == "default"
    copy = pickle.loads(pickle.dumps(env))  # the compiled routine is rebuilt, not pickled
    assert copy.unwrapped.game.compile == "default"
    copy.reset(seed=0)
    _, rewards, *_ = copy.step({agent: np.zeros(1, dtype=np.float32) for agent in copy.agents})
    assert set(rewards) == set(copy.possible_agents)


def test_common_random_numbers_pair_runs_across_alpha():
    """With ``common`` random numbers the runs of a batch share initialisation, clients, batches and noise
    directions: an honest run is the same whether or not a noisy run shares its batch, and both see the same
    active clients."""
    model, clients = quadratic_clients()
    game = FedSGDGame(model, clients, active=3, alpha_max=5.0)

    def play(alphas: list[float]):
        g = torch.Generator().manual_seed(5)
        state = game.start(len(alphas), g, common=True)
        alpha = torch.tensor(alphas)[:, None].expand(-1, clients.n_clients).contiguous()
        for _ in range(4):
            active = game.play_round(state, alpha, g)
        return state, active

    (pair, active), (alone, _) = play([0.0, 2.0]), play([0.0])
    assert torch.equal(pair.theta[0], alone.theta[0])
    assert torch.equal(active[0], active[1])
    assert not torch.allclose(pair.theta[1], pair.theta[0])
