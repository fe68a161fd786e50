"""``participation_v0``: the participation / exit game (SPEC §3) as a PettingZoo ``ParallelEnv``.

``rounds`` steps per episode. Each round every player acts with ``[participate, u]`` (``Box(2)`` in ``[0, 1]^2``):
it takes part when ``participate >= 0.5`` (unless it exited for good, with ``rejoin=False``), with manipulation
intensity ``u``. It observes :data:`~fedgames.envs.participation.game.OBSERVATION_FIELDS` (its own cost, last
round's participation and welfare, its own paid score and payment, whether it was audited, challenged and
sanctioned); a ``Box`` rather than a ``Dict`` action so that SB3's learners, the grid oracle and the batched
stages read one flat array. Rewards per round: ``phi W - c_i - payment_i``
for a participant (the payment is minus the score payment ``w y_i``, plus any sanction), ``o_i`` otherwise.
``infos[agent]``: ``participated``, ``welfare``, ``participation`` (the fraction taking part), ``metric`` (the
reported model metric, the aggregate of the participants' paid scores: their mean, or under ``robust_aggregation``
its rule's; NaN when nobody took part), ``paid_score``, ``payment``, ``challenged`` (whether the server saw its
challenge score), ``audited``, ``caught`` and ``sanction`` (what it was charged for being caught), and
``monitor`` (the server-side monitor's warning signals so far, SPEC §9:
:meth:`~fedgames.envs.participation.monitor.Monitor.report`). Mechanisms:
``challenge_mixing``, ``audit`` (``policy=uniform|risk|test``), ``side_payment`` (on the paid score's deviation
from the metric), ``robust_aggregation`` (of the paid scores; rules that work for any number of participants),
``bounded_attack:component=u``. A non-finite payment or reward ends the episode with ``diverged`` true and
``divergence`` naming the quantity and round (:mod:`~fedgames.envs.health`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from gymnasium import spaces

from fedgames.envs.base import stack_actions
from fedgames.envs.batch import BatchStep, EpisodeBatch
from fedgames.envs.contract import GameEnv
from fedgames.envs.health import Health
from fedgames.envs.participation.game import (
    OBSERVATION_FIELDS,
    Outcome,
    ParticipationConfig,
    ParticipationGame,
    RoundState,
    World,
)
from fedgames.envs.participation.monitor import Monitor, game_monitor
from fedgames.envs.participation.theory import symmetric_manipulation
from fedgames.envs.policy import Policy, constant_policies
from fedgames.envs.protocol import Protocol
from fedgames.envs.spaces import action_box
from fedgames.validation import integer


class ParticipationEnv(GameEnv):
    """PettingZoo parallel env of the participation game; config as :class:`ParticipationConfig`."""

    metadata = {"name": "participation_v0", "render_modes": GameEnv.RENDER_MODES, "is_parallelizable": True}
    profile_names = ("honest", "theory")
    profile_keys = ("participate", "u")
    profile_defaults = {"participate": 1.0}

    def __init__(self, render_mode: str | None = None, **config: Any) -> None:
        self.set_render_mode(render_mode)
        self.config = ParticipationConfig.from_kwargs(**config)
        self.game = ParticipationGame(self.config)
        self.rounds = self.game.rounds
        self.protocol: Protocol = self.game.protocol()
        self.possible_agents = [f"player_{i}" for i in range(self.game.n_players)]
        self.agents: list[str] = []
        low = np.array([0, 0, 0, 0, 0, 0, -np.inf, -np.inf, 0, 0, 0], dtype=np.float32)
        high = np.array([1, np.inf, 1, 1, 1, 1, np.inf, np.inf, 1, 1, 1], dtype=np.float32)
        assert len(low) == len(OBSERVATION_FIELDS)
        self.observation_spaces = {a: spaces.Box(low, high, dtype=np.float32) for a in self.possible_agents}
        self.action_spaces = {a: action_box(self.protocol) for a in self.possible_agents}
        n = self.game.n_players
        state_high = np.concatenate([[1.0], np.full(n, np.inf), np.ones(2 * n + 2)]).astype(np.float32)
        self.state_space = spaces.Box(np.zeros(3 + 3 * n, dtype=np.float32), state_high, dtype=np.float32)
        self._rng = np.random.default_rng()
        self._world: World | None = None
        self._state: RoundState | None = None
        self._last: Outcome | None = None
        self._monitor: Monitor | None = None  # SPEC §9, built at the first step under the protocol in force
        self._health = Health.start(1)

    def validate_protocol(self, protocol: Protocol) -> None:
        self.game.validate_protocol(protocol)

    def honest_policies(self, protocol: Protocol) -> dict[str, Policy]:
        """Taking part with ``u = 0`` every round."""
        return constant_policies(np.tile([1.0, 0.0], (len(self.possible_agents), 1)), self.possible_agents)

    def named_policies(self, name: str, protocol: Protocol) -> dict[str, Policy]:
        """``honest``, or ``theory``: taking part with the manipulation that is a best reply to itself at full
        participation (:func:`~fedgames.envs.participation.theory.symmetric_manipulation`), every round."""
        if name != "theory":
            return super().named_policies(name, protocol)
        u = symmetric_manipulation(self.game.setting(protocol))
        return self.policies_from_values({"participate": 1.0, "u": u})

    def episode_batch(self, protocol: Protocol, size: int, rng: np.random.Generator) -> ParticipationBatch:
        """``size`` episodes under ``protocol``, advanced together (:mod:`fedgames.envs.batch`)."""
        return ParticipationBatch(self.game, protocol, size, rng)

    def _observations(self) -> dict[str, np.ndarray]:
        assert self._world is not None and self._state is not None
        obs = self.game.observe(self._world, self._state)[0].astype(np.float32)
        return {a: obs[i] for i, a in enumerate(self.possible_agents)}

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(integer("seed", seed, 0))  # Gymnasium: seeds are >= 0
        self.agents = list(self.possible_agents)
        self._world = self.game.sample_world(self._rng, 1)
        self._state = self.game.start(1)
        self._last = None
        self._monitor = None
        self._health = Health.start(1)
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        self.check_running(self._state is not None)
        assert self._world is not None and self._state is not None
        protocol = self.active_protocol
        checked = protocol.check_actions(stack_actions(actions, self.agents, 2), self.agents)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is flagged by the health check
            outcome = self.game.play_round(protocol, self._world, self._state, checked, self._rng)
        outcome = screened(outcome, self._state, self._health)
        self._last = outcome
        if self._monitor is None:
            self._monitor = game_monitor(self.game.config, protocol)
        self._monitor.update(
            outcome.present,
            outcome.messages[..., 1],
            outcome.messages[..., 2],
            outcome.aggregate[:, 0],
            outcome.messages[..., 6] > 0,
        )
        monitor = self._monitor.report()  # the server's warning signals so far (SPEC §9)
        metric = float(outcome.aggregate[0, 0])
        agents = self.agents
        infos = {
            a: {
                "participated": bool(outcome.present[0, i]),
                "welfare": float(outcome.welfare[0]),
                "participation": float(self._state.participation[0]),
                "metric": metric,
                "paid_score": float(self._state.paid_score[0, i]),
                "payment": float(self._state.payment[0, i]),
                "challenged": bool(self._state.challenged[0, i]),
                "audited": bool(outcome.audited[0, i]),
                "caught": bool(outcome.caught[0, i]),
                "sanction": float(outcome.sanction[0, i]),
                "monitor": monitor,
            }
            | self._health.infos(0)
            for i, a in enumerate(agents)
        }
        done = self._state.round >= self.rounds or self._health.count > 0
        self.agents = [] if done else agents
        return (
            self._observations(),
            {a: float(outcome.rewards[0, i]) + 0.0 for i, a in enumerate(agents)},
            {a: done for a in agents},
            {a: False for a in agents},
            infos,
        )

    def state(self) -> np.ndarray:
        """The global state (PettingZoo's ``state()``, for centralised critics): ``[round / rounds, c_1 .. c_N,
        participated_1 .. participated_N, exited_1 .. exited_N, participation, welfare]``, every client's private
        cost included."""
        if self._world is None or self._state is None:
            raise RuntimeError("state() called before reset()")
        st = self._state
        return np.concatenate(
            [
                [st.round / self.rounds],
                self._world.cost[0],
                st.participated[0],
                st.exited[0],
                st.participation,
                st.welfare,
            ]
        ).astype(np.float32)

    def render_text(self) -> str:
        if self._last is None or self._state is None:
            return "participation_v0: no round played yet"
        return (
            f"participation_v0 round {self._state.round}/{self.rounds}: participation "
            f"{self._state.participation[0]:.2f}, welfare {self._last.welfare[0]:.4f}"
        )

    def close(self) -> None:
        pass


class ParticipationBatch(EpisodeBatch):
    """``size`` episodes of ``participation_v0`` advanced together; one step is one round of every episode."""

    def __init__(self, game: ParticipationGame, protocol: Protocol, size: int, rng: np.random.Generator) -> None:
        super().__init__(protocol, size, rng)
        self.game = game
        self._world: World | None = None
        self._state: RoundState | None = None
        self._health = Health.start(size)

    def reset(self) -> np.ndarray:
        self._world = self.game.sample_world(self.rng, self.size)
        self._state = self.game.start(self.size)
        self._health = Health.start(self.size)
        return self.game.observe(self._world, self._state)

    def step(self, actions: np.ndarray) -> BatchStep:
        if self._world is None or self._state is None or self._state.round >= self.game.rounds:
            raise RuntimeError("call reset() before step(), and again after the last round")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is flagged by the health check
            outcome = self.game.play_round(
                self.protocol, self._world, self._state, self.protocol.check_actions(actions), self.rng
            )
        outcome = screened(outcome, self._state, self._health)
        return BatchStep(
            self.game.observe(self._world, self._state),
            outcome.rewards,
            self._state.round >= self.game.rounds,
            outcome,
            outcome.payments,
            self._health,
        )


FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest payment the float32 observations hold (``state.payment`` is observed): beyond it, a payment that
float64 still holds (a side payment's ``C`` times a squared score deviation, both large) has left the precision
the players see it in."""


def screened(outcome: Outcome, state: RoundState, health: Health) -> Outcome:
    """``outcome`` of the round ``state`` has just played, checked for numerical health
    (:mod:`~fedgames.envs.health`): ``health`` records the episodes whose rewards are not finite or whose payments
    are not finite in the float32 observations (beyond :data:`FLOAT32_MAX`); their rewards and payments (the
    outcome's and the observed ``state.payment``) are 0 from that round on."""
    with np.errstate(invalid="ignore"):  # a NaN payment compares False: flagged like an infinite one
        observed = np.where(np.abs(outcome.payments) <= FLOAT32_MAX, outcome.payments, np.inf)
    health.check(state.round, payment=observed, reward=outcome.rewards)
    if not health.count:
        return outcome
    rewards, payments = health.silence(outcome.rewards), health.silence(outcome.payments)
    assert rewards is not None and payments is not None  # silence keeps an array an array
    state.payment = health.silence(state.payment)
    return replace(outcome, rewards=rewards, payments=payments)


__all__ = ["ParticipationBatch", "ParticipationEnv", "screened"]
