"""Scripted clients of the participation game (SPEC §3)."""

from __future__ import annotations

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.envs.participation.game import OBSERVATION_FIELDS, participation_config, theory_setting
from fedgames.envs.participation.theory import (
    best_manipulation,
    participation_value,
    welfare_inverse,
    with_own_honesty,
)
from fedgames.envs.policy import Policy
from fedgames.validation import real


class MyopicParticipant(Policy):
    """Takes part when this round's expected reward covers its cost and outside option, expecting last round's
    participation to repeat: ``phi Q(x qbar) + w ybar_i - E[sanction] - c_i >= o_i``, with ``x`` the participating
    fraction it observed, ``qbar`` the clients' mean quality, ``ybar_i`` its own expected paid score and everybody
    manipulating with ``u`` (the mean-field retention map's client,
    :func:`~fedgames.envs.participation.theory.retention_map`).

    With ``u="best"`` it also chooses ``u`` each round, as the mean-field dynamics do
    (:func:`~fedgames.envs.participation.theory.mean_field_path`): the myopic best reply
    (:func:`~fedgames.envs.participation.theory.best_manipulation`) at the participation and the welfare it observed
    (the participants' total contribution ``z = Q^{-1}(W)``, its own counted honest:
    :func:`~fedgames.envs.participation.theory.with_own_honesty`), against the others playing what it chose last round
    (honesty before the first). It remembers, per episode, what it chose in the round it last acted in and the
    round before, so one policy can act for all clients at once (observations ``(B, N, obs)``) or for each in turn
    (``(B, obs)``, as PettingZoo loops and :func:`~fedgames.agents.rollout.simulate` call it), any number of times
    a round: give each batch of episodes played in lockstep its own policy.

    Args:
        env: a ``participation_v0`` env (mechanisms included: the payment's ``pi`` and the audits count).
        u: the manipulation intensity it plays and expects of the others, in ``[0, 1]``, or ``"best"``.
        player: the client it plays (its own ``q0`` and ``outside_option``). ``None``: any client, which needs clients
            that do not differ in them (then one policy can act for all at once).
    """

    def __init__(self, env: ParallelEnv, u: float | str = 0.0, player: str | None = None) -> None:
        if isinstance(u, str) and u != "best":
            raise ValueError(f"MyopicParticipant: u must be a number in [0, 1] or 'best', got {u!r}")
        self.u = u if u == "best" else real("u", u, 0.0, 1.0)
        # "best": (round it last acted in, per episode the u chosen the round before, and the u chosen then)
        self._memory: tuple[float, np.ndarray, np.ndarray | None] | None = None
        config = participation_config(env)
        try:
            self.setting = theory_setting(config, env.protocol)
        except ValueError as error:
            raise ValueError(
                f"MyopicParticipant decides by the mean-field theory, which does not cover this game: {error}"
            ) from None
        if player is None:
            if np.ptp(config.q0) > 0 or np.ptp(config.outside_option) > 0:
                raise ValueError(
                    "MyopicParticipant: the clients differ in q0 or outside_option; give each its own policy "
                    "(player='player_i')"
                )
            index = 0
        elif player in env.possible_agents:
            index = env.possible_agents.index(player)
        else:
            raise ValueError(f"MyopicParticipant: player must be one of {env.possible_agents}, got {player!r}")
        self.outside_option = float(config.outside_option[index])
        # its own expected paid score against the mean client's: (q0_i - qbar)(1 - gamma u) more
        self.quality_edge = self.setting.w * (float(config.q0[index]) - self.setting.q0)

    def _manipulation(self, observations: np.ndarray) -> np.ndarray:
        """``u`` for each observation (shape ``observations.shape[:-1]``): the fixed one, or the myopic best
        reply."""
        shape = observations.shape[:-1]
        if self.u != "best":
            return np.full(shape, float(self.u))
        field = {
            name: observations[..., OBSERVATION_FIELDS.index(name)] for name in ("round", "participation", "welfare")
        }
        before = self._others(float(field["round"].flat[0]), shape[:1])
        others = np.broadcast_to(before.reshape(before.shape + (1,) * (len(shape) - before.ndim)), shape)
        z = with_own_honesty(welfare_inverse(field["welfare"], self.setting), self.setting, others)
        cases, where = np.unique(
            np.stack([field["participation"], z, others], -1).reshape(-1, 3), axis=0, return_inverse=True
        )  # one per episode and round
        best = [
            best_manipulation(self.setting, x * self.setting.n_players, total, others=other)
            for x, total, other in cases
        ]
        played = np.array(best)[where.ravel()].reshape(shape)
        assert self._memory is not None
        self._memory = (self._memory[0], before, played.reshape(shape[:1] + (-1,))[..., 0] if shape else played)
        return played

    def _others(self, round_: float, episodes: tuple[int, ...]) -> np.ndarray:
        """Per episode, what the others play in this round: what was chosen in the round before (0 in the first
        round or for a new batch of episodes)."""
        if round_ == 0 or self._memory is None or self._memory[1].shape != episodes:
            self._memory = (round_, np.zeros(episodes), None)
        last, before, chosen = self._memory
        if round_ != last:  # the first call of a new round: last round's choices are the others' now
            before = chosen if chosen is not None else before
            self._memory = (round_, before, None)
        return before

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = self._manipulation(observations)
        x = observations[..., OBSERVATION_FIELDS.index("participation")]
        cost = observations[..., OBSERVATION_FIELDS.index("cost")]
        cases, where = np.unique(np.stack([x, u], -1).reshape(-1, 2), axis=0, return_inverse=True)
        value = np.array([participation_value(level, self.setting, manipulation) for level, manipulation in cases])
        value = value[where.ravel()].reshape(x.shape)
        edge = self.quality_edge * (1 - self.setting.gamma * u)
        participate = (value + edge - cost >= self.outside_option).astype(float)
        return np.stack([participate, u], axis=-1)
