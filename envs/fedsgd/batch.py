"""``fedsgd_v0``'s observations and rewards for a batch of runs, and :class:`FedSGDBatch`: ``size`` episodes of the
env advanced together, one FedSGD round per step (SPEC §2). The PettingZoo env computes its single run's
observations and rewards with these same functions, so the batched paths (Monte Carlo play, the best-response
``VecEnv``, the oracles) play exactly the env's game.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from fedgames.envs.batch import BatchStep, EpisodeBatch
from fedgames.envs.fedsgd.game import FedSGDGame, RunState, response_seed
from fedgames.envs.health import Health
from fedgames.envs.protocol import Protocol

if TYPE_CHECKING:
    from fedgames.envs.fedsgd.fedsgd import FedSGDEnv

OBSERVATION_SIZE = 5
"""Round progress ``t/T``, active in the last round, then its honest gradient norm, squared deviation and loss."""


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
    if state.last:
        active = state.last["active"].cpu().numpy()
        rows = np.arange(runs)[:, None]
        obs[rows, active, 1] = 1.0
        for column, key in ((2, "gradient_norm"), (3, "sq_deviation"), (4, "loss")):
            obs[rows, active, column] = np.nan_to_num(state.last[key].cpu().numpy(), nan=0.0, posinf=0.0)
    return obs


def utilities(env: FedSGDEnv, state: RunState) -> np.ndarray:
    """``(R, N)`` terminal utilities of the ``N`` players (``env.players``, the clients that are not scripted
    attackers; SPEC §2 "Rewards"): ``U_i = (1/(N-1)) sum_{j != i} f(theta^j) - lambda_i f(theta^i)``, ``theta^i``
    the final model player i received, after its self-correction (only players active in the last round have one),
    or ``U_i = f(theta_{T+1})`` under ``utility="shared_damage"`` ([H] B.3)."""
    game = env.game
    shared = held_out_loss(game, env.test, state.theta).double().cpu().numpy()
    n = len(env.players)
    losses = np.repeat(shared[:, None], n, axis=1)
    if env.utility == "shared_damage":
        return losses
    if state.last:
        active = state.last["active"]
        column = {int(client): c for c, client in enumerate(env.players)}
        for player in (p for p in torch.unique(active).tolist() if p in column):
            hit = (active == player).any(1).cpu().numpy()
            own = held_out_loss(game, env.test, game.final_parameters(state, player)).double().cpu().numpy()
            losses[hit, column[player]] = own[hit]
    return (losses.sum(1, keepdims=True) - losses) / (n - 1) - env.lam * losses


def play_round(
    env: FedSGDEnv,
    state: RunState,
    alpha: np.ndarray,
    protocol: Protocol,
    generator: torch.Generator,
    response_generator: torch.Generator,
) -> np.ndarray:
    """Advance every run of ``state`` one round of ``env``'s game under ``protocol``, the players playing ``alpha``
    ``(R, players)``; return what the payment stage charged each player this round, ``(R, players)``."""
    before = state.payments.clone()  # type: ignore[union-attr]
    env.game.play_round(state, env.client_alpha(alpha), generator, protocol, response_generator)
    return (state.payments - before)[:, env.players].cpu().numpy()  # type: ignore[operator]


def round_rewards(env: FedSGDEnv, state: RunState, paid: np.ndarray) -> np.ndarray:
    """``(R, N)`` rewards of the round just played: minus the payments ``paid``, plus the terminal utility after
    the last round for the runs that did not diverge (a diverged run's model is unusable: no utility)."""
    rewards = 0.0 - paid  # not -0.0 for a player who paid nothing
    if state.round >= env.rounds:
        diverged = state.diverged.cpu().numpy()  # type: ignore[union-attr]
        rewards = rewards + np.where(diverged[:, None], 0.0, utilities(env, state))
    return rewards


def checked_round(
    env: FedSGDEnv,
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
    paid = play_round(env, state, alpha, protocol, generator, response_generator)
    t = state.round
    health.flag(t, "parameters", state.diverged.cpu().numpy())  # type: ignore[union-attr]
    health.check(t, loss=state.last["loss"], payment=paid)
    state.diverged = state.diverged | torch.as_tensor(health.diverged, device=state.theta.device)  # type: ignore[operator]
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged run's utility: flagged, then silenced
        rewards = round_rewards(env, state, paid)
    health.check(t, reward=rewards)
    return health.silence(paid), health.silence(rewards)  # type: ignore[return-value]


class FedSGDBatch(EpisodeBatch):
    """``size`` episodes of ``fedsgd_v0`` advanced together; one step is one round of every run.

    Runs the env's own rounds, payments, observations and rewards on ``size`` runs of :class:`FedSGDGame`. All
    episodes last ``rounds`` steps: a run that diverges is frozen by the simulator, charged nothing more and
    given no terminal utility, so its return equals the env's (which ends such an episode at once).
    ``reset`` seeds the simulator's torch generator from ``rng``, and the response stage's from that seed as the
    env does.
    """

    def __init__(self, env: FedSGDEnv, protocol: Protocol, size: int, rng: np.random.Generator) -> None:
        super().__init__(protocol, size, rng)
        self.env = env
        self._generator = torch.Generator(device=env.device)
        self._response_generator = torch.Generator(device=env.device)
        self._state: RunState | None = None
        self._health = Health.start(size)

    def reset(self) -> np.ndarray:
        self._health = Health.start(self.size)
        seed = int(self.rng.integers(2**63 - 1))
        self._generator.manual_seed(seed)
        self._response_generator.manual_seed(response_seed(seed))
        self._state = self.env.game.start(self.size, self._generator)
        return self._observations()

    def _observations(self) -> np.ndarray:
        assert self._state is not None
        return observations(self._state, self.env.rounds, self.env.game.clients.n_clients)[:, self.env.players]

    def step(self, actions: np.ndarray) -> BatchStep:
        state = self._state
        if state is None or state.round >= self.env.rounds:
            raise RuntimeError("call reset() before step(), and again after the last round")
        alpha = self.protocol.check_actions(actions)[..., 0]
        paid, rewards = checked_round(
            self.env, state, self._health, alpha, self.protocol, self._generator, self._response_generator
        )
        return BatchStep(
            self._observations(),
            rewards,
            state.round >= self.env.rounds,
            payments=paid if self.protocol.charges_payments else None,
            health=self._health,
        )


__all__ = ["FedSGDBatch", "checked_round", "held_out_loss", "observations", "play_round", "round_rewards", "utilities"]
