"""The game contract: what every fedgames env offers the generic layers (the CLI, ``eval``, ``train``, ``agents``).

The generic code reads a game only through this module: ``game_of(env)`` is the unwrapped :class:`GameEnv` of a
(mechanism-wrapped) env, and a third-party game that subclasses :class:`GameEnv` and is registered with
:func:`fedgames.register` (or the ``fedgames.envs`` entry point) gets ``fedgames simulate``, ``check``, ``train``
and the sweeps without any change to them.

A :class:`GameEnv` is a PettingZoo ``ParallelEnv`` with a :class:`~fedgames.envs.protocol.Protocol` (SPEC §4: the
server's named stages, each replaceable by one mechanism) and:

- ``config``: its configuration, a frozen :class:`GameConfig` dataclass (the convention below);
- ``rounds``: the horizon, env steps per episode (1 for a one-round game);
- ``episode_batch(protocol, size, rng)``: ``size`` episodes advanced together
  (:class:`~fedgames.envs.batch.EpisodeBatch`: the fast path every batched tool drives);
- ``default_batch_size``: episodes those tools hold at once unless told (:data:`~fedgames.envs.batch.BATCH_SIZE`);
- ``messages_per_round``: messages the server aggregates per round (what aggregation rules are checked against);
- ``validate_protocol(protocol)``: reject stages the game cannot play (called when a mechanism wraps it);
- ``honest_policies(protocol)`` and the named scripted profiles (``profile_names``, :meth:`GameEnv.named_policies`,
  :meth:`GameEnv.policies_from_values`): what ``--profile`` means for this game;
- ``grid_components``: the action components the grid oracle searches (by default all of them);
- ``player_traits()``: the per-player configuration that tells players apart (the Nash check's player types);
- ``theory(protocol)``: an optional closed-form :class:`TheoryAdapter` (the predicted equilibrium, the exact best
  reply and payoff, the payoff's slope ranges for the grid's upper bound, and the theory-vs-simulation
  expectations), ``None`` where the game has none.

Config convention
-----------------
Each game declares its configuration once, as a frozen dataclass subclassing :class:`GameConfig` (the env's
docstring table is generated from it), one field per parameter, each with its default and its check:
``n_players: int = param(3, at_least(2))``. ``Config(**kwargs)`` validates every field in declaration order
(so a check may read the fields before it, e.g. per-player values read ``n_players``), storing the normalised
value (an ``int``, a ``float``, a per-player ``np.ndarray``); a bad value is a ``ValueError`` naming the parameter
and its allowed range, an unknown name a ``ValueError`` with a did-you-mean (:meth:`GameConfig.from_kwargs`).
Cross-field rules go in :meth:`GameConfig.validate`. The same concept has the same name in every game:
``n_players`` (participants), ``rounds`` (horizon), ``lam`` (the weight on one's own loss), ``alpha_max`` (the
top of the aggressiveness range), ``*_noise`` for noise scales; payments and their strength ``C`` belong to the
mechanisms, not to a game's config; another spelling (``n_clients``, ``horizon``) gets a did-you-mean naming the
game's own (:data:`fedgames.envs.config.SYNONYMS`). ``config.to_dict()`` is the JSON-ready record reports and
checkpoints keep (compare configs by it: array fields make ``==`` on the dataclass ambiguous).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, runtime_checkable
from typing import Protocol as Protocol_

import numpy as np
from pettingzoo import ParallelEnv

from fedgames.envs.base import ProtocolEnv
from fedgames.envs.batch import BATCH_SIZE, EpisodeBatch
from fedgames.envs.config import GameConfig, at_least, each_player, flag, number, one_of, param
from fedgames.envs.policy import Policy, constant_policies
from fedgames.envs.protocol import Protocol
from fedgames.errors import did_you_mean

SlopeRange = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``(lower, upper) -> (smallest, largest)`` payoff slope per component over that box."""


