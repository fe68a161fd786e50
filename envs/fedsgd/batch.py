"""``fedsgd_v0``'s rules (:class:`FedSGDRules`: who plays, the horizon, the utility), its observations and rewards
for a batch of runs, and :class:`FedSGDBatch`: ``size`` episodes advanced together, one FedSGD round per step
(SPEC §2). The PettingZoo env holds one :class:`FedSGDRules` and computes its single run's observations and rewards
with these same functions on it, so the batched paths (Monte Carlo play, the best-response ``VecEnv``, the oracles)
play exactly the env's game.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedgames.envs.batch import BatchStep, EpisodeBatch
from fedgames.envs.fedsgd.config import FedSGDConfig
from fedgames.envs.fedsgd.game import FedSGDGame, RunState, response_seed
from fedgames.envs.health import Health
from fedgames.envs.protocol import Protocol

OBSERVATION_SIZE = 5
"""Round progress ``t/T``, active in the last round, then its honest gradient norm, squared deviation and loss."""


@dataclass(frozen=True, eq=False)
class FedSGDRules:
    """What ``fedsgd_v0`` plays on top of the simulator (SPEC §2): one object shared by the env and its batches.

    Attributes:
        game: the batched simulator (data, model, server, step sizes).
        config: the env's configuration (:class:`~fedgames.envs.fedsgd.config.FedSGDConfig`): the horizon, the
            players and their ``lambda_i``, the utility.
        test: the held-out data ``(x, y)`` that ``f`` is measured on; ``None`` for the quadratic, whose ``f - f*``
            is known.
    """

    game: FedSGDGame
    config: FedSGDConfig
    test: tuple[torch.Tensor, torch.Tensor] | None

    @property
    def rounds(self) -> int:
        """``T``, the horizon."""
        return self.config.rounds

    @property
    def players(self) -> np.ndarray:
        """``(N,)`` the client indices of the players (the client slots that are not scripted attackers)."""
        return self.config.players

    @property
    def lam(self) -> np.ndarray:
        """``(N,)`` each player's ``lambda_i`` of the default utility."""
        return self.config.lam

    @property
    def utility(self) -> str:
        """``"default"`` or ``"shared_damage"`` ([H] B.3)."""
        return self.config.utility

    @property
    def device(self) -> torch.device:
        return self.game.clients.x.device

    def client_alpha(self, alpha: np.ndarray) -> torch.Tensor:
        """The players' aggressiveness ``(R, players)`` as the simulator's ``(R, clients)`` (0 for attackers)."""
        full = np.zeros((alpha.shape[0], self.game.clients.n_clients))
        full[:, self.players] = alpha
        return torch.as_tensor(full, device=self.device)


def held_out_loss(
    game: FedSGDGame, test: tuple[torch.Tensor, torch.Tensor] | None, theta: torch.Tensor
) -> torch.Tensor:
    """``f`` of each run's parameters ``theta`` ``(R, P)``: the quadratic's ``f - f*`` (``test`` is ``None``), else
    the mean loss on the held-out ``test`` data; ``(R,)``."""
    if test is None:
        return game.model.objective({"theta": theta})
    return game.evaluate(theta, *test)["loss"]


def observations(state: RunState, rounds: int, n_players: int) -> np.ndarray:
    """``(R, N, 5)`` float32: ``t/T``, whether the player was active in the last round, then its honest gradient
    norm, its squared deviation ``||m^i - mbar||^2`` and the broadcast model's loss on its batch (0 when inactive,
    and for a non-finite value)."""
    runs = state.theta.shape[0]
    obs = np.zeros((runs, n_players, OBSERVATION_SIZE), dtype=np.float32)
    obs[..., 0] = state.round / rounds
    last = state.last
    if last is not None:
        active = last.active.cpu().numpy()
        rows = np.arange(runs)[:, None]
        obs[rows, active, 1] = 1.0
        for column, value in ((2, last.gradient_norm), (3, last.sq_deviation), (4, last.loss)):
            obs[rows, active, column] = np.nan_to_num(value.cpu().numpy(), nan=0.0, posinf=0.0)
    return obs


def utilities(rules: FedSGDRules, state: RunState) -> np.ndarray:
    """``(R, N)`` terminal utilities of the ``N`` players (``rules.players``, the clients that are not scripted
    attackers; SPEC §2 "Rewards"): ``U_i = (1/(N-1)) sum_{j != i} f(theta^j) - lambda_i f(theta^i)``, ``theta^i``
    the final model player i received, after its self-correction (only players active in the last round have one),
    or ``U_i = f(theta_{T+1})`` under ``utility="shared_damage"`` ([H] B.3)."""
    game = rules.game
    shared = held_out_loss(game, rules.test, state.theta).double().cpu().numpy()
    n = len(rules.players)
    losses = np.repeat(shared[:, None], n, axis=1)
    if rules.utility == "shared_damage":
        return losses
    if state.last is not None:
        active = state.last.active
        column = {int(client): c for c, client in enumerate(rules.players)}
        for player in (p for p in torch.unique(active).tolist() if p in column):
            hit = (active == player).any(1).cpu().numpy()
            own = held_out_loss(game, rules.test, game.final_parameters(state, player)).double().cpu().numpy()
            losses[hit, column[player]] = own[hit]
    return (losses.sum(1, keepdims=True) - losses) / (n - 1) - rules.lam * losses


