"""The empirical Nash check (SPEC §5): does any player gain by leaving a candidate profile?

For each checked player i: estimate ``u_i(sigma*)``; let an oracle find a reply ``BR`` with the others fixed at
``sigma*_{-i}``; play both on the same fresh episodes (common random numbers: same data, same noise) and take the
paired differences ``u_i(BR, sigma*_{-i}) - u_i(sigma*)``. Their mean is the regret ``eps_i``, with a paired
Student-t or bootstrap interval; ``NashConv = sum_i max(eps_i, 0)`` (OpenSpiel's vocabulary), with the interval
that the players' intervals give jointly. Verdict per player, with tolerance ``tau`` (SPEC §5 step 4): *consistent*
when the upper end of the regret's interval is below ``tau``, *refuted* when its lower end is above it, else
*inconclusive* (more episodes or budget). The profile's verdict: refuted if any player is, consistent if all are.

What each oracle proves: a learned reply only shows the regret is *at least* what it found (a lower bound; the
report keeps the learning curves and says whether they levelled off), so "consistent" then means that no reply
the oracle found gains ``tau``. A grid over a bounded low-dimensional strategy class with a Lipschitz term also
gives an *upper* bound on the regret over that whole class: the regret's interval is then the bracket
``[interval low, upper bound]``, and "consistent" needs the upper bound below ``tau`` too. With several oracles
every reply is played, each interval at the Bonferroni level ``1 - (1 - level) / n_oracles``, and the verdict reads
the largest regret among the replies, ``[max_j low_j, max_j high_j]`` (adding an oracle can only strengthen it).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv
from scipy.stats import t as student_t
from tqdm.auto import tqdm

from fedgames.agents.policy import Policy
from fedgames.agents.rollout import Episodes, simulate
from fedgames.agents.scripted import ConstantPolicy
from fedgames.agents.strategy import summarize_actions, summarize_policy
from fedgames.envs.batch import resolve_batch_size
from fedgames.envs.contract import closed_form, game_of
from fedgames.eval.nash_render import render_markdown
from fedgames.files import json_text, write_atomic
from fedgames.train.oracles import GridOracle, LearnedOracle, OracleResult, constant_actions
from fedgames.validation import real

VERDICTS = ("consistent", "refuted", "inconclusive")

SMALL_SAMPLE = 30
"""Below this many paired episodes :func:`nash_check` warns: the t interval then leans on the differences being
roughly normal, and the percentile bootstrap covers less than its level (about 84% for a nominal 95% at 5)."""


def paired_interval(
    diffs: np.ndarray, level: float, method: str = "normal", resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Two-sided ``level`` interval for the mean of ``K >= 2`` paired differences.

    ``normal``: the normal-theory (Student-t) interval ``mean -/+ t_{K-1} sd / sqrt(K)``, exact for normal
    differences at any ``K``. ``bootstrap``: percentile interval of ``resamples`` resampled means.
    """
    diffs = np.asarray(diffs, dtype=float)
    mean = float(diffs.mean())
    if method == "normal":
        half = student_t.ppf((1 + level) / 2, diffs.size - 1) * float(diffs.std(ddof=1)) / np.sqrt(diffs.size)
        return mean - half, mean + half
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = np.empty(resamples)
        chunk = max(1, 2_000_000 // diffs.size)
        for start in range(0, resamples, chunk):
            stop = min(start + chunk, resamples)
            means[start:stop] = diffs[rng.integers(0, diffs.size, (stop - start, diffs.size))].mean(axis=1)
        low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
        return float(low), float(high)
    raise ValueError(f"interval must be 'normal' or 'bootstrap', got {method!r}")


def regret_estimate(diffs: np.ndarray, level: float, method: str, seed: int) -> tuple[float, tuple[float, float]]:
    """The regret (mean of the paired ``diffs``) and its interval (:func:`paired_interval`); with fewer than 2
    pairs (the others diverged) no estimate: NaN and the interval ``(-inf, inf)``, an inconclusive verdict."""
    if diffs.size < 2:
        return float("nan"), (-np.inf, np.inf)
    return float(diffs.mean()), paired_interval(diffs, level, method, seed=seed)


def divergence_notes(diverged: Mapping[str, int], episodes: int) -> list[str]:
    """A note for each oracle whose paired episodes had diverged ones (:mod:`~fedgames.envs.health`): they are
    left out of the regret's mean and interval."""
    return [
        f"{n} of {episodes} paired episodes diverged (a non-finite parameter, loss, payment or reward in the "
        f"candidate's or the {oracle} reply's episode) and are left out of the regret"
        + ("; fewer than 2 remain: no estimate, inconclusive" if episodes - n < 2 else "")
        for oracle, n in diverged.items()
        if n
    ]


def parse_tolerance(tolerance: float | str) -> tuple[float, bool]:
    """``(amount, relative)`` of a tolerance: a number (or numeric string) >= 0 in reward units, or a percentage
    string ``"1%"`` (then ``amount = 0.01``, relative to the reward scale)."""
    text = str(tolerance).strip()
    relative = text.endswith("%")
    try:
        value = float(text[:-1] if relative else text)
    except ValueError:
        raise ValueError(
            f"tolerance must be a number >= 0 (reward units) or a percentage such as '1%', got {tolerance!r}"
        ) from None
    real("tolerance", value)  # >= 0: a negative one would refute every exact equilibrium
    return (value / 100, True) if relative else (value, False)


def reward_scale(played: Episodes) -> tuple[float, str]:
    """The candidate's reward scale over its ``played`` episodes, what a relative tolerance is a share of, and what
    it is: the players' mean squared error where the game records one (mean estimation: at honesty ``nu / N``, the
    honest MSE of Thm 4.1; a reward there is a difference of MSEs), else the players' mean absolute episode
    reward."""
    if played.sq_error is not None:
        return float(played.mean_and_se("sq_error")[0].mean()), "the candidate's mean squared error"
    healthy = played.rewards[played.kept]  # every episode may have diverged: then no scale (NaN)
    scale = float(np.abs(healthy).mean()) if healthy.size else float("nan")
    return scale, "the candidate's mean absolute episode reward"


def verdict(low: float, high: float, tolerance: float, upper_bound: float | None = None) -> str:
    """SPEC §5 step 4: refuted if ``low > tolerance``; consistent if ``high < tolerance`` and the oracle's upper
    bound on the regret over its strategy class, when it gives one, is below ``tolerance`` too; else
    inconclusive."""
    if low > tolerance:
        return "refuted"
    if high < tolerance and (upper_bound is None or upper_bound < tolerance):
        return "consistent"
    return "inconclusive"


def profile_verdict(verdicts: Sequence[str]) -> str:
    """The profile's verdict from its players': refuted if any is, consistent if all are, else inconclusive."""
    if "refuted" in verdicts:
        return "refuted"
    return "consistent" if all(v == "consistent" for v in verdicts) else "inconclusive"


def caveats(
    diffs: np.ndarray, high: float, upper_bound: float | None, plateau: bool | None, tolerance: float
) -> list[str]:
    """What a reader of a player's verdict should know that the numbers do not say."""
    notes = []
    if diffs.size and not np.any(diffs) and upper_bound is None:  # a bound covers what the search missed
        notes.append(
            "the reply played exactly as the candidate on every episode: its interval is [0, 0] whatever "
            "the number of episodes, and says nothing of what the search missed"
        )
    if upper_bound is not None and np.isfinite(upper_bound) and high < tolerance <= upper_bound:
        notes.append(
            f"no reply found gains {tolerance:g}, but the grid's upper bound {upper_bound:.5f} does not "
            "exclude one: more grid points or episodes per point"
        )
    if plateau is False:
        notes.append("the learning curve had not levelled off: a longer search may find a better reply")
    return notes


@dataclass
class Reply:
    """One oracle's reply to a player, played against the candidate on the evaluation episodes: the regret (mean
    paired difference ``diffs``) and its interval."""

    found: OracleResult
    regret: float
    ci: tuple[float, float]
    diffs: np.ndarray


@dataclass
class PlayerCheck:
    """The check of one player (one per type in symmetric games)."""

    agent: str
    verdict: str
    regret: float
    ci: list[float]
    candidate: dict[str, float]
    learned: dict[str, float]
    predicted: dict[str, float] | None
    distance_to_prediction: float | None
    oracle: str
    proves: str
    upper_bound: float | None
    budget: dict[str, Any]
    plateau: bool | None
    search: dict[str, Any] | None = None  # the bounding grid's search: points evaluated, largest cell bound left
    curves: list[list[list[float]]] = field(default_factory=list)
    represents: list[str] = field(default_factory=list)
    other_oracles: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    diverged: dict[str, int] = field(default_factory=dict)  # per oracle: paired episodes left out as diverged


@dataclass
class NashReport:
    """The result of :func:`nash_check`; ``to_json``, ``to_markdown`` and ``save`` (with PNG plots)."""

    env: str
    mechanisms: list[str]
    config: dict[str, Any]
    profile: str
    players: list[PlayerCheck]
    episodes: int
    level: float
    tolerance: float
    interval: str
    seed: int
    checked: str
    batch_size: int
    reward_scale: float = float("nan")
    reward_scale_of: str = ""
    tolerance_given: str = ""

    @property
    def tolerance_relative(self) -> float:
        """The tolerance as a share of :attr:`reward_scale` (NaN where the scale is 0)."""
        return self.tolerance / self.reward_scale if self.reward_scale else float("nan")

    def tolerance_text(self) -> str:
        """Both readings of the tolerance: ``0.005 (1.43% of 0.35, the candidate's mean squared error)``; the
        first alone where the scale is unknown (every episode that would measure it diverged) or 0."""
        if not np.isfinite(self.tolerance_relative):
            why = "every episode measuring it diverged" if np.isnan(self.reward_scale) else "it is 0"
            return f"{self.tolerance:.4g} (given as {self.tolerance_given}; no reward scale: {why})"
        return (
            f"{self.tolerance:.4g} ({self.tolerance_relative:.3g} = {100 * self.tolerance_relative:.3g}% of "
            f"{self.reward_scale:.4g}, {self.reward_scale_of}; given as {self.tolerance_given})"
        )

    @property
    def nash_conv(self) -> float:
        """``sum_i max(eps_i, 0)``; a player checked for its type counts once per member of the type. NaN when a
        player's regret has no estimate (its paired episodes diverged: see its notes)."""
        if any(np.isnan(p.regret) for p in self.players):
            return float("nan")
        return float(sum(max(p.regret, 0.0) * len(p.represents) for p in self.players))

    @property
    def nash_conv_interval(self) -> list[float]:
        """``[sum_i max(low_i, 0), sum_i max(high_i, U_i, 0)]`` (per member of a type, as :attr:`nash_conv`; ``U_i``
        a grid's upper bound where there is one, as in each player's bracket): it holds whenever every player's
        interval does, so at confidence at least :attr:`joint_level`. Under learned oracles alone its upper end
        bounds what the replies found, not NashConv itself."""
        low = sum(max(p.ci[0], 0.0) * len(p.represents) for p in self.players)
        high = sum(
            max(p.ci[1], p.upper_bound if p.upper_bound is not None else 0.0, 0.0) * len(p.represents)
            for p in self.players
        )
        return [float(low), float(high)]

    @property
    def joint_level(self) -> float:
        """The confidence at which all checked players' intervals hold at once (Bonferroni: ``1 - n (1 -
        level)``, at least 0), which the profile's verdict and :attr:`nash_conv_interval` have."""
        return max(0.0, 1.0 - len(self.players) * (1.0 - self.level))

    @property
    def verdict(self) -> str:
        """The profile's verdict (:func:`profile_verdict`)."""
        return profile_verdict([p.verdict for p in self.players])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["nash_conv"] = self.nash_conv
        data["nash_conv_interval"] = self.nash_conv_interval
        data["verdict"] = self.verdict
        data["joint_level"] = self.joint_level
        data["tolerance_relative"] = self.tolerance_relative
        for player in data["players"]:
            player["bracket"] = [player["ci"][0], player["upper_bound"]] if player["upper_bound"] is not None else None
        data["method"] = (
            f"paired {self.interval} interval at level {self.level} per player (jointly at least "
            f"{self.joint_level:.3g}), {self.episodes} episodes per estimate with common random "
            f"numbers, {self.batch_size} at a time; verdict tolerance {self.tolerance_text()}"
        )
        return data

    def to_json(self) -> str:
        """:meth:`to_dict` as strict JSON (:func:`fedgames.files.json_text`: NaN, e.g. the NashConv of a diverged
        check, is ``null``, listed under ``non_finite``)."""
        return json_text(self.to_dict())

    def to_markdown(self) -> str:
        """:func:`~fedgames.eval.nash_render.render_markdown`."""
        return render_markdown(self)

    def save(self, out: str | Path) -> list[Path]:
        """Write ``report.json``, ``report.md``, ``regret.png`` and, for learned oracles, ``learning_curves.png``."""
        from fedgames.eval.plots import plot_learning_curves, plot_regret

        out = Path(out)
        write_atomic(out / "report.json", self.to_json())
        write_atomic(out / "report.md", self.to_markdown())
        written = [out / "report.json", out / "report.md", plot_regret(self, out / "regret.png")]
        if any(p.curves for p in self.players):
            written.append(plot_learning_curves(self, out / "learning_curves.png"))
        return written


def player_types(env: ParallelEnv, policies: Mapping[str, Policy]) -> list[list[str]]:
    """Groups of interchangeable players: same per-player config (the game's
    :meth:`~fedgames.envs.contract.GameEnv.player_traits`: ``lam``, ``sigma`` ...) and the same candidate policy
    (equal constant actions, or the same object)."""
    traits = game_of(env).player_traits()

    def key(i: int, agent: str) -> tuple:
        policy = policies[agent]
        strategy = tuple(policy.action) if isinstance(policy, ConstantPolicy) else id(policy)
        return tuple(float(v) for v in traits[i]) + (strategy,)

    groups: dict[tuple, list[str]] = {}
    for i, agent in enumerate(env.possible_agents):
        groups.setdefault(key(i, agent), []).append(agent)
    return list(groups.values())


SUMMARY_EPISODES = 4096
"""At most this many episodes describe a strategy in a report (its mean actions)."""


def nash_check(
    env: ParallelEnv,
    policies: Mapping[str, Policy],
    oracle: LearnedOracle | GridOracle | Sequence[LearnedOracle | GridOracle],
    profile_name: str = "custom",
    players: str | Sequence[str] = "all",
    episodes: int = 20_000,
    level: float = 0.95,
    tolerance: float | str = 5e-3,
    interval: str = "normal",
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> NashReport:
    """Check whether ``policies`` (one per agent) is an equilibrium of ``env`` (mechanisms included).

    Args:
        env: a fedgames env that :func:`~fedgames.envs.batch.episode_batch` knows (the one-round games and the
            multi-round ``fedsgd_v0``, whose episodes are played round by round).
        policies: the candidate profile.
        oracle: a :class:`~fedgames.train.oracles.LearnedOracle` or :class:`~fedgames.train.oracles.GridOracle`,
            or several: each searches, all replies are played on the same evaluation episodes (each interval at
            the Bonferroni level ``1 - (1 - level) / n``), the one with the largest regret is reported (the best
            lower bound), the interval ``[max low, max high]`` covers the largest regret among them, and the
            tightest upper bound closes the bracket.
            Called as ``best_response(env, player, policies, seed=..., batch_size=...)``.
        profile_name: how the report names the candidate.
        players: ``"all"``, ``"symmetric"`` (one player per type, see :func:`player_types`) or a list of agents.
        episodes: fresh episodes for each paired regret estimate, at least 2 (fewer than :data:`SMALL_SAMPLE`
            warns), and, up to :data:`SUMMARY_EPISODES`, for the summaries of the candidate's and the replies'
            actions.
        level: confidence level of each player's interval (the profile's verdict holds at ``1 - n (1 - level)``
            for ``n`` checked players: :attr:`NashReport.joint_level`).
        tolerance: the verdict's ``tau`` (an epsilon-equilibrium threshold): in reward units (0.005 by default), or
            a percentage string (``"1%"``) of the candidate's reward scale (:func:`reward_scale`). The report
            states both readings.
        interval: ``"normal"`` or ``"bootstrap"``.
        seed: seeds the oracle and (apart from it) the evaluation episodes.
        batch_size: episodes played at once by every simulation of the check (the oracles' included): an integer
            >= 1, or ``None`` for the env's default (:func:`~fedgames.envs.batch.resolve_batch_size`: 65,536 for a
            one-round game, fewer for ``fedsgd_v0`` with a large model, e.g. 3 runs of the FEMNIST CNN with 3
            clients per round). Lower it when memory runs out. The episodes are reproducible by ``seed`` and
            ``batch_size`` (each batch draws its episodes as a whole); candidate and replies always share them.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if episodes < 2:
        raise ValueError(f"episodes must be >= 2, got {episodes}")
    if episodes < SMALL_SAMPLE:
        warnings.warn(
            f"nash_check: episodes={episodes} < {SMALL_SAMPLE}: the intervals may cover less than their "
            f"level {level} (see fedgames.eval.nash.SMALL_SAMPLE)",
            stacklevel=2,
        )
    amount, relative = parse_tolerance(tolerance)
    batch_size = resolve_batch_size(env, batch_size)
    oracles = list(oracle) if isinstance(oracle, Sequence) else [oracle]
    agents = list(env.possible_agents)
    missing = [a for a in agents if a not in policies]
    if missing:
        raise ValueError(f"policies: no policy for {missing}")
    if players == "all":
        groups, checked = [[a] for a in agents], "every player checked"
    elif players == "symmetric":
        groups = player_types(env, policies)
        checked = f"one player per type ({len(groups)} type(s); NashConv counts each type's regret per member)"
    else:
        unknown = [a for a in players if a not in agents]
        if unknown:
            raise ValueError(f"players: unknown agents {unknown}; agents: {agents}")
        groups, checked = [[a] for a in players], f"players {list(players)} checked"
    theory = closed_form(env)
    evaluation_seed = seed + 7_919
    baseline = simulate(env, policies, episodes, seed=evaluation_seed, batch_size=batch_size)
    # a relative tolerance reads the scale off episodes of its own, so that tau does not move with the estimates;
    # an absolute one only states it, from the evaluation episodes
    scale, scale_of = reward_scale(
        simulate(env, policies, min(SUMMARY_EPISODES, episodes), seed=seed + 104_729, batch_size=batch_size)
        if relative
        else baseline
    )
    if relative and not scale > 0:
        raise ValueError(f"tolerance {tolerance!r}: the reward scale ({scale_of}) is {scale:g}; give reward units")
    tolerance = amount * scale if relative else amount

    def summary(agent: str, policy: Policy) -> dict[str, float]:  # descriptive: no more episodes than the estimates
        return summarize_policy(
            env,
            agent,
            policy,
            episodes=min(SUMMARY_EPISODES, episodes),
            seed=seed,
            profile=policies,
            batch_size=batch_size,
        )

    results = []
    reply_level = 1 - (1 - level) / len(oracles)  # Bonferroni: all replies' intervals hold at once at `level`
    for group in tqdm(groups, desc="players", disable=not progress):
        agent = group[0]
        index = agents.index(agent)
        replies = []
        diverged: dict[str, int] = {}
        for each in oracles:
            aim = {"tolerance": tolerance} if isinstance(each, GridOracle) else {}  # where its refinement aims
            found = each.best_response(env, agent, policies, seed=seed, batch_size=batch_size, **aim)
            replied = simulate(
                env, {**policies, agent: found.policy}, episodes, seed=evaluation_seed, batch_size=batch_size
            )
            kept = baseline.kept & replied.kept  # a pair is left out when either episode diverged
            diverged[found.oracle] = int(episodes - kept.sum())
            diffs = replied.rewards[kept, index] - baseline.rewards[kept, index]
            replies.append(Reply(found, *regret_estimate(diffs, reply_level, interval, seed), diffs))
        best = max(replies, key=lambda r: r.regret)  # the best lower bound, reported as the reply
        found = best.found
        low, high = (max(r.ci[k] for r in replies) for k in (0, 1))  # holds for the largest regret of the replies
        bounded = [(r.found.upper_bound, r.found) for r in replies if r.found.upper_bound is not None]
        upper, tightest = min(bounded, key=lambda pair: pair[0]) if bounded else (None, None)
        learned = summary(agent, found.policy)
        predicted, distance = _prediction(env, theory, policies, index, learned)
        results.append(
            PlayerCheck(
                agent=agent,
                verdict=verdict(low, high, tolerance, upper),
                regret=best.regret,
                ci=[low, high],
                candidate=summary(agent, policies[agent]),
                learned=learned,
                predicted=predicted,
                distance_to_prediction=distance,
                oracle=found.oracle,
                proves=found.proves,
                upper_bound=upper,
                search=None if tightest is None else tightest.search,
                budget=found.budget,
                plateau=found.plateau,
                curves=found.curves,
                represents=group,
                other_oracles=[
                    {
                        "oracle": r.found.oracle,
                        "proves": r.found.proves,
                        "regret": r.regret,
                        "ci": list(r.ci),
                        "upper_bound": r.found.upper_bound,
                        "budget": r.found.budget,
                        "learned": summary(agent, r.found.policy),
                    }
                    for r in replies
                    if r is not best
                ],
                notes=caveats(best.diffs, high, upper, found.plateau, tolerance)
                + divergence_notes(diverged, episodes)
                + [note for r in replies for note in r.found.notes],  # the oracles' own (the grid's diverged points)
                diverged=diverged,
            )
        )
    mechanisms = [m.spec() for m in env.protocol.mechanisms]
    config = game_of(env).config.to_dict()
    return NashReport(
        env=env.metadata["name"],
        mechanisms=mechanisms,
        config=config,
        profile=profile_name,
        players=results,
        episodes=episodes,
        level=level,
        tolerance=tolerance,
        reward_scale=scale,
        reward_scale_of=scale_of,
        tolerance_given=f"{100 * amount:g}%" if relative else "reward units",
        interval=interval,
        seed=seed,
        checked=checked,
        batch_size=batch_size,
    )


def _prediction(
    env: ParallelEnv, theory: Any, policies: Mapping[str, Policy], index: int, learned: Mapping[str, float]
) -> tuple[dict[str, float] | None, float | None]:
    """The closed form's best reply (when the game has one and the candidate is constant) and the distance of
    the found reply's mean action to it."""
    if theory is None:
        return None, None
    actions = constant_actions(env, policies)
    if actions is None:
        return None, None
    names = env.protocol.action_names
    best = theory.best_response(actions, index)
    mean_found = np.array([learned[name] for name in names])
    return summarize_actions(names, best), float(np.linalg.norm(mean_found - best))
