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

Byzantine baselines (``byzantine={"player_1": "sign_flip", "player_3": "alie:tau=-1"}``): the named client slots
are scripted, non-strategic attackers (:class:`~fedgames.envs.fedsgd.byzantine.ByzantineClients`: sign flip,
Gaussian, ALIE, IPM), part of the environment rather than players. ``n_players`` counts every slot
(``player_0 .. player_{N-1}``); an attacker keeps its slot's index (and name) but leaves ``possible_agents``; when
active, its attack message replaces ``g + alpha xi`` and the server aggregates, charges and measures deviations as
for anyone. The utilities' "others" are the other players, so ``N`` in ``U_i`` counts players, not attackers.

A response-stage mechanism (``noisy_response:C=...``) perturbs the final model a player receives:
``theta^i = theta_{T+1} + sqrt(C) ||m_T^i - mbar_T|| eps_i`` for the players active in the last round (then
self-corrected; see :meth:`~fedgames.envs.fedsgd.game.FedSGDGame.play_round` for why only the last round), drawn
from a generator of its own so the server's trajectory is the same with and without it.
"""

from __future__ import annotations

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
from fedgames.envs.fedsgd.config import FedSGDConfig
from fedgames.envs.fedsgd.data import FederatedDataset, digits_federated, load_leaf_femnist, synthetic_femnist
from fedgames.envs.fedsgd.game import ClientData, FedSGDGame, RunState, resolve_device, response_seed
from fedgames.envs.fedsgd.models import FemnistCNN, Logistic, Quadratic
from fedgames.envs.health import Health
from fedgames.envs.policy import Policy, constant_policies
from fedgames.envs.protocol import Protocol
from fedgames.envs.spaces import action_box
from fedgames.validation import integer

MESSAGE_ENTRIES = 2**26
"""The default episode batch keeps one round's messages, ``(runs, active clients, parameters)``, within this many
values (256 MiB in float32). A round holds several tensors of that shape: a FEMNIST CNN run with 3 clients of
20 samples peaked at about 0.55 GB on a CPU, 7 times its messages. See :attr:`FedSGDEnv.default_batch_size`."""


def build_objective(
    config: FedSGDConfig, device: torch.device
) -> tuple[Quadratic | Logistic | FemnistCNN, ClientData, tuple[torch.Tensor, torch.Tensor] | None]:
    """The model, the clients' training data (one client per slot of ``config.n_players``) and the held-out data
    (``None`` for the quadratic, whose ``f`` is known): quadratic noise samples; scikit-learn's digits for
    ``logistic``; synthetic FEMNIST-like writers, or LEAF FEMNIST from ``data_dir``, for ``cnn``."""
    n, seed = config.n_players, config.data_seed
    if config.objective == "quadratic":
        quadratic = Quadratic()
        z, y = quadratic.sample(n * config.samples_per_client, torch.Generator().manual_seed(seed))
        writer = torch.arange(n).repeat_interleave(config.samples_per_client)
        return quadratic, ClientData.from_arrays(z, y, writer, n, device=device), None
    model: Logistic | FemnistCNN
    dataset: FederatedDataset
    if config.objective == "logistic":
        dataset = digits_federated(n_writers=n, partition="dirichlet", alpha=1.0, seed=seed)
        model = Logistic(64, 10)
    elif config.data_dir is not None:
        dataset = load_leaf_femnist(config.data_dir, max_writers=n)
        model = FemnistCNN()
        if dataset.n_writers < n:
            raise ValueError(
                f"data_dir: {config.data_dir!r} holds {dataset.n_writers} writers, fewer than n_players={n}"
            )
    else:
        dataset = synthetic_femnist(n_writers=n, seed=seed, mean_samples=config.samples_per_client)
        model = FemnistCNN()
    train, test = dataset.split(0.1, seed=seed)
    clients = ClientData.from_arrays(train.x, train.y, train.writer, train.n_writers, device=device)
    return model, clients, (torch.as_tensor(test.x, device=device), torch.as_tensor(test.y, device=device))


class FedSGDEnv(GameEnv):
    """PettingZoo parallel env of the FedSGD game; config as :class:`~fedgames.envs.fedsgd.config.FedSGDConfig`
    (``n_players`` client slots, of which the ``byzantine`` ones are scripted attackers, not agents).

    The simulator, the players, the horizon and the utility are the rules' (:attr:`rules`, a
    :class:`~fedgames.envs.fedsgd.batch.FedSGDRules` that the batched episodes share), read here as properties.
    """

    metadata = {"name": "fedsgd_v0", "render_modes": GameEnv.RENDER_MODES, "is_parallelizable": True}
    config: FedSGDConfig

    def __init__(self, render_mode: str | None = None, **config: Any) -> None:
        self.set_render_mode(render_mode)
        self.config = FedSGDConfig.from_kwargs(**config)
        c = self.config
        model, clients, test = build_objective(c, resolve_device(c.device))
        game = FedSGDGame(
            model,
            clients,
            active=c.active,
            lr=c.lr,
            lr_value=c.lr_value,
            strong_convexity=c.strong_convexity,
            eta=c.eta,
            radius=c.radius,
            noise_norm=c.noise_norm,
            weighting=c.weighting,
            batch_fraction=c.batch_fraction,
            alpha_max=c.alpha_max,
            byzantine=c.attackers,
            precision=c.precision,
            compile=c.compile,
        )
        self.rules = FedSGDRules(game, c, test)
        self.protocol: Protocol = game.protocol()
        self.possible_agents = [f"player_{i}" for i in c.players]
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
    def game(self) -> FedSGDGame:
        """The batched simulator (:class:`~fedgames.envs.fedsgd.game.FedSGDGame`) this env plays one run of."""
        return self.rules.game

    @property
    def rounds(self) -> int:  # type: ignore[override]  # GameEnv's class default; here the config's, read-only
        """``T``, the horizon (``config.rounds``)."""
        return self.rules.rounds

    @property
    def players(self) -> np.ndarray:
        """The client indices of the agents (the slots that are not attackers)."""
        return self.rules.players

    @property
    def lam(self) -> np.ndarray:
        """Each agent's ``lambda_i``."""
        return self.rules.lam

    @property
    def utility(self) -> str:
        """``default`` or ``shared_damage``."""
        return self.rules.utility

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The held-out data ``f`` is measured on (``None`` for the quadratic)."""
        return self.rules.test

    @property
    def device(self) -> torch.device:
        """Where the simulator's tensors live (``config.device`` resolved)."""
        return self.rules.device

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
        state = self._state
        self.check_running(state is not None)
        assert state is not None  # check_running raised otherwise
        protocol = self.active_protocol
        alpha = protocol.check_actions(stack_actions(actions, self.agents, 1))[0, :, 0]
        paid, rewards = checked_round(
            self.rules, state, self._health, alpha[None], protocol, self._generator, self._response_generator
        )
        rewards = rewards[0]
        done = self._health.count > 0 or state.round >= self.rounds
        assert state.last is not None  # set by the round just played
        active = set(state.last.active[0].tolist())
        infos = {
            a: {"round": state.round, "active": int(client) in active} | self._health.infos(0)
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
