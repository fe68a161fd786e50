"""The learners of a multi-agent training run: their models, and how one round trains them.

- :class:`IndependentLearners`: one model per player; round r trains each against frozen snapshots of the others'
  round r - 1 policies (simultaneous, "Jacobi" updates); round 0 plays against ``init``.
- :class:`SharedLearner`: parameter sharing; one model acts for every player of ``n_games`` games at once
  (:class:`~fedgames.train.self_play_env.SelfPlayVecEnv`).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pettingzoo import ParallelEnv
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.vec_env import VecEnv
from tqdm.auto import tqdm

from fedgames.agents.learned import SB3Policy
from fedgames.agents.policy import Policy
from fedgames.envs.batch import horizon
from fedgames.train.best_response_env import BestResponseVecEnv, others_from_profile
from fedgames.train.checkpoint import read_model_state, restore_model
from fedgames.train.oracles import ALGORITHMS, default_algo_kwargs, new_model
from fedgames.train.self_play_env import SelfPlayVecEnv
from fedgames.train.summary import sub_seed


def resolved_algo_kwargs(
    algo: str, n_envs: int, overrides: Mapping[str, Any] | None, env: ParallelEnv
) -> dict[str, Any]:
    """:func:`fedgames.train.oracles.default_algo_kwargs` for ``n_envs`` sub-envs and ``env``'s horizon, updated
    with ``overrides``."""
    if algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}")
    return default_algo_kwargs(algo, n_envs, horizon(env)) | dict(overrides or {})


def learn(model: BaseAlgorithm, venv: VecEnv, steps: int, seed: int, callback: MaybeCallback = None) -> None:
    """Train ``model`` on ``venv`` for ``steps`` more timesteps, re-seeded so that a resumed round repeats exactly
    (SB3's ``set_random_seed`` also seeds the global python, numpy and torch generators, as model construction
    does), with SB3's ``callback``."""
    model.set_env(venv)  # also discards the last observation: the round starts from fresh episodes
    model.set_random_seed(seed)
    model.learn(steps, reset_num_timesteps=False, callback=callback)


def frozen(policy: Policy) -> Policy:
    """A snapshot of a learned policy that further training of its model does not change."""
    if isinstance(policy, SB3Policy):
        snapshot = copy.copy(policy)
        snapshot.model = copy.deepcopy(policy.model.policy)  # the network alone predicts like the model
        return snapshot
    return policy


class Learners(ABC):
    """The models of one training run (keyed by file-name stem), how a round trains them and when to stop."""

    def __init__(
        self, env: ParallelEnv, algo: str, algo_kwargs: dict[str, Any], seed: int, callback: MaybeCallback = None
    ) -> None:
        self.env, self.algo, self.algo_kwargs, self.seed = env, algo, algo_kwargs, seed
        self.callback = callback  # SB3's learn(callback=...), passed to every training call of every model
        self.models: dict[str, BaseAlgorithm] = {}

    def _new_model(self, venv: VecEnv, seed: int) -> BaseAlgorithm:
        return new_model(self.algo, venv, seed, self.algo_kwargs)

    def load(self, files: Mapping[str, Path]) -> None:
        """Rebuild the models from their checkpoint files (:mod:`fedgames.train.checkpoint`: tensors only, nothing
        unpickled); ``ValueError`` naming a file that is missing, unreadable or of another model."""
        states = {key: read_model_state(path) for key, path in files.items()}  # every file checked before building
        self.models = {}
        for key, state in states.items():
            model = self._new_model(self.model_venv(key), 0)
            restore_model(model, state, files[key])
            self.models[key] = model

    @property
    @abstractmethod
    def keys(self) -> list[str]:
        """The model keys (file-name stems): the agents, or ``"shared"``."""

    @abstractmethod
    def model_venv(self, key: str) -> VecEnv:
        """A vectorised env of the kind model ``key`` trains on (to build a model; each round sets its own)."""

    @property
    def timesteps(self) -> int:
        """Episodes trained on so far, all models together."""
        return sum(model.num_timesteps for model in self.models.values())

    def check_resume(self, completed_rounds: int) -> None:
        """Raise ``ValueError`` when a checkpoint already went beyond what this call asks for (by default, never:
        a learner whose budget only grows has nothing to check)."""
        return None

    @abstractmethod
    def finished(self, completed_rounds: int) -> bool:
        """Whether the run has reached its budget."""

    @abstractmethod
    def progress_bar(self, enabled: bool) -> tqdm:
        """A tqdm bar over the budget."""

    @abstractmethod
    def progress(self, completed_rounds: int) -> int:
        """Where the bar stands."""

    @abstractmethod
    def policies(self) -> dict[str, SB3Policy]:
        """The current policy of every agent."""

    @abstractmethod
    def train_round(self, round_index: int) -> None:
        """Train round ``round_index`` (0-based)."""


