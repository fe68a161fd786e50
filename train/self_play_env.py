"""Parameter sharing's vectorised env: one learner acts for every player of many games at once, each player
rewarded with its own reward (all players learning together with one shared model)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.agents.action_scaling import ActionScaler
from fedgames.train.best_response_env import BatchedGamesVecEnv


def common_space(env: ParallelEnv, kind: str) -> Any:
    """The one ``action_space`` / ``observation_space`` all players share (``ValueError`` if they differ)."""
    spaces_ = {agent: getattr(env, kind)(agent) for agent in env.possible_agents}
    first_agent, first = next(iter(spaces_.items()))
    for agent, space in spaces_.items():
        same = (
            space.shape == first.shape
            and space.dtype == first.dtype
            and np.array_equal(space.low, first.low)
            and np.array_equal(space.high, first.high)
        )
        if not same:
            raise ValueError(
                f"parameter sharing needs identical {kind}s; {agent}'s {space} differs from {first_agent}'s {first}"
            )
    return first


class SelfPlayVecEnv(BatchedGamesVecEnv):
    """``n_games`` independent games per step, every player of every game one sub-env.

    Sub-env ``g * N + i`` is player ``i`` of game ``g`` (game-major); ``num_envs = n_games * N``. One learner acts
    for all of them on normalised ``[-1, 1]^k`` actions (mapped onto the players' common action ``Box``) and each
    sub-env is rewarded with its own player's reward. One step is one env step in every game (a whole episode of a
    one-round game, one round of ``fedsgd_v0``); when the games end all ``dones`` are True, the returned
    observations start the next games and ``infos[k]["terminal_observation"]`` holds the finished one.

    Args:
        env: a fedgames ``ParallelEnv`` that :func:`~fedgames.envs.batch.episode_batch` knows (mechanism wrappers
            included; the outermost protocol is played). All players must have identical action and observation
            spaces.
        n_games: games per step.
        seed: seeds the games (``VecEnv.seed`` re-seeds at the next reset).
    """

    def __init__(self, env: ParallelEnv, n_games: int = 512, seed: int | None = None) -> None:
        if n_games < 1:
            raise ValueError(f"n_games must be >= 1, got {n_games}")
        self.env = env
        self.agents = list(env.possible_agents)
        self.n_players = len(self.agents)
        self.n_games = n_games
        self.scaler = ActionScaler(common_space(env, "action_space"))
        self.render_mode = None
        super().__init__(n_games * self.n_players, common_space(env, "observation_space"), self.scaler.normalized)
        self._seed_generators(seed)
        self._actions = None
        self._batch = None
        self._observations = None

    def _seed_generators(self, seed: int | None) -> None:
        (game_seed,) = np.random.SeedSequence(seed).spawn(1)
        self._rng = np.random.default_rng(game_seed)

    def _view(self, observations: np.ndarray) -> np.ndarray:
        return observations.reshape(self.num_envs, -1).astype(np.float32)

    def _joint_actions(self, actions: np.ndarray) -> np.ndarray:
        return self.scaler.to_env(actions.reshape(self.num_envs, -1)).reshape(self.n_games, self.n_players, -1)

    def _rewards(self, rewards: np.ndarray) -> np.ndarray:
        return rewards.reshape(self.num_envs)


__all__ = ["SelfPlayVecEnv", "common_space"]
