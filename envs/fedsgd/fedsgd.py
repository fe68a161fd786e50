"""``fedsgd_v0``: the multi-round FedSGD game of [H] §6 as a PettingZoo ``ParallelEnv`` (SPEC §2).

One step is one FedSGD round. Each player chooses its aggressiveness ``alpha_t^i in [0, alpha_max]``; the active
players (all, or ``active`` drawn uniformly each round) send ``g + alpha xi``, the server aggregates and steps.
Per-round rewards are minus the payments a mechanism charges; at the last round (or on divergence) the terminal
utility is added: default ``U_i = (1/(N-1)) sum_{j != i} f(theta^j) - lambda_i f(theta^i)`` with ``theta^i`` the
final model after i's self-correction, or ``"shared_damage"``: ``U_i = f(theta_{T+1})`` ([H] B.3). ``f`` is the
held-out loss (the quadratic's ``f - f*``). Observations: the round's progress ``t/T``, whether the player was
active in the last round, and then its honest gradient norm, its squared deviation from the aggregate and the
broadcast model's loss on its batch (0 when inactive). A run whose parameters, losses, payments or rewards stop
being finite ends the episode at once with ``infos[agent]["diverged"] = True``, ``infos[agent]["divergence"]``
naming the first quantity and round that went bad (:mod:`~fedgames.envs.health`), rewards of 0 and no terminal
utility (the model is unusable; its loss is not a number a learner should chase).

Byzantine baselines (``byzantine={"player_1": "sign_flip", "player_3": "alie:tau=-1"}``): the named clients are
scripted, non-strategic attackers (:class:`~fedgames.envs.fedsgd.byzantine.ByzantineClients`: sign flip, Gaussian,
ALIE, IPM), part of the environment rather than players. They keep their client index (and name) but leave
``possible_agents``; when active, their attack message replaces ``g + alpha xi`` and the server aggregates, charges
and measures deviations as for anyone. The utilities' "others" are the other players, so ``N`` in ``U_i`` counts
players, not attackers.

A response-stage mechanism (``noisy_response:C=...``) perturbs the final model a player receives:
``theta^i = theta_{T+1} + sqrt(C) ||m_T^i - mbar_T|| eps_i`` for the players active in the last round (then
self-corrected; see :meth:`~fedgames.envs.fedsgd.game.FedSGDGame.play_round` for why only the last round), drawn
from a generator of its own so the server's trajectory is the same with and without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from fedgames.envs.base import stack_actions
from fedgames.envs.batch import BATCH_SIZE
from fedgames.envs.contract import GameEnv
from fedgames.envs.fedsgd.batch import (
    OBSERVATION_SIZE,
    FedSGDBatch,
    FedSGDRules,
    checked_round,
    held_out_loss,
    observations,
)
from fedgames.envs.fedsgd.byzantine import AttackSpec
from fedgames.envs.fedsgd.config import FedSGDConfig
from fedgames.envs.fedsgd.data import digits_federated, load_leaf_femnist, synthetic_femnist
from fedgames.envs.fedsgd.game import ClientData, FedSGDGame, RunState, resolve_device, response_seed
from fedgames.envs.fedsgd.models import FemnistCNN, Logistic, Quadratic
from fedgames.envs.health import Health
from fedgames.envs.policy import Policy, constant_policies
from fedgames.envs.protocol import Protocol
from fedgames.envs.spaces import action_box
from fedgames.errors import did_you_mean
from fedgames.validation import integer, per_player, real

OBJECTIVES = ("quadratic", "logistic", "cnn")
UTILITIES = ("default", "shared_damage")
MESSAGE_ENTRIES = 2**26
"""The default episode batch keeps one round's messages, ``(runs, active clients, parameters)``, within this many
values (256 MiB in float32). A round holds several tensors of that shape: a FEMNIST CNN run with 3 clients of
20 samples peaked at about 0.55 GB on a CPU, 7 times its messages. See :attr:`FedSGDEnv.default_batch_size`."""


def build_objective(
    objective: str, n_clients: int, samples_per_client: int, data_dir: str | None, data_seed: int, device: torch.device
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


class FedSGDEnv(GameEnv):
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
        lam: ``lambda_i`` (one value or one per player, attackers excluded) of the default utility.
        utility: ``default`` or ``shared_damage``.
        samples_per_client: quadratic samples per client / mean synthetic samples per writer.
        data_dir: a LEAF FEMNIST folder for ``cnn`` (default: the synthetic writers).
        data_seed: seeds the data (fixed across episodes).
        device: ``auto`` (CUDA when available, else the CPU), ``cpu`` or ``cuda``.
        byzantine: ``{"player_i": attack}``: clients that are scripted Byzantine attackers instead of players
            (``sign_flip``, ``gaussian:sigma=...``, ``alie`` / ``little_is_enough``, ``ipm:tau=...`` /
            ``inner_product_manipulation``, or ``(name, params)``; see
            :class:`~fedgames.envs.fedsgd.byzantine.ByzantineClients`). At least one client stays a player, two
            under the default utility.
        precision: ``tf32`` (the default: TF32 tensor cores on CUDA, float32 on a CPU), ``float32`` (IEEE) or
            ``bfloat16`` (the client gradients under bf16 autocast: a GPU's fast path); see
            :data:`~fedgames.envs.fedsgd.game.PRECISIONS`.
        compile: ``torch.compile`` the client gradients and the rest of the round (``True`` or a mode such as
            ``"max-autotune"``): fused GPU kernels after a one-off compilation, the same result to rounding.
    """

    metadata = {"name": "fedsgd_v0", "render_modes": GameEnv.RENDER_MODES, "is_parallelizable": True}

    def __init__(
        self,
        objective: str = "quadratic",
        n_clients: int = 4,
        active: int | None = None,
        rounds: int = 20,
        lr: str = "constant",
        lr_value: float = 0.1,
        strong_convexity: float | None = None,
        eta: float = 1.0,
        radius: float = math.inf,
        noise_norm: str = "global",
        weighting: str = "size",
        batch_fraction: float = 0.9,
        alpha_max: float = 10.0,
        lam: float | list[float] = 1.0,
        utility: str = "default",
        samples_per_client: int = 20,
        data_dir: str | None = None,
        data_seed: int = 0,
        device: str = "auto",
        render_mode: str | None = None,
        byzantine: Mapping[str, AttackSpec] | None = None,
        precision: str = "tf32",
        compile: bool | str = False,
    ) -> None:
        self.config = FedSGDConfig(**{k: v for k, v in locals().items() if k in FedSGDConfig.names()})
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if utility not in UTILITIES:
            raise ValueError(f"utility must be one of {UTILITIES}, got {utility!r}")
        self.set_render_mode(render_mode)
        n_clients = integer("n_clients", n_clients, 2)
        self.rounds = integer("rounds", rounds, 1)
        self.utility = utility
        attackers = byzantine_clients(byzantine, n_clients)
        self.players = np.array([i for i in range(n_clients) if i not in attackers])
        fewest = 2 if utility == "default" else 1  # the default utility compares a player with the others
        if len(self.players) < fewest:
            raise ValueError(
                f"byzantine: at most {n_clients - fewest} of the {n_clients} clients may be attackers "
                f"under utility={utility!r}, got {len(attackers)}"
            )
        self.lam = per_player("lam", lam, len(self.players))
        self.device = resolve_device(device)
        model, clients, self.test = build_objective(
            objective,
            n_clients,
            integer("samples_per_client", samples_per_client, 1),
            data_dir,
            integer("data_seed", data_seed, 0),
            self.device,
        )
        self.game = FedSGDGame(
            model,
            clients,
            active=active,
            lr=lr,
            lr_value=lr_value,
            strong_convexity=strong_convexity,
            eta=eta,
            radius=radius,
            noise_norm=noise_norm,
            weighting=weighting,
            batch_fraction=batch_fraction,
            alpha_max=real("alpha_max", alpha_max, strict=True),
            byzantine=attackers,
            precision=precision,
            compile=compile,
        )
        self.rules = FedSGDRules(self.game, self.rounds, self.players, self.lam, self.utility, self.test)
        self.protocol: Protocol = self.game.protocol()
        self.possible_agents = [f"player_{i}" for i in self.players]
        self.agents: list[str] = []
        self.action_spaces = {a: action_box(self.protocol) for a in self.possible_agents}
        low = np.zeros(OBSERVATION_SIZE, dtype=np.float32)
        high = np.array([1.0, 1.0] + [np.inf] * (OBSERVATION_SIZE - 2), dtype=np.float32)
        self.observation_spaces = {a: spaces.Box(low, high, dtype=np.float32) for a in self.possible_agents}
        self._generator = torch.Generator(device=self.device)
        self._response_generator = torch.Generator(device=self.device)
        self._seed(None)
        self._state: RunState | None = None
        self._health = Health.start(1)

    @property
    def messages_per_round(self) -> int:
        return self.game.active

    def honest_policies(self, protocol: Protocol) -> dict[str, Policy]:
        """``alpha = 0`` in every round: send the true gradient."""
        return constant_policies(np.zeros((len(self.possible_agents), 1)), self.possible_agents)

    def named_policies(self, name: str, protocol: Protocol) -> dict[str, Policy]:
        if name == "theory":
            raise ValueError(
                "theory: fedsgd_v0 has no closed-form equilibrium (Thm 6.1 only bounds best responses); give "
                "honest, FILE.json or 'alpha=A'"
            )
        return super().named_policies(name, protocol)

    def player_traits(self) -> np.ndarray:
        """Each player's ``lambda_i`` (attackers are not players)."""
        return self.lam[:, None]

    @property
    def default_batch_size(self) -> int:
        """Episodes (runs) the batched tools play at once unless given a ``batch_size``: as many as keep a round's
        messages within :data:`MESSAGE_ENTRIES` values, between 1 and :data:`~fedgames.envs.batch.BATCH_SIZE`.
        The FEMNIST CNN (6.6M parameters) with 3 active clients: 3; the quadratic: 65,536."""
        per_run = self.game.active * sum(p.numel() for p in self.game.like.values())
        return max(1, min(BATCH_SIZE, MESSAGE_ENTRIES // per_run))

    def _observations(self) -> dict[str, np.ndarray]:
        assert self._state is not None
        obs = observations(self._state, self.rounds, self.game.clients.n_clients)[0, self.players]
        return {a: obs[i] for i, a in enumerate(self.possible_agents)}

    def episode_batch(self, protocol: Protocol, size: int, rng: np.random.Generator) -> FedSGDBatch:
        """``size`` episodes of this env under ``protocol``, advanced together (:mod:`fedgames.envs.batch`)."""
        return FedSGDBatch(self.rules, protocol, size, rng)

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._seed(seed)
        self.agents = list(self.possible_agents)
        self._state = self.game.start(1, self._generator)
        self._health = Health.start(1)
        return self._observations(), {a: {} for a in self.agents}

    def _seed(self, seed: int | None) -> None:
        """Seed the rounds' and the response's generators with ``seed`` (an integer in ``[0, 2**64)``), or, for
        ``None``, with fresh OS entropy (Gymnasium's rule: an env never seeded differs from run to run)."""
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        seed = integer("seed", seed, 0, 2**64 - 1)  # checked before either generator changes
        self._generator.manual_seed(seed)
        self._response_generator.manual_seed(response_seed(seed))

    def _loss(self, theta: torch.Tensor) -> float:
        return float(held_out_loss(self.game, self.test, theta)[0])

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        self.check_running(self._state is not None)
        protocol = self.active_protocol
        alpha = protocol.check_actions(stack_actions(actions, self.agents, 1))[0, :, 0]
        paid, rewards = checked_round(
            self.rules, self._state, self._health, alpha[None], protocol, self._generator, self._response_generator
        )
        rewards = rewards[0]
        done = self._health.count > 0 or self._state.round >= self.rounds
        active = set(self._state.last.active[0].tolist())  # type: ignore[union-attr]
        infos = {
            a: {"round": self._state.round, "active": int(client) in active} | self._health.infos(0)
            for a, client in zip(self.agents, self.players)
        }
        if protocol.charges_payments:
            for i, a in enumerate(self.agents):
                infos[a]["payment"] = float(paid[0, i])
        observations = self._observations()
        agents = self.agents
        self.agents = [] if done else agents
        return (
            observations,
            {a: float(rewards[i]) for i, a in enumerate(agents)},
            {a: done for a in agents},
            {a: False for a in agents},
            infos,
        )

    def render_text(self) -> str:
        if self._state is None:
            return "fedsgd_v0: no round played yet"
        return f"fedsgd_v0 round {self._state.round}/{self.rounds}, loss {self._loss(self._state.theta):.4f}"

    def close(self) -> None:
        pass


def byzantine_clients(byzantine: Mapping[str, AttackSpec] | None, n_clients: int) -> dict[int, AttackSpec]:
    """``{"player_i": attack}`` -> ``{i: attack}``; names that are not clients raise ``ValueError``."""
    if byzantine is None:
        return {}
    if not isinstance(byzantine, Mapping):
        raise ValueError(f"byzantine must be a mapping {{'player_i': attack}}, got {byzantine!r}")
    names = {f"player_{i}": i for i in range(n_clients)}
    for name in byzantine:
        if name not in names:
            raise ValueError(
                f"byzantine: unknown client {name!r}{did_you_mean(str(name), names)} "
                f"(clients: player_0 .. player_{n_clients - 1})"
            )
    return {names[name]: attack for name, attack in byzantine.items()}