class TheoryAdapter(ABC):
    """A game's closed forms under one env's mechanisms, in terms of constant action profiles ``(N, k)``.

    The Nash check uses :meth:`best_response` (the predicted reply it reports beside the learned one) and the grid
    oracle :meth:`slope_ranges` (its upper bound on regret); ``fedgames simulate`` uses
    :meth:`predicted_actions` (``--profile theory``), :meth:`expected` (theory vs simulation) and :meth:`payoff`
    (the reward-against-own-action plot).

    Args:
        protocol: the protocol the closed forms describe (the env's outermost): its action names and bounds.
    """

    def __init__(self, protocol: Protocol) -> None:
        self.action_names = tuple(protocol.action_names)
        self.low, self.high = np.asarray(protocol.action_low, float), np.asarray(protocol.action_high, float)

    @abstractmethod
    def payoff(self, actions: np.ndarray, i: int) -> float:
        """Player ``i``'s expected episode reward when every player plays its row of ``actions``."""

    @abstractmethod
    def best_response(self, actions: np.ndarray, i: int) -> np.ndarray:
        """Player ``i``'s exact best reply ``(k,)`` to the others' rows of ``actions``."""

    @abstractmethod
    def predicted_actions(self) -> np.ndarray:
        """The equilibrium the closed form predicts ``(N, k)`` (``ValueError`` where it predicts none)."""

    @abstractmethod
    def expected(self, actions: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
        """Per quantity, the closed form's expectation ``(N,)`` under ``actions`` and the Monte Carlo record it is
        compared with (a field of :class:`~fedgames.agents.rollout.Episodes`: ``rewards``, ``payments``, or a
        game record such as ``sq_error``)."""

    def slope_ranges(self, actions: np.ndarray, i: int, base: np.ndarray, columns: list[int]) -> SlopeRange:
        """Bounds on player ``i``'s payoff slopes for the grid oracle's upper bound on regret: a function
        ``(lower, upper) -> (smallest, largest)`` of ``dE R_i / da_c`` for the components ``columns`` over the box
        ``lower <= a[columns] <= upper`` (``i``'s other components at ``base``, the others playing ``actions``).

        By default ``-L, +L`` on every box, with ``L`` the largest slope over the whole action range, from
        :meth:`payoff` on a 101-point grid per axis: a first difference is the slope at some point of its step
        (mean value theorem) and the slope moves by at most ``h sup|u''|`` within a step, so ``max|first
        difference|/h + max|second difference|/h`` bounds it, up to the error of the second-difference estimate
        of ``sup|u''|`` (``O(h)`` smaller for smooth payoffs). A game with exact ranges overrides this."""
        points = 101
        trial_actions = np.array(actions, dtype=float)
        trial_actions[i] = base
        axes = [np.linspace(self.low[c], self.high[c], points) for c in columns]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(columns))
        values = np.empty(len(grid))
        for g, point in enumerate(grid):
            trial = trial_actions.copy()
            trial[i, columns] = point
            values[g] = self.payoff(trial, i)
        table = values.reshape([points] * len(columns))
        bound = np.zeros(len(columns))
        for k, c in enumerate(columns):
            if self.high[c] > self.low[c]:
                h = axes[k][1] - axes[k][0]
                bound[k] = (np.max(np.abs(np.diff(table, axis=k))) + np.max(np.abs(np.diff(table, n=2, axis=k)))) / h
        return lambda lower, upper: (-bound, bound)

    def describe(self, actions: np.ndarray) -> dict[str, list]:
        """A profile as JSON-ready ``{name: per-player values}`` for reports (by default one list per action
        component; the report's one-line summary shows the entries with one number per player)."""
        return {name: actions[:, k].tolist() for k, name in enumerate(self.action_names)}


STAGE_COPIES = 6
"""Arrays of one player's observation-plus-action size that a batched step holds per episode at its peak (the
default :attr:`GameEnv.episode_bytes`): the mean-estimation game's batch of 4,096 episodes of 1,000 players in
2 dimensions peaked at about 4 of them (docs/benchmarks.md), and 6 leave a margin."""


