"""Multi-agent training on fedgames games: independent learners and parameter sharing.

Two ways to let every player learn at once (the learners then play the game against each other, and where they
settle is compared with the theory's equilibria, SPEC §1 and §5):

- :func:`train_independent`: one Stable-Baselines3 model per player. In each round every player trains its own
  model for ``steps_per_round`` episodes on a :class:`~fedgames.train.BestResponseVecEnv` against the *other*
  players' policies as they were at the end of the previous round (simultaneous, "Jacobi" updates); round 0
  plays against ``init`` (the honest profile by default). Models persist across rounds.
- :func:`train_shared`: parameter sharing. One model acts for every player of ``n_games`` games at once through
  :class:`SelfPlayVecEnv`, each player rewarded with its own reward.

Both record, after every round (independent) or every ``checkpoint_every`` steps (shared), a summary of each
player's strategy (mean of every action component on a fixed, seeded evaluation batch, the bias norm, the mean
reward) and, given a ``checkpoint_dir``, save the models and a ``state.json`` from which a second call with the
same arguments resumes (completed rounds are not redone). A resumed run reproduces the uninterrupted one exactly
for PPO (each round re-seeds the model and the env, and ``model.save`` keeps the parameters and the optimiser);
SAC/TD3 replay buffers are not saved, so for them a resumed run refills its buffer and differs slightly.

"Steps" and "timesteps" here are SB3 timesteps of one player (of one learner, for independent training): in a
one-round game each vectorised step is one whole episode in every sub-env, so they count episodes; in a multi-round
game (``fedsgd_v0``) they count rounds, and the strategy summaries add each component's mean at the last round.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pettingzoo import ParallelEnv
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.vec_env import VecEnv
from tqdm.auto import tqdm

from fedgames.agents.action_scaling import ActionScaler
from fedgames.agents.learned import SB3Policy
from fedgames.agents.policy import Policy
from fedgames.agents.rollout import recorded_play
from fedgames.agents.strategy import summarize_steps
from fedgames.envs.batch import horizon, learner_games, resolve_batch_size
from fedgames.envs.contract import game_of
from fedgames.files import write_atomic
from fedgames.train.best_response_env import BatchedGamesVecEnv, BestResponseVecEnv, others_from_profile
from fedgames.train.oracles import ALGORITHMS, default_algo_kwargs, new_model
from fedgames.validation import integer

STATE_FILE = "state.json"
STATE_FORMAT = 1


# ---------------------------------------------------------------------------------------------------------------
# Parameter sharing: every player of every game is a sub-env
# ---------------------------------------------------------------------------------------------------------------


def _common_space(env: ParallelEnv, kind: str) -> Any:
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
        self.scaler = ActionScaler(_common_space(env, "action_space"))
        self.render_mode = None
        super().__init__(n_games * self.n_players, _common_space(env, "observation_space"), self.scaler.normalized)
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


# ---------------------------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TrainingResult:
    """What a multi-agent training run produced.

    Attributes:
        mode: ``"independent"`` or ``"shared"``.
        policies: the final policy of every agent (under parameter sharing they wrap one model).
        history: one entry per round (independent) or checkpoint (shared): ``{"round", "timesteps",
            "players": {agent: {"alpha": .., "beta": .., "b_1": .., "bias_norm": .., "reward": ..}}}`` — means
            over a fixed evaluation batch; ``timesteps`` counts the episodes all learners have trained on so far.
        config: the run's configuration (what ``state.json`` checks on resume).
        checkpoint_dir: where the run was checkpointed, if anywhere.
        models: the SB3 models behind the policies (keyed by agent, or ``"shared"``), to go on training them.
    """

    mode: str
    policies: dict[str, SB3Policy]
    history: list[dict[str, Any]]
    config: dict[str, Any]
    checkpoint_dir: str | None = None
    models: dict[str, BaseAlgorithm] = field(default_factory=dict, repr=False)

    def series(self, agent: str, key: str) -> np.ndarray:
        """One summary value (``"alpha"``, ``"reward"`` ...) of ``agent`` across the history."""
        return np.array([entry["players"][agent][key] for entry in self.history])

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "config": self.config,
            "checkpoint_dir": self.checkpoint_dir,
            "history": self.history,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def plotted_components(self) -> list[str]:
        """The strategy components :meth:`plot` draws: ``alpha`` and ``beta`` (those the game has), or the
        participation game's ``participate`` and ``u``."""
        return [
            c
            for c in ("alpha", "beta", "participate", "u")
            if self.history and all(c in summary for summary in self.history[0]["players"].values())
        ]

    def plot(self, path: str | Path) -> Path:
        """A PNG of every player's mean strategy across the history, one panel per :meth:`plotted_components`
        (written atomically)."""
        from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched
        from matplotlib.ticker import MaxNLocator

        components = self.plotted_components()
        fig = Figure(figsize=(5 * max(len(components), 1), 3.5), layout="tight")
        axes = fig.subplots(1, max(len(components), 1), squeeze=False)[0]
        x = [entry["round"] for entry in self.history]
        for ax, component in zip(axes, components):
            values = np.array([self.series(agent, component) for agent in self.policies])
            for agent, series in zip(self.policies, values):
                ax.plot(x, series, marker="o", label=agent)
            middle = (values.max() + values.min()) / 2  # a flat series gets a readable range, not an offset axis
            if values.max() - values.min() < 0.1:
                ax.set_ylim(middle - 0.1, middle + 0.1)
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds and checkpoints are whole numbers
            ax.set(
                xlabel="round" if self.mode == "independent" else "checkpoint",
                ylabel=f"mean {component}",
                title=f"{self.mode} learners: {component}",
            )
            ax.legend(fontsize="small")
        target = Path(path)
        write_atomic(target, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
        return target


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by both kinds of training
# ---------------------------------------------------------------------------------------------------------------


def sub_seed(seed: int, *keys: int) -> int:
    """A 31-bit seed derived from ``seed`` and ``keys`` (independent streams for rounds, players, evaluation)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0] >> 1)


_EVAL_KEY = 0x5EED


def honest_policies(env: ParallelEnv) -> dict[str, Policy]:
    """The honest profile as policies (the game's :meth:`~fedgames.envs.contract.GameEnv.honest_policies`)."""
    return game_of(env).honest_policies(env.protocol)  # type: ignore[attr-defined]


def strategy_summary(
    env: ParallelEnv, policies: Mapping[str, Policy], episodes: int = 4096, seed: int = 0, batch_size: int | None = None
) -> dict[str, dict[str, float]]:
    """Per agent: the mean of every action component over ``episodes`` seeded episodes (all their steps, and the
    last step apart in multi-round games, :func:`~fedgames.agents.strategy.summarize_steps`), ``bias_norm`` when the
    game has a bias, and the mean ``reward`` (the episode return; same episodes for every call with the same
    seed), played ``batch_size`` at a time (``None``: the env's default,
    :func:`~fedgames.envs.batch.resolve_batch_size`)."""
    names = env.protocol.action_names  # type: ignore[attr-defined]
    rng, policy_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    actions, returns = recorded_play(env, policies, episodes, resolve_batch_size(env, batch_size), rng, policy_rng)
    rewards = returns.mean(axis=0)
    return {
        agent: summarize_steps(names, actions[:, :, i]) | {"reward": float(rewards[i])}
        for i, agent in enumerate(env.possible_agents)
    }


def _algo_kwargs(algo: str, n_envs: int, overrides: Mapping[str, Any] | None, env: ParallelEnv) -> dict[str, Any]:
    """:func:`fedgames.train.oracles.default_algo_kwargs` for ``n_envs`` sub-envs and ``env``'s horizon, updated
    with ``overrides``."""
    if algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}")
    return default_algo_kwargs(algo, n_envs, horizon(env)) | dict(overrides or {})


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (arrays to lists, dataclasses to their fields, torch tensors to their shape and
    sum — enough to tell data sets apart —, unknown objects to their repr)."""
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "sum": float(value.double().sum())}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__} | {
            f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value) if " at 0x" not in repr(value) else type(value).__name__


def _env_description(env: ParallelEnv) -> dict[str, Any]:
    """What identifies the game a run trains on: its name, agents, configuration (the game's public attributes and
    the env's own settings, such as ``fedsgd_v0``'s rounds and utility) and mechanism stack."""
    mechanisms = env.protocol.mechanisms  # type: ignore[attr-defined]
    return {
        "name": env.metadata.get("name"),
        "agents": list(env.possible_agents),
        "game": game_of(env).config.to_dict(),
        "mechanisms": [m.spec() if hasattr(m, "spec") else type(m).__name__ for m in mechanisms],
    }


def _run_config(mode: str, env: ParallelEnv, algo: str, seed: int, **options: Any) -> dict[str, Any]:
    return _jsonable({"mode": mode, "env": _env_description(env), "algo": algo, "seed": seed, **options})


OUTPUT_ONLY = ("algo_kwargs.verbose", "algo_kwargs.tensorboard_log")
"""Configuration keys that change what a run prints or logs, not what it learns: a checkpoint resumes across them."""


def _differing_keys(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys at which two JSON configurations differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current))
        return [d for k in keys for d in _differing_keys(saved.get(k), current.get(k), f"{prefix}{k}.")]
    return [] if saved == current else [prefix.rstrip(".")]


def _learn(model: BaseAlgorithm, venv: VecEnv, steps: int, seed: int, callback: MaybeCallback = None) -> None:
    """Train ``model`` on ``venv`` for ``steps`` more timesteps, re-seeded so that a resumed round repeats exactly
    (SB3's ``set_random_seed`` also seeds the global python, numpy and torch generators, as model construction
    does), with SB3's ``callback``."""
    model.set_env(venv)  # also discards the last observation: the round starts from fresh episodes
    model.set_random_seed(seed)
    model.learn(steps, reset_num_timesteps=False, callback=callback)


def _frozen(policy: Policy) -> Policy:
    """A snapshot of a learned policy that further training of its model does not change."""
    if isinstance(policy, SB3Policy):
        snapshot = copy.copy(policy)
        snapshot.model = copy.deepcopy(policy.model.policy)  # the network alone predicts like the model
        return snapshot
    return policy


# ---------------------------------------------------------------------------------------------------------------
# Learners: the models of a run and how one round trains them
# ---------------------------------------------------------------------------------------------------------------


class _Learners(ABC):
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
        device = self.algo_kwargs.get("device", "auto")
        self.models = {key: ALGORITHMS[self.algo].load(path, device=device) for key, path in files.items()}

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


class _IndependentLearners(_Learners):
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
        previous = {a: _frozen(p) for a, p in self.policies().items()} if self.models else self.init
        for i, agent in enumerate(self.env.possible_agents):
            seed = sub_seed(self.seed, round_index, i)
            venv = BestResponseVecEnv(self.env, agent, others_from_profile(previous, agent), self.n_envs, seed=seed)
            if agent not in self.models:
                self.models[agent] = self._new_model(venv, seed)
            _learn(self.models[agent], venv, self.steps, seed, self.callback)


class _SharedLearner(_Learners):
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
        _learn(self.models[self.KEY], venv, target - done, seed, self.callback)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------


class _Checkpoint:
    """``state.json`` plus one model file per learner and completed round, in ``directory``.

    The models of round r go to new files ``<key>.round_<r>.zip`` (each written to a temporary name and renamed);
    ``state.json`` is replaced atomically afterwards and only then are older model files removed, so the state
    always points at complete files of one round, whatever moment a crash hits.
    """

    def __init__(self, directory: str | Path, config: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.config = config

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    def load_state(self) -> dict[str, Any] | None:
        """The saved state (``None`` when there is none); ``ValueError`` if it was made with another config."""
        if not self.state_path.exists():
            return None
        state = json.loads(self.state_path.read_text())
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.state_path}: unknown state format {state.get('format')!r}")
        differing = [k for k in _differing_keys(state["config"], self.config) if k not in OUTPUT_ONLY]
        if differing:
            raise ValueError(
                f"checkpoint {self.directory} was made with a different configuration; differing "
                f"keys: {', '.join(differing)}"
            )
        return state

    def model_files(self, state: Mapping[str, Any]) -> dict[str, Path]:
        return {key: self.directory / name for key, name in state["models"].items()}

    def save(self, learners: _Learners, completed_rounds: int, history: list[dict[str, Any]]) -> None:
        names = {key: f"{key}.round_{completed_rounds:04d}.zip" for key in learners.models}
        for key, model in learners.models.items():
            write_atomic(self.directory / names[key], model.save)
        state = {
            "format": STATE_FORMAT,
            "config": self.config,
            "seed": self.config["seed"],
            "completed_rounds": completed_rounds,
            "timesteps": learners.timesteps,
            "models": names,
            "history": history,
        }
        write_atomic(self.state_path, json.dumps(state, indent=2))
        for key in names:
            for old in self.directory.glob(f"{key}.round_*.zip"):
                if old.name != names[key]:
                    old.unlink(missing_ok=True)


def _run(
    learners: _Learners, config: dict[str, Any], checkpoint_dir: str | Path | None, eval_episodes: int, progress: bool
) -> TrainingResult:
    """Resume from ``checkpoint_dir`` when it holds a state, then train rounds until the learners' budget is
    spent, recording the strategies (and checkpointing) after each round."""
    store = _Checkpoint(checkpoint_dir, config) if checkpoint_dir is not None else None
    state = store.load_state() if store is not None else None
    history: list[dict[str, Any]] = []
    if state is not None:
        learners.check_resume(state["completed_rounds"])
        learners.load(store.model_files(state))  # type: ignore[union-attr]
        history = state["history"]
    eval_seed = sub_seed(config["seed"], _EVAL_KEY)
    with learners.progress_bar(progress) as bar:
        bar.update(learners.progress(len(history)))
        while not learners.finished(len(history)):
            learners.train_round(len(history))
            players = strategy_summary(learners.env, learners.policies(), eval_episodes, eval_seed)
            history.append({"round": len(history) + 1, "timesteps": learners.timesteps, "players": players})
            if store is not None:
                store.save(learners, len(history), history)
            bar.update(learners.progress(len(history)) - bar.n)
            bar.set_postfix(_mean_over_players(players))
    return TrainingResult(
        config["mode"],
        learners.policies(),
        history,
        config,
        None if checkpoint_dir is None else str(checkpoint_dir),
        dict(learners.models),
    )


def _mean_over_players(players: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    keys = [k for k in ("alpha", "beta", "reward") if all(k in p for p in players.values())]
    return {k: round(float(np.mean([p[k] for p in players.values()])), 3) + 0.0 for k in keys}  # + 0.0: no "-0"


# ---------------------------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------------------------


def train_independent(
    env: ParallelEnv,
    algo: str = "ppo",
    rounds: int = 10,
    steps_per_round: int = 100_000,
    n_envs: int | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    algo_kwargs: Mapping[str, Any] | None = None,
    init: Mapping[str, Policy] | None = None,
    progress: bool = False,
    eval_episodes: int = 4096,
    callback: MaybeCallback = None,
) -> TrainingResult:
    """Independent learners, all players learning at once (simultaneous best-response rounds).

    In round r every player trains its own model (kept across rounds) for ``steps_per_round`` episodes on a
    :class:`~fedgames.train.BestResponseVecEnv` of ``n_envs`` games against the others' policies from the end of
    round r - 1 (frozen snapshots); round 0's opponents are ``init`` (default: :func:`honest_policies`).

    Args:
        env: a fedgames ``ParallelEnv`` (mechanisms included; one-round, or ``fedsgd_v0``).
        algo: ``"ppo"``, ``"sac"`` or ``"td3"``.
        rounds: total rounds wanted (a resumed run trains only the missing ones).
        steps_per_round: training episodes per player and round (PPO rounds them up to whole rollouts).
        n_envs: games per vectorised step of each learner (``None``: 1024, at most the env's default batch,
            :func:`~fedgames.envs.batch.learner_games`: 3 for the FEMNIST CNN).
        seed: seeds models, games and the evaluation batch.
        checkpoint_dir: save models and ``state.json`` after every round, and resume from them.
        algo_kwargs: overrides of the defaults (:func:`fedgames.train.oracles.default_algo_kwargs`: PPO with
            4-step rollouts, ``batch_size = n_envs``, 10 epochs, learning rate 3e-3; SAC/TD3 with ``gamma = 0``, a
            batch of ``n_envs`` transitions, 8 gradient steps per vectorised step, ``learning_starts = 2 n_envs``);
            ``policy`` picks the SB3 policy (default ``"MlpPolicy"``).
        init: round-0 opponents, agent -> Policy.
        progress: show a tqdm bar over rounds.
        eval_episodes: size of the fixed evaluation batch behind ``history``.
        callback: SB3's ``callback`` (a ``BaseCallback``, a list of them, or a function), given to every
            ``learn()`` call: each player's model in each round (``self.model`` says which). Not part of the
            checkpointed configuration.

    Raises:
        ValueError: unknown ``algo``, a missing ``init`` policy, bad budgets, or a ``checkpoint_dir`` made with a
            different configuration (the message names the differing keys) or holding more rounds than asked.
    """
    n_envs = learner_games(env, n_envs, 1024)
    _check_budget(rounds=rounds, steps_per_round=steps_per_round, n_envs=n_envs, eval_episodes=eval_episodes)
    init = dict(init) if init is not None else honest_policies(env)
    missing = [a for a in env.possible_agents if a not in init]
    if missing:
        raise ValueError(f"init: no policy for {missing}")
    config = _run_config(
        "independent",
        env,
        algo,
        seed,
        steps_per_round=steps_per_round,
        n_envs=n_envs,
        algo_kwargs=algo_kwargs or {},
        init=init,
        eval_episodes=eval_episodes,
    )
    learners = _IndependentLearners(
        env, algo, _algo_kwargs(algo, n_envs, algo_kwargs, env), seed, rounds, steps_per_round, n_envs, init, callback
    )
    return _run(learners, config, checkpoint_dir, eval_episodes, progress)


def train_shared(
    env: ParallelEnv,
    algo: str = "ppo",
    total_steps: int = 1_000_000,
    n_games: int | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100_000,
    algo_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
    eval_episodes: int = 4096,
    callback: MaybeCallback = None,
) -> TrainingResult:
    """Parameter sharing: one model plays every player of ``n_games`` games per step (:class:`SelfPlayVecEnv`).

    Trains until the model has seen ``total_steps`` player-episodes, in chunks of ``checkpoint_every``; after each
    chunk the strategies are recorded in ``history`` and, with a ``checkpoint_dir``, saved (resumable).

    Args:
        env: a fedgames ``ParallelEnv`` (one-round, or ``fedsgd_v0``) whose players share action and observation
            spaces.
        algo: ``"ppo"``, ``"sac"`` or ``"td3"``.
        total_steps: total player-episodes (SB3 timesteps; each step gives ``n_games * N``).
        n_games: games per vectorised step (``None``: 512, at most the env's default batch,
            :func:`~fedgames.envs.batch.learner_games`).
        seed: seeds the model, the games and the evaluation batch.
        checkpoint_dir: save the model and ``state.json`` every chunk, and resume from them.
        checkpoint_every: timesteps per chunk (history entry / checkpoint).
        algo_kwargs: overrides of the defaults (see :func:`train_independent`).
        progress: show a tqdm bar over timesteps.
        eval_episodes: size of the fixed evaluation batch behind ``history``.
        callback: SB3's ``callback``, given to every ``learn()`` call (see :func:`train_independent`).

    Raises:
        ValueError: as :func:`train_independent`, and for players with different spaces.
    """
    n_games = learner_games(env, n_games, 512, "n_games")
    _check_budget(
        total_steps=total_steps, n_games=n_games, checkpoint_every=checkpoint_every, eval_episodes=eval_episodes
    )
    n_envs = n_games * len(env.possible_agents)
    for kind in ("action_space", "observation_space"):  # fail before training when the players differ
        _common_space(env, kind)
    config = _run_config(
        "shared",
        env,
        algo,
        seed,
        n_games=n_games,
        checkpoint_every=checkpoint_every,
        algo_kwargs=algo_kwargs or {},
        eval_episodes=eval_episodes,
    )
    learners = _SharedLearner(
        env, algo, _algo_kwargs(algo, n_envs, algo_kwargs, env), seed, total_steps, n_games, checkpoint_every, callback
    )
    return _run(learners, config, checkpoint_dir, eval_episodes, progress)


def _check_budget(**values: int) -> None:
    for name, value in values.items():
        integer(name, value, 1)


__all__ = [
    "SelfPlayVecEnv",
    "TrainingResult",
    "honest_policies",
    "strategy_summary",
    "sub_seed",
    "train_independent",
    "train_shared",
]
