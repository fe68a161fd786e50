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
same arguments resumes (completed rounds are not redone). The checkpoint holds data only (tensors and JSON,
:mod:`fedgames.train.checkpoint`): resuming from a folder never runs code from it. A resumed run reproduces the
uninterrupted one exactly for PPO (each round re-seeds the model and the env, and the checkpoint keeps the
parameters, the optimiser and the training counters); SAC/TD3 replay buffers are not saved, so for them a resumed
run refills its buffer and differs slightly.

The pieces: :mod:`~fedgames.train.self_play_env` (parameter sharing's VecEnv), :mod:`~fedgames.train.learners`,
:mod:`~fedgames.train.summary` (what each round records), :mod:`~fedgames.train.results` (:class:`RoundRecord`,
:class:`TrainingResult`), :mod:`~fedgames.train.run_config` and :mod:`~fedgames.train.checkpoint`.

"Steps" and "timesteps" here are SB3 timesteps of one player (of one learner, for independent training): in a
one-round game each vectorised step is one whole episode in every sub-env, so they count episodes; in a multi-round
game (``fedsgd_v0``) they count rounds, and the strategy summaries add each component's mean at the last round.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pettingzoo import ParallelEnv
from stable_baselines3.common.type_aliases import MaybeCallback

from fedgames.agents.policy import Policy
from fedgames.envs.batch import learner_games
from fedgames.train.checkpoint import CheckpointStore
from fedgames.train.learners import IndependentLearners, Learners, SharedLearner, resolved_algo_kwargs
from fedgames.train.results import RoundRecord, TrainingResult
from fedgames.train.run_config import run_config
from fedgames.train.self_play_env import SelfPlayVecEnv, common_space
from fedgames.train.summary import EVAL_KEY, honest_policies, mean_over_players, strategy_summary, sub_seed
from fedgames.validation import integer


def _run(
    learners: Learners, config: dict[str, Any], checkpoint_dir: str | Path | None, eval_episodes: int, progress: bool
) -> TrainingResult:
    """Resume from ``checkpoint_dir`` when it holds a state, then train rounds until the learners' budget is
    spent, recording the strategies (and checkpointing) after each round."""
    store = CheckpointStore(checkpoint_dir, config, learners.keys) if checkpoint_dir is not None else None
    state = store.load_state() if store is not None else None
    history: list[RoundRecord] = []
    if store is not None and state is not None:
        learners.check_resume(state["completed_rounds"])
        learners.load(store.model_files(state))
        history = state["history"]
    eval_seed = sub_seed(config["seed"], EVAL_KEY)
    with learners.progress_bar(progress) as bar:
        bar.update(learners.progress(len(history)))
        while not learners.finished(len(history)):
            learners.train_round(len(history))
            players, divergence = strategy_summary(learners.env, learners.policies(), eval_episodes, eval_seed)
            history.append(RoundRecord(len(history) + 1, learners.timesteps, players, divergence))
            if store is not None:
                store.save(learners.models, len(history), learners.timesteps, history)
            bar.update(learners.progress(len(history)) - bar.n)
            bar.set_postfix(mean_over_players(players))
    return TrainingResult(
        config["mode"],
        learners.policies(),
        history,
        config,
        None if checkpoint_dir is None else str(checkpoint_dir),
        dict(learners.models),
    )


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
    config = run_config(
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
    learners = IndependentLearners(
        env,
        algo,
        resolved_algo_kwargs(algo, n_envs, algo_kwargs, env),
        seed,
        rounds,
        steps_per_round,
        n_envs,
        init,
        callback,
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
        common_space(env, kind)
    config = run_config(
        "shared",
        env,
        algo,
        seed,
        n_games=n_games,
        checkpoint_every=checkpoint_every,
        algo_kwargs=algo_kwargs or {},
        eval_episodes=eval_episodes,
    )
    learners = SharedLearner(
        env,
        algo,
        resolved_algo_kwargs(algo, n_envs, algo_kwargs, env),
        seed,
        total_steps,
        n_games,
        checkpoint_every,
        callback,
    )
    return _run(learners, config, checkpoint_dir, eval_episodes, progress)


def _check_budget(**values: int) -> None:
    for name, value in values.items():
        integer(name, value, 1)


__all__ = [
    "RoundRecord",
    "SelfPlayVecEnv",
    "TrainingResult",
    "honest_policies",
    "strategy_summary",
    "sub_seed",
    "train_independent",
    "train_shared",
]