class GameEnv(ProtocolEnv, ABC):
    """The contract every fedgames env implements (this module's docstring lists what it offers).

    Subclasses set ``config`` (a :class:`GameConfig`), ``protocol``, ``possible_agents`` and the spaces in their
    ``__init__``, and implement :meth:`episode_batch` and :meth:`honest_policies`; the rest has defaults.
    """

    config: GameConfig
    rounds: int = 1
    """The horizon: env steps per episode (every episode of a batch has this many)."""

    profile_names: ClassVar[tuple[str, ...]] = ("honest",)
    """The named profiles ``--profile`` accepts (:meth:`named_policies`)."""

    profile_keys: ClassVar[tuple[str, ...]] = ()
    """The keys of a ``'key=value;...'`` profile (:meth:`policies_from_values`); empty: the action names."""

    profile_defaults: ClassVar[Mapping[str, float]] = {}
    """The value of an action component a values profile leaves out (0 where not listed)."""

    grid_components: ClassVar[tuple[str, ...]] = ()
    """The action components ``fedgames check --oracle grid`` searches over; empty: all of them."""

    @abstractmethod
    def episode_batch(self, protocol: Protocol, size: int, rng: np.random.Generator) -> EpisodeBatch:
        """``size`` episodes of this game under ``protocol`` (a mechanism-wrapped env's), advanced together."""

    @property
    def default_batch_size(self) -> int:
        """Episodes the batched tools play at once unless given a ``batch_size``."""
        return BATCH_SIZE

    @property
    def episode_bytes(self) -> int:
        """About how much memory one episode of a batch takes while a step runs (what
        :func:`~fedgames.envs.batch.resolve_batch_size` checks against the machine's memory): by default
        :data:`STAGE_COPIES` float64 copies of every player's observation and action (the stages' messages,
        responses, estimates and temporaries are of that size)."""
        width = sum(
            math.prod(space.shape or ())
            for agent in self.possible_agents[:1]
            for space in (self.observation_space(agent), self.action_space(agent))
        )
        return 8 * STAGE_COPIES * len(self.possible_agents) * width

    @abstractmethod
    def honest_policies(self, protocol: Protocol) -> dict[str, Policy]:
        """Honest play under ``protocol`` as one policy per agent (the profile mechanisms aim to make an
        equilibrium)."""

    def named_policies(self, name: str, protocol: Protocol) -> dict[str, Policy]:
        """The named profile ``name`` (one of :attr:`profile_names`) under ``protocol`` (a mechanism-wrapped env's);
        by default ``honest`` alone."""
        if name == "honest":
            return self.honest_policies(protocol)
        raise ValueError(f"unknown profile {name!r}{did_you_mean(name, self.profile_names)}")

    def policies_from_values(self, values: Mapping[str, Any]) -> dict[str, Policy]:
        """Constant policies from ``values`` (keys among :attr:`profile_keys`, or the action names; each one value
        or one per player), missing components at :attr:`profile_defaults` (else 0)."""
        n = len(self.possible_agents)
        columns = [
            per_player_values(values, name, (n,), self.profile_defaults.get(name, 0.0))
            for name in self.protocol.action_names
        ]
        return constant_policies(np.stack(columns, axis=-1), self.possible_agents)

    def player_traits(self) -> np.ndarray:
        """``(N, m)``: the per-player configuration values (the config's per-player fields) that tell players apart;
        players with equal rows and equal policies are interchangeable."""
        names = self.config.per_player_names()
        n = len(self.possible_agents)
        return np.stack([np.broadcast_to(getattr(self.config, name), (n,)) for name in names], axis=-1).reshape(n, -1)

    def theory(self, protocol: Protocol) -> TheoryAdapter | None:
        """The closed forms of this game under ``protocol`` (a mechanism-wrapped env's), or ``None`` where there
        are none."""
        return None


def per_player_values(values: Mapping[str, Any], key: str, shape: tuple[int, ...], default: float = 0.0) -> np.ndarray:
    """``values[key]`` (``default`` when absent) broadcast to ``shape``, whose first axis is the players
    (``ValueError`` naming ``key`` for anything but numbers: a ``null``, a string, a nested object)."""
    given = values.get(key, default)
    numbers = (int, float, np.integer, np.floating)
    flat = np.ravel(np.asarray(given, dtype=object)) if isinstance(given, (list, tuple, np.ndarray)) else [given]
    if not all(isinstance(v, numbers) and not isinstance(v, bool) for v in flat):
        raise ValueError(f"{key} takes numbers (one value or one per player), got {given!r}")
    try:
        value = np.asarray(given, dtype=float)
    except ValueError:
        raise ValueError(f"{key} takes numbers (one value or one per player), got {given!r}") from None
    try:
        return np.broadcast_to(value, shape)
    except ValueError:
        raise ValueError(f"{key} takes one value or one per player ({shape[0]}), got {value.size} values") from None


@runtime_checkable
class ActionProfile(Protocol_):
    """Anything that lists a constant action per player (the mean-estimation ``Profile``)."""

    def actions(self) -> np.ndarray: ...


def as_actions(profile: ActionProfile | np.ndarray) -> np.ndarray:
    """A constant profile's actions ``(N, k)``: ``profile.actions()``, or the array itself."""
    return np.asarray(profile.actions() if isinstance(profile, ActionProfile) else profile, dtype=float)


def closed_form(env: ParallelEnv) -> TheoryAdapter | None:
    """The closed forms of ``env`` with its mechanisms (:meth:`GameEnv.theory`), or ``None`` where there are none."""
    return game_of(env).theory(env.protocol)


def game_of(env: ParallelEnv) -> GameEnv:
    """The :class:`GameEnv` under ``env``'s mechanism wrappers (``ValueError`` for an env that does not implement
    the contract)."""
    game = env.unwrapped
    if not isinstance(game, GameEnv):
        raise ValueError(
            f"{type(game).__name__} does not implement fedgames.envs.contract.GameEnv, which the generic tools need"
        )
    return game


__all__ = [
    "ActionProfile",
    "GameConfig",
    "game_of",
    "GameEnv",
    "TheoryAdapter",
    "as_actions",
    "at_least",
    "closed_form",
    "each_player",
    "flag",
    "number",
    "one_of",
    "param",
    "per_player_values",
]
