"""Single-agent best-response views of a fedgames game (SPEC §5, step 2).

One player learns; the others follow fixed :class:`~fedgames.agents.Policy` objects. Two views:

- :class:`BestResponseEnv`, a ``gymnasium.Env`` over the PettingZoo env (any fedgames parallel env, mechanisms
  included); it passes Gymnasium's and Stable-Baselines3's ``check_env``.
- :class:`BestResponseVecEnv`, an SB3 ``VecEnv`` that plays ``n_envs`` independent games per step through an
  :class:`~fedgames.envs.batch.EpisodeBatch` (the same stages the PettingZoo env runs): one step is one env step in
  every game — a whole episode of a one-round game, one round of ``fedsgd_v0`` — for thousands of episodes per
  second.

Both show the learner a symmetric action space ``[-1, 1]^k`` (what SB3 expects) and map it affinely onto the
player's action bounds.
"""

from __future__ import annotations

import itertools
import weakref
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from fedgames.agents.action_scaling import ActionScaler
from fedgames.agents.policy import Policy
from fedgames.envs.batch import EpisodeBatch, episode_batch


def _check_roles(env: ParallelEnv, player: str, others: Mapping[str, Policy]) -> list[str]:
    agents = list(env.possible_agents)
    if player not in agents:
        raise ValueError(f"player {player!r} is not an agent of this env; agents: {agents}")
    missing = [a for a in agents if a != player and a not in others]
    if missing:
        raise ValueError(f"others: no policy for {missing}")
    return agents


_VIEW_TOKENS = itertools.count()
_DRIVING_VIEW: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
"""Which view last reset each env (its token): kept here, not written into the env, which is not ours to change."""


class BestResponseEnv(gym.Env):
    """``player``'s view of a fedgames parallel env while ``others`` follow their policies.

    The view drives ``env``: two views of one env (e.g. ``DummyVecEnv([lambda: BestResponseEnv(env, ...)] * 2)``)
    would play each other's episodes, so a step after another view reset the env is a ``RuntimeError``.

    Args:
        env: a fedgames ``ParallelEnv`` (mechanism wrappers included).
        player: the learning agent, e.g. ``"player_0"``.
        others: a policy for every other agent.
    """

    metadata = {"render_modes": []}

    def __init__(self, env: ParallelEnv, player: str, others: Mapping[str, Policy]) -> None:
        super().__init__()
        self.env = env
        self.player = player
        self.others = dict(others)
        self.agents = _check_roles(env, player, others)
        self.scaler = ActionScaler(env.action_space(player))
        self.action_space = self.scaler.normalized
        self.observation_space = env.observation_space(player)
        self.render_mode = None
        self._observations: dict[str, np.ndarray] = {}
        self._policy_rng = np.random.default_rng()
        self._token = next(_VIEW_TOKENS)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._policy_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        self._observations, infos = self.env.reset(seed=seed, options=options)
        _DRIVING_VIEW[self.env.unwrapped] = self._token  # the episode this view plays; see step
        return self._observations[self.player], infos[self.player]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if _DRIVING_VIEW.get(self.env.unwrapped) != self._token:
            raise RuntimeError(
                "this BestResponseEnv's episode was replaced: another view of the same env reset it "
                "(give each view its own env, e.g. copy.deepcopy(env) in a vector env's factory, or use "
                "BestResponseVecEnv), or reset() was not called"
            )
        actions = {self.player: self.scaler.to_env(action).astype(np.float32)}
        for agent in self.env.agents:
            if agent != self.player:
                observation = np.asarray(self._observations[agent], dtype=np.float64)
                actions[agent] = self.others[agent].act(observation, self._policy_rng).astype(np.float32)
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        self._observations = observations
        return (
            observations[self.player],
            float(rewards[self.player]),
            bool(terminations[self.player]),
            bool(truncations[self.player]),
            infos[self.player],
        )


