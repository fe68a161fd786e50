"""``fedsgd_v0``: the multi-round FedSGD game of [H] §6 as a PettingZoo ``ParallelEnv`` (SPEC §2).

One step is one FedSGD round. Each player chooses its aggressiveness ``alpha_t^i in [0, alpha_max]``; the active
players (all, or ``active`` drawn uniformly each round) send ``g + alpha xi``, the server aggregates and steps.
Per-round rewards are minus the payments a mechanism charges; at the last round (or on divergence) the terminal
utility is added: default ``U_i = (1/(N-1)) sum_{j != i} f(theta^j) - lambda_i f(theta^i)`` with ``theta^i`` the
final model after i's self-correction, or ``"shared_damage"``: ``U_i = f(theta_{T+1})`` ([H] B.3). ``f`` is the
held-out loss (the quadratic's ``f - f*``). Observations: the round's progress ``t/T``, whether the player was
active in the last round, its honest gradient norm and squared deviation from the aggregate then (0 when
inactive). A run whose parameters stop being finite ends the episode at once with
``infos[agent]["diverged"] = True`` and no terminal utility (the model is unusable; its loss is not a number a
learner should chase).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from fedgames.envs.base import ProtocolEnv, stack_actions
from fedgames.envs.fedsgd.data import digits_federated, load_leaf_femnist, synthetic_femnist
from fedgames.envs.fedsgd.game import ClientData, FedSGDGame, RunState
from fedgames.envs.fedsgd.models import FemnistCNN, Logistic, Quadratic
from fedgames.envs.protocol import Protocol, broadcast
from fedgames.envs.spaces import action_box
from fedgames.validation import integer, per_player, real

OBJECTIVES = ("quadratic", "logistic", "cnn")
UTILITIES = ("default", "shared_damage")


def build_objective(objective: str, n_clients: int, samples_per_client: int, data_dir: str | None,
                    data_seed: int, device: torch.device
                    ) -> tuple[Any, ClientData, tuple[torch.Tensor, torch.Tensor] | None]:
    """The model, the clients' training data and the held-out data (``None`` for the quadratic, whose ``f`` is
    known): quadratic noise samples; scikit-learn's digits for ``logistic``; synthetic FEMNIST-like writers, or
    LEAF FEMNIST from ``data_dir``, for ``cnn``."""
    if objective == "quadratic":
        model = Quadratic()
        generator = torch.Generator().manual_seed(data_seed)
        z, y = model.sample(n_clients * samples_per_client, generator)
        writer = torch.arange(n_clients).repeat_interleave(samples_per_client)
        return model, ClientData.from_arrays(z, y, writer, n_clients, device=device), None
    if objective == "logistic":
        dataset = digits_federated(n_writers=n_clients, partition="dirichlet", alpha=1.0, seed=data_seed)
        model: Any = Logistic(64, 10)
    elif data_dir is not None:
        dataset = load_leaf_femnist(data_dir, max_writers=n_clients)
        model = FemnistCNN()
    else:
        dataset = synthetic_femnist(n_writers=n_clients, seed=data_seed, mean_samples=samples_per_client)
        model = FemnistCNN()
    train, test = dataset.split(0.1, seed=data_seed)
    clients = ClientData.from_arrays(train.x, train.y, train.writer, train.n_writers, device=device)
    return model, clients, (torch.as_tensor(test.x, device=device), torch.as_tensor(test.y, device=device))


class FedSGDEnv(ProtocolEnv):
    """PettingZoo parallel env of the FedSGD game.

    Args:
        objective: ``quadratic``, ``logistic`` or ``cnn``.
        n_clients: players ``N >= 2`` (writers).
        active: clients per round (``None``: all).
        rounds: ``T``.
        lr, lr_value, strong_convexity, eta: constant steps or ``4/(m_sc (eta + t))``.
        radius: projection radius around the initial model (``inf``: none).
        noise_norm: ``global`` or ``per_tensor``.
        weighting: ``size`` (dataset-size-weighted mean) or ``uniform``.
        batch_fraction: share of a client's data in its batch each round.
        alpha_max: top of the aggressiveness range.
        lam: ``lambda_i`` (one value or one per player) of the default utility.
        utility: ``default`` or ``shared_damage``.
        samples_per_client: quadratic samples per client / mean synthetic samples per writer.
        data_dir: a LEAF FEMNIST folder for ``cnn`` (default: the synthetic writers).
        data_seed: seeds the data (fixed across episodes).
        device: ``cpu`` or ``cuda``.
    """

    metadata = {"name": "fedsgd_v0", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(self, objective: str = "quadratic", n_clients: int = 4, active: int | None = None,
                 rounds: int = 20, lr: str = "constant", lr_value: float = 0.1, strong_convexity: float | None = None,
                 eta: float = 1.0, radius: float = math.inf, noise_norm: str = "global", weighting: str = "size",
                 batch_fraction: float = 0.9, alpha_max: float = 10.0, lam: float | list[float] = 1.0,
                 utility: str = "default", samples_per_client: int = 20, data_dir: str | None = None,
                 data_seed: int = 0, device: str = "cpu", render_mode: str | None = None) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if utility not in UTILITIES:
            raise ValueError(f"utility must be one of {UTILITIES}, got {utility!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        n_clients = integer("n_clients", n_clients, 2)
        self.rounds = integer("rounds", rounds, 1)
        self.utility, self.render_mode = utility, render_mode
        self.lam = per_player("lam", lam, n_clients)
        self.device = torch.device(device)
        model, clients, self.test = build_objective(objective, n_clients, integer(
            "samples_per_client", samples_per_client, 1), data_dir, integer("data_seed", data_seed, 0), self.device)
        self.game = FedSGDGame(model, clients, active=active, lr=lr, lr_value=lr_value,
                               strong_convexity=strong_convexity, eta=eta, radius=radius, noise_norm=noise_norm,
                               weighting=weighting, batch_fraction=batch_fraction,
                               alpha_max=real("alpha_max", alpha_max, strict=True))
        self.protocol: Protocol = self.game.protocol()
        self.possible_agents = [f"player_{i}" for i in range(clients.n_clients)]
        self.agents: list[str] = []
        self._action_spaces = {a: action_box(self.protocol) for a in self.possible_agents}
        low = np.zeros(4, dtype=np.float32)
        high = np.array([1.0, 1.0, np.inf, np.inf], dtype=np.float32)
        self._observation_spaces = {a: spaces.Box(low, high, dtype=np.float32) for a in self.possible_agents}
        self._generator = torch.Generator(device=self.device)
        self._state: RunState | None = None

    def validate_protocol(self, protocol: Protocol) -> None:
        if protocol.respond is not broadcast:
            raise ValueError("fedsgd_v0 does not play a response stage yet (noisy_response): the server broadcasts "
                             "its model unchanged")

    def _observations(self) -> dict[str, np.ndarray]:
        obs = np.zeros((len(self.possible_agents), 4), dtype=np.float32)
        assert self._state is not None
        obs[:, 0] = self._state.round / self.rounds
        last = self._state.last
        if last:
            active = last["active"][0].cpu().numpy()
            obs[active, 1] = 1.0
            obs[active, 2] = np.nan_to_num(last["gradient_norm"][0].cpu().numpy(), nan=0.0, posinf=0.0)
            obs[active, 3] = np.nan_to_num(last["sq_deviation"][0].cpu().numpy(), nan=0.0, posinf=0.0)
        return {a: obs[i] for i, a in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._generator.manual_seed(seed)
        self.agents = list(self.possible_agents)
        self._state = self.game.start(1, self._generator)
        return self._observations(), {a: {} for a in self.agents}

    def _loss(self, theta: torch.Tensor) -> float:
        if self.test is None:
            return float(self.game.model.objective({"theta": theta})[0])
        return float(self.game.evaluate(theta, *self.test)["loss"][0])

    def _utilities(self) -> np.ndarray:
        assert self._state is not None
        shared = self._loss(self._state.theta)
        n = len(self.possible_agents)
        if self.utility == "shared_damage":
            return np.full(n, shared)
        losses = np.full(n, shared)
        for i in self._state.last["active"][0].tolist() if self._state.last else []:
            losses[i] = self._loss(self.game.final_parameters(self._state, i))
        return (losses.sum() - losses) / (n - 1) - self.lam * losses

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents or self._state is None:
            raise RuntimeError("step() called on a finished episode: call reset() first")
        protocol = self.active_protocol
        alpha = protocol.check_actions(stack_actions(actions, self.agents, 1))[0, :, 0]
        before = self._state.payments.clone()  # type: ignore[union-attr]
        self.game.play_round(self._state, torch.as_tensor(alpha, device=self.device)[None], self._generator,
                             protocol)
        paid = (self._state.payments - before)[0].cpu().numpy()  # type: ignore[operator]
        diverged = bool(self._state.diverged[0])  # type: ignore[index]
        done = diverged or self._state.round >= self.rounds
        rewards = -paid
        if done and not diverged:
            rewards = rewards + self._utilities()
        active = set(self._state.last["active"][0].tolist())
        infos = {a: {"round": self._state.round, "active": i in active, "diverged": diverged}
                 for i, a in enumerate(self.agents)}
        if protocol.charges_payments:
            for i, a in enumerate(self.agents):
                infos[a]["payment"] = float(paid[i])
        observations = self._observations()
        agents = self.agents
        self.agents = [] if done else agents
        return (observations, {a: float(rewards[i]) for i, a in enumerate(agents)}, {a: done for a in agents},
                {a: False for a in agents}, infos)

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self._state is None:
            return None
        return f"fedsgd_v0 round {self._state.round}/{self.rounds}, loss {self._loss(self._state.theta):.4f}"

    def close(self) -> None:
        pass
