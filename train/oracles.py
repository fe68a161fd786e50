"""Best-response oracles for the equilibrium check (SPEC §5, step 2).

An oracle fixes the other players at their candidate policies and searches for a better reply for one player:

- :class:`LearnedOracle` trains an SB3 algorithm (PPO, SAC, TD3) on the batched best-response view, several
  seeds, and keeps the best. What it finds is a *lower* bound on the best reply's value (OpenSpiel's "approximate
  exploitability"), so the regret it shows is a lower bound too.
- :class:`GridOracle` evaluates observation-independent strategies on a grid over a few action components with
  common random numbers and refines it by branch and bound. With the payoff's slope range over each cell (exact
  from the closed form, or a stated bound) no strategy of a cell beats its point by more than the cell's slope
  term, which turns the grid into an *upper* bound on the regret over that class (Vorobeychik's bound, with local
  constants), at a simultaneous (Bonferroni) confidence level over the points it may play.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv
from scipy.stats import t as student_t
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback
from stable_baselines3.common.type_aliases import MaybeCallback
from tqdm.auto import tqdm

from fedgames.agents.learned import SB3Policy
from fedgames.agents.policy import Policy
from fedgames.agents.rollout import simulate
from fedgames.agents.scripted import ConstantPolicy
from fedgames.envs.batch import episode_batch, horizon, learner_games, resolve_batch_size
from fedgames.envs.health import Health, first_quantities_text
from fedgames.errors import did_you_mean
from fedgames.train.best_response_env import BestResponseVecEnv
from fedgames.train.grid_cells import Cell, SlopeRange, anchored_point, initial_cells
from fedgames.validation import integer

ALGORITHMS = {"ppo": PPO, "sac": SAC, "td3": TD3}


def new_model(algo: str, venv: Any, seed: int, algo_kwargs: Mapping[str, Any], **defaults: Any) -> Any:
    """An SB3 ``algo`` model on ``venv`` seeded ``seed``: ``algo_kwargs`` may set any constructor argument, the
    ``policy`` (default ``"MlpPolicy"``) and ``verbose`` (default 0) included, but not ``env`` or ``seed``, which
    fedgames sets (a ``ValueError`` names them); ``defaults`` are further arguments that ``algo_kwargs`` may
    override."""
    reserved = sorted({"env", "seed"} & set(algo_kwargs))
    if reserved:
        raise ValueError(
            f"algo_kwargs: {reserved} cannot be set there; fedgames gives the model its vectorised env "
            "and its seed (use the seed argument)"
        )
    accepted = list(inspect.signature(ALGORITHMS[algo]).parameters)
    for name in algo_kwargs:
        if name not in accepted:
            raise ValueError(
                f"algo_kwargs: {ALGORITHMS[algo].__name__} has no parameter {name!r}{did_you_mean(name, accepted)}"
            )
    kwargs = {"policy": "MlpPolicy", "verbose": 0, **defaults, **algo_kwargs}
    return ALGORITHMS[algo](env=venv, seed=seed, **kwargs)


def default_algo_kwargs(algo: str, n_envs: int, horizon: int = 1) -> dict[str, Any]:
    """Defaults for games of ``horizon`` steps per episode, ``n_envs`` games per vectorised step.

    One-round games (``horizon = 1``; each vectorised step is ``n_envs`` whole episodes): PPO with short rollouts
    (4 steps x ``n_envs`` episodes), minibatches of ``n_envs`` (at least 2, SB3's smallest), 10 epochs, learning
    rate 3e-3. SAC / TD3: a batch of
    ``n_envs`` transitions, 8 gradient steps per vectorised step; TD3 with learning rate 1e-3, SAC with 3e-3 and a
    fixed entropy weight 0.01 (its automatic weight keeps the policy away from actions at a bound, where these
    games' best replies often are). ``gamma = 0``: nothing to bootstrap. PPO is the most reliable of the three
    here: at Cor. B.1 with 100k episodes TD3 reached alpha 1.50 / beta 0.66 (predicted 1.5 / 0.68) but SAC only
    alpha 1.06.

    Multi-round games (``fedsgd_v0``, one step = one round): ``gamma = 1``, as the return is the undiscounted sum
    of the per-round payments and the terminal utility. PPO collects one whole episode per game per rollout
    (``n_steps = horizon``) and takes Monte Carlo advantages (``gae_lambda = 1``: the terminal utility carries
    most of the signal) in 4 minibatches; on the quadratic with T = 10 rounds and 256 games, 60k steps take ~2.5 s
    on one core. SAC / TD3 take ``gamma = 1`` and otherwise the one-round settings, untuned: on that quadratic SAC
    raised alpha far less than PPO in the same number of rounds.
    """
    if algo == "ppo":
        if horizon == 1:
            return {"n_steps": 4, "batch_size": max(n_envs, 2), "n_epochs": 10, "learning_rate": 3e-3, "gamma": 0.0}
        return {
            "n_steps": horizon,
            "batch_size": max(n_envs * horizon // 4, 2),
            "n_epochs": 10,
            "learning_rate": 3e-3,
            "gamma": 1.0,
            "gae_lambda": 1.0,
        }
    common = {
        "gamma": 0.0 if horizon == 1 else 1.0,
        "batch_size": n_envs,
        "learning_starts": 2 * n_envs,
        "train_freq": 1,
        "gradient_steps": 8,
        "buffer_size": 200_000,
    }
    if algo == "sac":
        return common | {"learning_rate": 3e-3, "ent_coef": 0.01}
    return common | {"learning_rate": 1e-3}


@dataclass
class OracleResult:
    """What an oracle found for one player.

    Attributes:
        policy: the best reply found.
        oracle: the oracle's name (``ppo``, ``sac``, ``td3``, ``grid``).
        proves: ``"lower bound"`` (a strategy found; the true best reply is at least as good) or
            ``"lower and upper bound"`` (grid with a Lipschitz term: also, no strategy of the class does better
            than ``upper_bound``).
        budget: what was spent (timesteps and seeds, or grid points and episodes per point).
        curves: learning curves, one per seed: ``[[timesteps, mean reward], ...]``.
        plateau: whether the kept seed's learning curve levelled off (last fifth vs the one before).
        upper_bound: for the grid, the simultaneous upper confidence bound on the regret over the strategy class.
        search: for the grid with a bound, what its search did: points evaluated, rounds, the tolerance it aimed
            at, why it stopped and the largest cell bound left (box, point, gain, standard error, slope term).
        cells: for the grid with a bound, the final cells (the bound is the largest of their bounds).
        quantile: the per-point Student quantile of those bounds.
        diverged: for the grid, its diverged episodes (:mod:`~fedgames.envs.health`): per grid point how many of
            its paired episodes (the point's or the candidate's) diverged and were left out of its gain, and how
            many points that left without an estimate (``None``: the oracle does not say).
        notes: what a report must say about the search (diverged episodes left out, points without an estimate).
    """

    policy: Policy
    oracle: str
    proves: str
    budget: dict[str, Any]
    curves: list[list[list[float]]] = field(default_factory=list)
    plateau: bool | None = None
    upper_bound: float | None = None
    search: dict[str, Any] | None = None
    cells: list[Cell] = field(default_factory=list)
    quantile: float | None = None
    diverged: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Run:
    """One seed's training: its validation value, the policy and its learning curve."""

    value: float
    policy: Policy
    curve: list[list[float]]


class _Curve(BaseCallback):
    """Records the mean return of each batch of finished episodes (in one-round games every step finishes one
    episode per game, so this is each step's mean reward)."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[list[float]] = []
        self._returns: np.ndarray | None = None

    def _on_step(self) -> bool:
        rewards, dones = np.asarray(self.locals["rewards"]), np.asarray(self.locals["dones"])
        self._returns = rewards if self._returns is None else self._returns + rewards
        if dones.any():
            self.points.append([float(self.num_timesteps), float(self._returns[dones].mean())])
            self._returns = None if dones.all() else np.where(dones, 0.0, self._returns)
        return True


def plateaued(curve: Sequence[Sequence[float]], share: float = 0.05) -> bool:
    """True when the curve has levelled off: the mean of its last fifth differs from the fifth before it by less
    than 2 standard errors or than ``share`` of the whole gain since the first fifth (a slow drift of a few
    percent of what was learned counts as a plateau; the batch-to-batch noise alone is tiny next to it)."""
    values = np.array([v for _, v in curve])
    k = len(values) // 5
    if k < 2:
        return False
    first, before, last = values[:k], values[-2 * k : -k], values[-k:]
    se = np.sqrt(last.var(ddof=1) / k + before.var(ddof=1) / k)
    recent = abs(last.mean() - before.mean())
    return bool(recent <= 2 * se or recent <= share * abs(last.mean() - first.mean()))


def _player_value(
    env: ParallelEnv, policies: Mapping[str, Policy], player: str, episodes: int, seed: int, batch_size: int
) -> float:
    """``player``'s mean return over the episodes that did not diverge; ``-inf`` when fewer than 2 did not (so a
    seed whose reply diverges is never kept over one with a value)."""
    results = simulate(env, policies, episodes, seed=seed, batch_size=batch_size)
    value = float(results.mean_and_se("rewards")[0][env.possible_agents.index(player)])
    return value if np.isfinite(value) else -np.inf


class LearnedOracle:
    """Best reply by reinforcement learning on the batched best-response view.

    Args:
        algo: ``ppo``, ``sac`` or ``td3``.
        timesteps: training budget per seed, in SB3 timesteps: episodes of a one-round game (every step is a
            whole episode per game), rounds of a multi-round one.
        seeds: independent trainings; the one with the best validation value is kept.
        n_envs: games per vectorised step (``None``: 1024, at most the env's default batch; see :meth:`games`).
        validation_episodes: episodes used to pick the best seed (a seed stream apart from the check's), played
            ``batch_size`` at a time (an argument of :meth:`best_response`; training plays ``n_envs`` games).
        algo_kwargs: overrides of :func:`default_algo_kwargs`.
        tensorboard_log: folder for TensorBoard logs (needs the ``tensorboard`` package).
        progress: a tqdm bar over seeds.
        callback: SB3's ``callback`` (a ``BaseCallback``, a list of them, or a function), given to every seed's
            ``learn()`` beside the oracle's own learning-curve recorder.
    """

    proves = "lower bound"

    def __init__(
        self,
        algo: str = "ppo",
        timesteps: int = 200_000,
        seeds: int = 3,
        n_envs: int | None = None,
        validation_episodes: int = 20_000,
        algo_kwargs: Mapping[str, Any] | None = None,
        tensorboard_log: str | None = None,
        progress: bool = False,
        callback: MaybeCallback = None,
    ) -> None:
        if tensorboard_log is not None:
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise ValueError("tensorboard_log needs the tensorboard package: pip install tensorboard") from None
        if algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}")
        timesteps, seeds = integer("timesteps", timesteps, 1), integer("seeds", seeds, 1)
        if n_envs is not None:
            n_envs = integer("n_envs", n_envs, 1)
        self.name = algo
        self.timesteps, self.seeds, self.n_envs = timesteps, seeds, n_envs
        self.validation_episodes = validation_episodes
        self.overrides = dict(algo_kwargs or {})
        self.tensorboard_log = tensorboard_log
        self.progress = progress
        self.callback = callback

    def games(self, env: ParallelEnv) -> int:
        """Games per vectorised step on ``env``: ``n_envs``, by default 1024 capped at the env's default batch
        (:func:`~fedgames.envs.batch.learner_games`)."""
        return learner_games(env, self.n_envs, 1024)

    def algo_kwargs(self, env: ParallelEnv) -> dict[str, Any]:
        """The hyperparameters used on ``env``: :func:`default_algo_kwargs` for its horizon, then the overrides."""
        return default_algo_kwargs(self.name, self.games(env), horizon(env)) | self.overrides

    def best_response(
        self,
        env: ParallelEnv,
        player: str,
        policies: Mapping[str, Policy],
        seed: int = 0,
        batch_size: int | None = None,
    ) -> OracleResult:
        """Train ``seeds`` learners as ``player`` against ``policies``; keep the best on the validation episodes,
        simulated ``batch_size`` at a time (``None``: the env's default,
        :func:`~fedgames.envs.batch.resolve_batch_size`)."""
        batch_size = resolve_batch_size(env, batch_size)
        others = {a: p for a, p in policies.items() if a != player}
        algo_kwargs = self.algo_kwargs(env)
        runs: list[_Run] = []
        for k in tqdm(range(self.seeds), desc=f"{self.name} {player}", disable=not self.progress):
            run_seed = seed * 1000 + k
            venv = BestResponseVecEnv(env, player, others, n_envs=self.games(env), seed=run_seed)
            model = new_model(self.name, venv, run_seed, algo_kwargs, tensorboard_log=self.tensorboard_log)
            curve = _Curve()
            model.learn(
                self.timesteps,
                callback=_beside(curve, self.callback),
                tb_log_name=f"{self.name}_{player}_seed{run_seed}",
            )
            policy = SB3Policy(model, env.action_space(player))
            value = _player_value(
                env,
                {**policies, player: policy},
                player,
                self.validation_episodes,
                seed=10_000_019 + run_seed,
                batch_size=batch_size,
            )
            runs.append(_Run(value, policy, curve.points))
        best = max(runs, key=lambda r: r.value)
        return OracleResult(
            policy=best.policy,
            oracle=self.name,
            proves=self.proves,
            budget={
                "algorithm": self.name,
                "timesteps_per_seed": self.timesteps,
                "seeds": self.seeds,
                "n_envs": self.games(env),
                "validation_episodes": self.validation_episodes,
                "hyperparameters": algo_kwargs,
            },
            curves=[r.curve for r in runs],
            plateau=plateaued(best.curve),
        )


def _beside(own: BaseCallback, callback: MaybeCallback) -> BaseCallback:
    """``own`` and the user's SB3 ``callback`` (a callback, a list of them, a function or ``None``) as one."""
    if callback is None:
        return own
    extra = callback if isinstance(callback, list) else [callback]
    return CallbackList([own, *(c if isinstance(c, BaseCallback) else ConvertCallback(c) for c in extra)])


MAX_GRID_POINTS = 1_000_000
"""The most points a grid search plays (its first grid and the refinement's): each is a simulation of
``episodes`` episodes, so a million of them is already hours of play; a larger grid is refused before any work
(``--grid-points 100000`` over two components asked for 1e10 and filled 12 GB building its cells)."""


class GridOracle:
    """Best reply over observation-independent strategies on a grid of a few action components (in a multi-round
    game: the same action in every round, e.g. a constant alpha schedule in ``fedsgd_v0``), refined by branch and
    bound into a certified upper bound on the regret over that class.

    The other components of the player's action stay at the candidate's values. The first grid has ``points``
    points per component (``linspace`` over the action bounds), each owning a cell of the box
    (:mod:`fedgames.train.grid_cells`). A point's gain is its paired mean difference with the candidate over
    ``episodes`` episodes (common random numbers). With the payoff's slope range over each cell — exact from the
    game's closed form where it has one (``lipschitz="theory"``: :meth:`~fedgames.envs.contract.TheoryAdapter.
    slope_ranges`; the mean-estimation game's from ``EnvTheory.own_payoff``) or a stated bound ``|slope_c| <= L_c``
    (a mapping) — a cell's bound is its point's upper confidence bound plus its slope term, and no strategy of the
    box gains more than the largest cell bound (Vorobeychik's bound, with local constants). Branch and bound
    (``refine``): while some cell's bound is at least ``tolerance`` (the check's
    tau; 0 when the oracle is called alone), the cells that could still exceed it are halved, largest bound first,
    along their dominant components, and the new points are played on *fresh* episodes of a new round (the
    earlier rounds chose where they lie, so reusing those episodes would not give them valid intervals). It stops
    when the bound is below ``tolerance`` (the verdict "consistent" is possible), when some point's lower
    confidence bound is above it (no refinement can certify: the reply refutes), or when ``max_points`` points
    have been played.

    Confidence: every point's one-sided bound is at level ``1 - (1 - level) / M`` (Student's t, ``K - 1``
    degrees of freedom), ``M = max_points`` with refinement (the number of grid points without). At most ``M``
    points are played and each point's bound holds given the rounds before it (fresh episodes), so by Bonferroni
    over the budget all bounds played hold at once with probability at least ``level``, however the search chose
    them, and then the reported bound holds over the whole box.

    With ``levels`` the strategy class is finite — exactly the product of the given levels per component (e.g. the
    actions of a discretised matrix game) — and the bound is the largest point's upper confidence bound, with no
    slope term and no refinement.

    Without a slope bound (``lipschitz=None``) there is no upper bound, and ``refine`` adds one round of
    ``points`` per component inside the best point's cell.

    Args:
        components: names of the action components searched (e.g. ``("alpha", "beta")``).
        points: first-grid points per component.
        episodes: episodes per grid point.
        refine: branch and bound (with a slope bound), or the zoom round (without).
        max_points: budget of points played, the first grid included (with refinement; ``None``: 1,000, or the
            first grid's size if larger).
        lipschitz: ``"theory"``, a mapping component -> bound on ``|slope|``, or ``None`` (no upper bound).
        level: simultaneous confidence level of the upper bound.
        levels: component -> the values of a finite strategy class (replaces the grid; ``points``, ``refine`` and
            ``lipschitz`` then do not apply).
    """

    name = "grid"

    def __init__(
        self,
        components: Sequence[str] = ("alpha", "beta"),
        points: int = 11,
        episodes: int = 20_000,
        refine: bool = True,
        lipschitz: str | Mapping[str, float] | None = "theory",
        level: float = 0.95,
        max_points: int | None = None,
        levels: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        points, episodes = integer("points", points, 2), integer("episodes", episodes, 2)
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        if isinstance(lipschitz, str) and lipschitz != "theory":
            raise ValueError(f"lipschitz must be 'theory', a mapping or None, got {lipschitz!r}")
        if levels is not None:
            unknown = sorted(set(levels) - set(components))
            if unknown or any(len(levels[c]) < 1 for c in components if c in levels):
                raise ValueError(f"levels: one non-empty list per component {list(components)}, got {dict(levels)}")
            missing = [c for c in components if c not in levels]
            if missing:
                raise ValueError(f"levels: no levels for {missing}")
        self.components, self.points, self.episodes = tuple(components), points, episodes
        self.refine, self.lipschitz, self.level = refine, lipschitz, level
        first = points ** len(self.components)
        budget = first if max_points is None else max(first, integer("max_points", max_points, 1))
        if budget > MAX_GRID_POINTS:
            raise ValueError(
                f"points={points} over {len(self.components)} component(s) makes a first grid of {first:.3g} points"
                + ("" if max_points is None else f" (max_points={max_points})")
                + f"; at most {MAX_GRID_POINTS:,} points are played (each with {episodes} episodes)"
            )
        self.max_points = max(1_000, first) if max_points is None else integer("max_points", max_points, first)
        self.levels = None if levels is None else {c: [float(v) for v in levels[c]] for c in self.components}

    @property
    def proves(self) -> str:
        return "lower and upper bound" if self.lipschitz is not None or self.levels else "lower bound"

    def best_response(
        self,
        env: ParallelEnv,
        player: str,
        policies: Mapping[str, Policy],
        seed: int = 0,
        batch_size: int | None = None,
        tolerance: float | None = None,
    ) -> OracleResult:
        """Search as ``player`` against ``policies`` (class doc), every simulation ``batch_size`` episodes at a
        time (``None``: the env's default, :func:`~fedgames.envs.batch.resolve_batch_size`); round ``r`` plays
        episodes seeded ``seed + r``. Refinement aims at a bound below ``tolerance`` (``None``: 0)."""
        batch_size = resolve_batch_size(env, batch_size)
        protocol = env.protocol
        index = env.possible_agents.index(player)
        columns = [protocol.action_index(c) for c in self.components]
        observations = episode_batch(env, 1, np.random.default_rng(seed)).reset()
        base = policies[player].act(observations[:, index], np.random.default_rng(seed))[0]
        low, high = protocol.action_low[columns], protocol.action_high[columns]
        target = 0.0 if tolerance is None else float(tolerance)
        pairs: list[Health] = []  # every point's pairs, which diverged and through what first

        def play(points: list[np.ndarray], round_: int) -> list[tuple[float, float, int]]:
            """Paired mean gain, its standard error and the diverged pairs of each point over round ``round_``'s
            episodes: a pair where either episode diverged is left out (recorded in ``pairs``: the point's episode's
            first bad quantity, else the candidate's); with fewer than 2 pairs left, NaN."""
            candidate = simulate(env, policies, self.episodes, seed=seed + round_, batch_size=batch_size)
            found = []
            for point in points:
                action = base.copy()
                action[columns] = point
                played = simulate(
                    env,
                    {**policies, player: ConstantPolicy(action)},
                    self.episodes,
                    seed=seed + round_,
                    batch_size=batch_size,
                )
                kept = candidate.kept & played.kept
                assert played.health is not None and candidate.health is not None  # simulate records them
                pairs.append(paired_health(played.health, candidate.health))
                diff = played.rewards[kept, index] - candidate.rewards[kept, index]
                diverged = int(self.episodes - kept.sum())
                if diff.size < 2:
                    found.append((float("nan"), float("nan"), diverged))
                else:
                    found.append((float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size)), diverged))
            return found

        slope_range: SlopeRange | None
        if self.levels:  # a finite class: zero-width cells, nothing between the points

            def slope_range(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                return np.zeros(len(columns)), np.zeros(len(columns))

        else:
            slope_range = self._slope_range(env, policies, index, columns, base)

        def cells_of(boxes: list[tuple[np.ndarray, np.ndarray]], round_: int, box: tuple | None) -> list[Cell]:
            points = [b[0] if box is None else anchored_point(*b, *box) for b in boxes]
            return [
                Cell(
                    lower,
                    upper,
                    point,
                    gain,
                    se,
                    round_,
                    None if slope_range is None else slope_range(lower, upper),
                    diverged,
                )
                for (lower, upper), point, (gain, se, diverged) in zip(boxes, points, play(points, round_))
            ]

        if self.levels:
            finite = [np.array(p, dtype=float) for p in itertools.product(*(self.levels[c] for c in self.components))]
            leaves = cells_of([(p, p) for p in finite], 0, None)
            budget_points = len(leaves)
        else:
            leaves = cells_of(initial_cells(low, high, self.points), 0, (low, high))
            budget_points = self.max_points if self.refine and slope_range is not None else len(leaves)
        quantile = float(student_t.ppf(1 - (1 - self.level) / budget_points, self.episodes - 1))
        evaluated, rounds, stopped = list(leaves), 1, "first grid only"
        estimated = [c for c in leaves if c.estimated]  # never a reply, or a zoom, from a NaN gain
        if self.refine and not self.levels and slope_range is None and estimated:  # no bound to aim at: one zoom
            best = max(estimated, key=lambda c: c.gain)
            evaluated += cells_of(initial_cells(best.lower, best.upper, self.points), 1, None)
            rounds = 2
        elif self.refine and not self.levels:
            while True:
                bounds = [c.bound(quantile) for c in leaves]  # inf for a cell without an estimate
                if max(bounds) < target:
                    stopped = "bound below the tolerance"
                    break
                lowest = [c.gain - quantile * c.se for c in leaves if c.estimated]
                if lowest and max(lowest) > target:
                    stopped = "a point's lower confidence bound exceeds the tolerance"
                    break
                chosen: set[int] = set()
                children: list[tuple[np.ndarray, np.ndarray]] = []
                unbounded = False
                for k in sorted(range(len(leaves)), key=lambda k: -bounds[k]):
                    if bounds[k] < target:
                        break
                    if not leaves[k].estimated:  # its episodes diverged: halving it would not bound it
                        unbounded = True
                        continue
                    halves = leaves[k].halves(low, high)
                    if halves and len(evaluated) + len(children) + len(halves) <= budget_points:
                        chosen.add(k)
                        children += halves
                if not children:
                    stopped = (
                        "cells without an estimate left (their paired episodes diverged): no bound"
                        if unbounded
                        else "point budget spent"
                    )
                    break
                new = cells_of(children, rounds, (low, high))
                leaves = [c for k, c in enumerate(leaves) if k not in chosen] + new
                evaluated += new
                rounds += 1
        replies = [c for c in evaluated if c.estimated]
        if replies:
            winner = max(replies, key=lambda c: c.gain)
            action = base.copy()
            action[columns] = winner.point
            reply: Policy = ConstantPolicy(action)
        else:  # no point has an estimate: no reply found, the candidate's own policy stands in
            reply = policies[player]
        diverged = _grid_divergence(evaluated, list(self.components), self.episodes, Health.concatenate(pairs))
        result = OracleResult(
            policy=reply,
            oracle=self.name,
            proves=self.proves,
            budget={
                "components": list(self.components),
                "points_per_component": self.points if not self.levels else None,
                "levels": self.levels,
                "refined": self.refine,
                "grid_points": len(evaluated),
                "rounds": rounds,
                "episodes_per_point": self.episodes,
                "max_points": budget_points,
                "per_point_level": 1 - (1 - self.level) / budget_points,
            },
            diverged=diverged,
            notes=_grid_notes(diverged, len(evaluated)),
        )
        if slope_range is not None:
            largest = max(leaves, key=lambda c: c.bound(quantile))
            result.upper_bound = largest.bound(quantile)
            result.cells = leaves
            result.quantile = quantile
            result.budget["slopes"] = (
                "finite class: none"
                if self.levels
                else {c: float(self.lipschitz[c]) for c in self.components}
                if isinstance(self.lipschitz, Mapping)
                else "closed form, per cell"
            )
            result.search = {
                "points_evaluated": len(evaluated),
                "rounds": rounds,
                "target": target,
                "stopped": stopped,
                "largest_cell": largest.describe(list(self.components), quantile),
            }
        return result

    def _slope_range(
        self, env: ParallelEnv, policies: Mapping[str, Policy], index: int, columns: list[int], base: np.ndarray
    ) -> SlopeRange | None:
        """The slope range over a cell: from the game's closed form
        (:meth:`~fedgames.envs.contract.TheoryAdapter.slope_ranges`; exact along the mean-estimation game's
        ``alpha`` and ``beta``) or the stated constants; ``None`` without ``lipschitz``."""
        if self.lipschitz is None:
            return None
        if isinstance(self.lipschitz, Mapping):
            missing = [c for c in self.components if c not in self.lipschitz]
            if missing:
                raise ValueError(f"lipschitz: no constant for {missing}")
            bound = np.array([float(self.lipschitz[c]) for c in self.components])
            return lambda lower, upper: (-bound, bound)
        from fedgames.envs.contract import closed_form

        theory = closed_form(env)
        constant = constant_actions(env, policies)
        if theory is None or constant is None:
            raise ValueError(
                "lipschitz='theory' needs a game with a closed form and constant policies; give the "
                "constants as a mapping, or lipschitz=None for a lower bound only"
            )
        return theory.slope_ranges(constant, index, base, columns)


def paired_health(played: Health, candidate: Health) -> Health:
    """Which pairs of episodes (a point's and the candidate's, on the same seeds) diverged, through the point's
    episode's first bad quantity and round where it diverged, else the candidate's."""
    own = played.diverged
    return Health(
        own | candidate.diverged,
        np.where(own, played.quantity, candidate.quantity),
        np.where(own, played.round, candidate.round),
    )


def _grid_divergence(cells: Sequence[Cell], components: list[str], episodes: int, pairs: Health) -> dict[str, Any]:
    """The grid's diverged episodes: in all, through which quantity first and from which round (over ``pairs``,
    :func:`paired_health`), per point where some diverged (its point, count and whether it kept an estimate), and
    how many points had none."""
    struck = [c for c in cells if c.diverged]
    summary = pairs.summary()
    return {
        "first_quantity": summary["first_quantity"],
        "earliest_round": summary["earliest_round"],
        "episodes_per_point": episodes,
        "points": len(cells),
        "points_with_diverged": len(struck),
        "points_without_estimate": sum(not c.estimated for c in cells),
        "pairs_left_out": sum(c.diverged for c in cells),
        "per_point": [
            {
                "point": {n: float(v) for n, v in zip(components, c.point)},
                "diverged": c.diverged,
                "estimated": c.estimated,
            }
            for c in struck
        ],
    }


def _grid_notes(diverged: Mapping[str, Any], points: int) -> list[str]:
    """The report's notes on the grid's diverged episodes (none when none diverged)."""
    if not diverged["pairs_left_out"]:
        return []
    episodes = diverged["episodes_per_point"]
    through = first_quantities_text(diverged["first_quantity"])
    notes = [
        f"grid: at {diverged['points_with_diverged']} of {points} points some of the {episodes} paired episodes "
        f"diverged ({diverged['pairs_left_out']} pairs in all; a non-finite value first, in the point's or else the "
        f"candidate's episode: {through}; earliest in round {diverged['earliest_round']}) and are left out of the "
        "gains"
    ]
    missing = diverged["points_without_estimate"]
    if missing == points:
        notes.append(
            "grid: no point has an estimate (fewer than 2 pairs left at each): no reply found, the candidate's own "
            "policy stands in, and no upper bound"
        )
    elif missing:
        notes.append(
            f"grid: {missing} point(s) have no estimate (fewer than 2 pairs left): never picked as the reply, and "
            "their cells are not bounded"
        )
    return notes


def constant_actions(env: ParallelEnv, policies: Mapping[str, Policy]) -> np.ndarray | None:
    """``(N, k)`` actions when every policy is a :class:`ConstantPolicy`, else ``None``."""
    constants = [policies[a] for a in env.possible_agents]
    if not all(isinstance(p, ConstantPolicy) for p in constants):
        return None
    return np.stack([p.action for p in constants if isinstance(p, ConstantPolicy)])


def make_oracle(name: str, **kwargs: Any) -> LearnedOracle | GridOracle:
    """``grid`` or one of :data:`ALGORITHMS` with its keyword arguments."""
    if name == "grid":
        return GridOracle(**kwargs)
    return LearnedOracle(algo=name, **kwargs)