class IndependentLearners(Learners):
    """One model per agent; a round trains each against the others' previous-round snapshots."""

    def __init__(
        self,
        env: ParallelEnv,
        algo: str,
        algo_kwargs: dict[str, Any],
        seed: int,
        rounds: int,
        steps: int,
        n_envs: int,
        init: Mapping[str, Policy],
        callback: MaybeCallback = None,
    ) -> None:
        super().__init__(env, algo, algo_kwargs, seed, callback)
        self.rounds, self.steps, self.n_envs, self.init = rounds, steps, n_envs, dict(init)

    @property
    def keys(self) -> list[str]:
        return list(self.env.possible_agents)

    def model_venv(self, key: str) -> VecEnv:
        return BestResponseVecEnv(self.env, key, others_from_profile(self.init, key), self.n_envs, seed=0)

    def check_resume(self, completed_rounds: int) -> None:
        if completed_rounds > self.rounds:
            raise ValueError(f"the checkpoint already holds {completed_rounds} rounds, more than rounds={self.rounds}")

    def finished(self, completed_rounds: int) -> bool:
        return completed_rounds >= self.rounds

    def progress_bar(self, enabled: bool) -> tqdm:
        return tqdm(total=self.rounds, desc="independent learners", unit="round", disable=not enabled)

    def progress(self, completed_rounds: int) -> int:
        return completed_rounds

    def policies(self) -> dict[str, SB3Policy]:
        return {a: SB3Policy(self.models[a], self.env.action_space(a)) for a in self.env.possible_agents}

    def train_round(self, round_index: int) -> None:
        previous = {a: frozen(p) for a, p in self.policies().items()} if self.models else self.init
        for i, agent in enumerate(self.env.possible_agents):
            seed = sub_seed(self.seed, round_index, i)
            venv = BestResponseVecEnv(self.env, agent, others_from_profile(previous, agent), self.n_envs, seed=seed)
            if agent not in self.models:
                self.models[agent] = self._new_model(venv, seed)
            learn(self.models[agent], venv, self.steps, seed, self.callback)


class SharedLearner(Learners):
    """One model for every player; a round trains it up to the next multiple of ``every`` timesteps."""

    KEY = "shared"

    def __init__(
        self,
        env: ParallelEnv,
        algo: str,
        algo_kwargs: dict[str, Any],
        seed: int,
        total: int,
        n_games: int,
        every: int,
        callback: MaybeCallback = None,
    ) -> None:
        super().__init__(env, algo, algo_kwargs, seed, callback)
        self.total, self.n_games, self.every = total, n_games, every

    @property
    def keys(self) -> list[str]:
        return [self.KEY]

    def model_venv(self, key: str) -> VecEnv:
        return SelfPlayVecEnv(self.env, self.n_games, seed=0)

    def finished(self, completed_rounds: int) -> bool:
        return self.timesteps >= self.total

    def progress_bar(self, enabled: bool) -> tqdm:
        return tqdm(total=self.total, desc="shared learner", unit="step", disable=not enabled)

    def progress(self, completed_rounds: int) -> int:
        return min(self.timesteps, self.total)

    def policies(self) -> dict[str, SB3Policy]:
        model = self.models[self.KEY]
        return {a: SB3Policy(model, self.env.action_space(a)) for a in self.env.possible_agents}

    def train_round(self, round_index: int) -> None:
        seed = sub_seed(self.seed, round_index)
        venv = SelfPlayVecEnv(self.env, self.n_games, seed=seed)
        if self.KEY not in self.models:
            self.models[self.KEY] = self._new_model(venv, seed)
        done = self.timesteps
        target = min((done // self.every + 1) * self.every, self.total)
        learn(self.models[self.KEY], venv, target - done, seed, self.callback)