def play_round(
    rules: FedSGDRules,
    state: RunState,
    alpha: np.ndarray,
    protocol: Protocol,
    generator: torch.Generator,
    response_generator: torch.Generator,
) -> np.ndarray:
    """Advance every run of ``state`` one round of the game under ``protocol``, the players playing ``alpha``
    ``(R, players)``; return what the payment stage charged each player this round, ``(R, players)``."""
    before = state.payments.clone()
    rules.game.play_round(state, rules.client_alpha(alpha), generator, protocol, response_generator)
    return (state.payments - before)[:, rules.players].cpu().numpy()


def round_rewards(rules: FedSGDRules, state: RunState, paid: np.ndarray) -> np.ndarray:
    """``(R, N)`` rewards of the round just played: minus the payments ``paid``, plus the terminal utility after
    the last round for the runs that did not diverge (a diverged run's model is unusable: no utility)."""
    rewards = 0.0 - paid  # not -0.0 for a player who paid nothing
    if state.round >= rules.rounds:
        diverged = state.diverged.cpu().numpy()
        rewards = rewards + np.where(diverged[:, None], 0.0, utilities(rules, state))
    return rewards


def checked_round(
    rules: FedSGDRules,
    state: RunState,
    health: Health,
    alpha: np.ndarray,
    protocol: Protocol,
    generator: torch.Generator,
    response_generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Play one round (:func:`play_round`) and check its numerical health (:mod:`~fedgames.envs.health`): the
    parameters (the simulator's own flag), the active clients' losses, the payments and the rewards, in that order.
    A run that went bad is frozen by the simulator from the next round on (``state.diverged``), gets no terminal
    utility, and its rewards and payments are 0 from this round on. Returns the payments and the rewards,
    ``(R, players)`` each."""
    paid = play_round(rules, state, alpha, protocol, generator, response_generator)
    t, last = state.round, state.last
    assert last is not None  # a round was just played
    health.flag(t, "parameters", state.diverged.cpu().numpy())
    health.check(t, loss=last.loss, payment=paid)
    state.diverged = state.diverged | torch.as_tensor(health.diverged, device=state.theta.device)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged run's utility: flagged, then silenced
        rewards = round_rewards(rules, state, paid)
    health.check(t, reward=rewards)
    silenced_paid, silenced_rewards = health.silence(paid), health.silence(rewards)
    assert silenced_paid is not None and silenced_rewards is not None  # silence keeps an array an array
    return silenced_paid, silenced_rewards


class FedSGDBatch(EpisodeBatch):
    """``size`` episodes of ``fedsgd_v0`` advanced together; one step is one round of every run.

    Runs the env's rules (its rounds, payments, observations and rewards) on ``size`` runs of :class:`FedSGDGame`. All
    episodes last ``rounds`` steps: a run that diverges is frozen by the simulator, charged nothing more and
    given no terminal utility, so its return equals the env's (which ends such an episode at once).
    ``reset`` seeds the simulator's torch generator from ``rng``, and the response stage's from that seed as the
    env does.
    """

    def __init__(self, rules: FedSGDRules, protocol: Protocol, size: int, rng: np.random.Generator) -> None:
        super().__init__(protocol, size, rng)
        self.rules = rules
        self._generator = torch.Generator(device=rules.device)
        self._response_generator = torch.Generator(device=rules.device)
        self._state: RunState | None = None
        self._health = Health.start(size)

    def reset(self) -> np.ndarray:
        self._health = Health.start(self.size)
        seed = int(self.rng.integers(2**63 - 1))
        self._generator.manual_seed(seed)
        self._response_generator.manual_seed(response_seed(seed))
        self._state = self.rules.game.start(self.size, self._generator)
        return self._observations()

    def _observations(self) -> np.ndarray:
        assert self._state is not None
        rules = self.rules
        return observations(self._state, rules.rounds, rules.game.clients.n_clients)[:, rules.players]

    def step(self, actions: np.ndarray) -> BatchStep:
        state = self._state
        if state is None or state.round >= self.rules.rounds:
            raise RuntimeError("call reset() before step(), and again after the last round")
        alpha = self.protocol.check_actions(actions)[..., 0]
        paid, rewards = checked_round(
            self.rules, state, self._health, alpha, self.protocol, self._generator, self._response_generator
        )
        return BatchStep(
            self._observations(),
            rewards,
            state.round >= self.rules.rounds,
            payments=paid if self.protocol.charges_payments else None,
            health=self._health,
        )


__all__ = [
    "FedSGDBatch",
    "FedSGDRules",
    "checked_round",
    "held_out_loss",
    "observations",
    "play_round",
    "round_rewards",
    "utilities",
]