class BatchedGamesVecEnv(VecEnv):
    """The part of the SB3 ``VecEnv`` contract shared by the batched views: every sub-env is a slice of one
    :class:`~fedgames.envs.batch.EpisodeBatch` of ``n_games`` games held by this object, so attribute access and
    method calls go to it.

    One ``step`` is one env step in every game. The games of a batch end together: then all ``dones`` are True,
    ``infos[k]["terminal_observation"]`` holds the finished episode's last observation and the returned
    observations start a new batch; before that ``dones`` are False. Subclasses say how the sub-envs map onto the
    batch's players (:meth:`_view`, :meth:`_joint_actions`, :meth:`_rewards`).

    Numerical health (:mod:`~fedgames.envs.health`): a game that diverges gives rewards of 0 from the round it went
    bad; :attr:`games_played` and :attr:`games_diverged` count the finished games and the diverged ones among
    them, for training reports.
    """

    env: ParallelEnv
    n_games: int
    games_played: int = 0
    games_diverged: int = 0
    _rng: np.random.Generator
    _actions: np.ndarray | None
    _batch: EpisodeBatch | None
    _observations: np.ndarray | None

    @abstractmethod
    def _seed_generators(self, seed: int | None) -> None:
        """(Re)create the random generators from ``seed``."""

    @abstractmethod
    def _view(self, observations: np.ndarray) -> np.ndarray:
        """The sub-envs' float32 observations ``(num_envs, obs_dim)`` from the batch's ``(n_games, N, obs_dim)``."""

    @abstractmethod
    def _joint_actions(self, actions: np.ndarray) -> np.ndarray:
        """Everyone's actions ``(n_games, N, k)`` in the env's units, from the learner's ``[-1, 1]`` ones."""

    @abstractmethod
    def _rewards(self, rewards: np.ndarray) -> np.ndarray:
        """The sub-envs' rewards ``(num_envs,)`` from the batch's ``(n_games, N)``."""

    def _new_episodes(self) -> np.ndarray:
        """Start a new batch of games and return the sub-envs' observations."""
        self._batch = episode_batch(self.env, self.n_games, self._rng)
        self._observations = self._batch.reset()
        return self._view(self._observations)

    def reset(self) -> VecEnvObs:
        if self._seeds[0] is not None:
            self._seed_generators(self._seeds[0])
        self._reset_seeds()
        return self._new_episodes()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._batch is None or self._actions is None or self._observations is None:
            raise RuntimeError("call reset() and step_async() before step_wait()")
        step = self._batch.step(self._joint_actions(self._actions))
        rewards = self._rewards(step.rewards).astype(np.float32)
        observations = self._view(step.observations)
        if not step.done:
            self._observations = step.observations
            return observations, rewards, np.zeros(self.num_envs, dtype=bool), [{} for _ in range(self.num_envs)]
        infos = [{"terminal_observation": observations[k], "TimeLimit.truncated": False} for k in range(self.num_envs)]
        self.games_played += self.n_games
        self.games_diverged += 0 if step.health is None else step.health.count
        return self._new_episodes(), rewards, np.ones(self.num_envs, dtype=bool), infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set the attribute of the batch, which all sub-envs share (``indices`` cannot select among them)."""
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call the method once, on the batch every sub-env is a slice of (not once per index: ``reset`` would
        start the batch over as many times), and give each index the result."""
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


class BestResponseVecEnv(BatchedGamesVecEnv):
    """``n_envs`` independent games stepped at once, ``player`` learning, ``others`` fixed.

    Sub-env ``k`` is ``player`` in game ``k``. Works for every env :func:`~fedgames.envs.batch.episode_batch`
    knows: a one-round game ends at every step (all ``dones`` True), a multi-round game such as ``fedsgd_v0``
    after its ``rounds`` steps, the others acting each round on their own observations.

    Args:
        env: a fedgames ``ParallelEnv`` (mechanism wrappers included); its outermost protocol is played.
        player: the learning agent.
        others: a policy for every other agent.
        n_envs: games per step.
        seed: seeds the games and the others' policies (``VecEnv.seed`` re-seeds at the next reset).
    """

    def __init__(
        self, env: ParallelEnv, player: str, others: Mapping[str, Policy], n_envs: int = 1024, seed: int | None = None
    ) -> None:
        self.env = env
        self.player = player
        self.agents = _check_roles(env, player, others)
        self.index = self.agents.index(player)
        self.others = dict(others)
        self.scaler = ActionScaler(env.action_space(player))
        self.n_games = n_envs
        self.render_mode = None
        super().__init__(n_envs, env.observation_space(player), self.scaler.normalized)
        self._seed_generators(seed)
        self._actions = None
        self._batch = None
        self._observations = None

    def _seed_generators(self, seed: int | None) -> None:
        game_seed, policy_seed = np.random.SeedSequence(seed).spawn(2)
        self._rng = np.random.default_rng(game_seed)
        self._policy_rng = np.random.default_rng(policy_seed)

    def _view(self, observations: np.ndarray) -> np.ndarray:
        return observations[:, self.index].astype(np.float32)

    def _joint_actions(self, actions: np.ndarray) -> np.ndarray:
        assert self._observations is not None
        joint = np.empty((self.num_envs, len(self.agents)) + self.scaler.low.shape)
        for i, agent in enumerate(self.agents):
            if agent == self.player:
                joint[:, i] = self.scaler.to_env(actions.reshape(self.num_envs, -1))
            else:
                joint[:, i] = self.others[agent].act(self._observations[:, i], self._policy_rng)
        return joint

    def _rewards(self, rewards: np.ndarray) -> np.ndarray:
        return rewards[:, self.index]


def others_from_profile(policies: Mapping[str, Policy], player: str) -> dict[str, Policy]:
    """The policies of everyone but ``player``."""
    return {agent: policy for agent, policy in policies.items() if agent != player}


__all__: Sequence[str] = ["BestResponseEnv", "BestResponseVecEnv", "others_from_profile"]
