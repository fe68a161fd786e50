"""The game configuration convention (:mod:`fedgames.envs.contract` describes it): a frozen dataclass per game,
every field declared with its default and its check, validated in one way for all games. Imports numpy alone, so
the batched game stages that hold a config run without PettingZoo."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from fedgames.errors import did_you_mean
from fedgames.memory import check_fits
from fedgames.validation import integer, per_player, real

Check = Callable[[str, Any, Any], Any]
"""A field's check: ``check(name, value, config) -> normalised value``, raising ``ValueError`` naming ``name``."""

C = TypeVar("C", bound="GameConfig")


def param(default: Any, check: Check | None = None, per_player: bool = False) -> Any:
    """A :class:`GameConfig` field with its ``default`` and ``check``; ``per_player``: its value is one number per
    player (what :meth:`GameEnv.player_traits` reads)."""
    return dataclasses.field(default=default, metadata={"check": check, "per_player": per_player})


def at_least(minimum: int, maximum: int | None = None) -> Check:
    """An integer in ``[minimum, maximum]`` (:func:`fedgames.validation.integer`)."""
    return lambda name, value, config: integer(name, value, minimum, maximum)


PLAYER_BYTES = 4096
"""About what one player costs an env before any episode is played (its name, its two spaces): 3.9 kB each for
the mean-estimation game of 100,000 players. :func:`players` checks the total against the machine's memory."""


def players(minimum: int = 2) -> Check:
    """A number of players: an integer ``>= minimum`` whose env fits in memory (``n * PLAYER_BYTES`` within
    :func:`fedgames.memory.memory_budget`), refused before any player is built."""

    def check(name: str, value: Any, config: Any) -> int:
        n = integer(name, value, minimum)
        check_fits(f"{config.game} with {name}={n}", n * PLAYER_BYTES)
        return n

    return check


SCALE_MAX = 1e15
"""The largest magnitude a game's scale parameter may take (a noise level, a payment rate, a bound, a value or
cost, a prior spread): the games observe in float32 (largest finite value about ``3.4e38``) and square the errors
and score deviations they pay on, so a quantity a few times ``SCALE_MAX`` stays finite squared (``1e30``) and
multiplied by another such parameter (a rate times a score, ``1e30``), in float32 as in float64. Larger values
overflowed the float32 observations to ``inf`` (a ``RuntimeWarning`` and an observation outside its space)
instead of being refused; no game's meaningful range comes near it."""


SCALE_MIN = 1e-15
"""The smallest non-zero noise level or spread a game takes: squared, ``1e-30``, a normal float, and a quantity up to
``SCALE_MAX`` squared divided by it (a likelihood ratio's ``(delta - gamma q0)(s - q0) / sigma^2``, a squared
error's spread) stays far within float64 (``1e60``). Below it such ratios overflowed (``1e-300`` squared is 0)."""


def noise_level() -> Check:
    """A noise level: 0 (noiseless) or a finite number in ``[SCALE_MIN, SCALE_MAX]``."""

    def check(name: str, value: Any, config: Any) -> float:
        x = real(name, value, 0.0, SCALE_MAX)
        if 0 < x < SCALE_MIN:
            raise ValueError(f"{name} must be 0 (noiseless) or in [{SCALE_MIN:g}, {SCALE_MAX:g}], got {value!r}")
        return x

    return check


def number(minimum: float = 0.0, maximum: float = float("inf"), strict: bool = False) -> Check:
    """A finite float in ``[minimum, maximum]``, open at ``minimum`` with ``strict``."""
    return lambda name, value, config: real(name, value, minimum, maximum, strict=strict)


def each_player(
    minimum: float = 0.0, strict: bool = False, players: str = "n_players", maximum: float = float("inf")
) -> Check:
    """One number for everybody or one per player (the config's ``players`` field counts them), each in
    ``[minimum, maximum]`` (open at ``minimum`` with ``strict``), as an array."""
    return lambda name, value, config: per_player(
        name, value, getattr(config, players), minimum, strict=strict, maximum=maximum
    )


def one_of(choices: Sequence[Any]) -> Check:
    """One of ``choices`` (a string gets a did-you-mean)."""

    def check(name: str, value: Any, config: Any) -> Any:
        if value not in choices:
            close = did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) else ""
            raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}{close}")
        return value

    return check


def flag() -> Check:
    """``True`` or ``False``."""

    def check(name: str, value: Any, config: Any) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return bool(value)

    return check


SYNONYMS = {
    "n_clients": "n_players",
    "num_players": "n_players",
    "players": "n_players",
    "num_rounds": "rounds",
    "horizon": "rounds",
    "T": "rounds",
    "lambda_": "lam",
    "lmbda": "lam",
    "outside": "outside_option",
}
"""Other spellings of the shared vocabulary (the config convention of :mod:`fedgames.envs.contract`): an unknown
parameter spelt one of these ways gets a did-you-mean naming the game's own name."""


def name_hint(name: str, names: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for an unknown parameter ``name``: the shared vocabulary's own spelling where
    ``name`` is one of its :data:`SYNONYMS` and ``names`` has it, else the close matches among ``names`` (or ``""``)."""
    ours = SYNONYMS.get(name)
    return f"; did you mean {ours!r}?" if ours in names else did_you_mean(name, names)


@dataclasses.dataclass(frozen=True)
class GameConfig:
    """Base of every game's configuration (the convention in this module's docstring).

    Subclasses are frozen dataclasses whose fields are :func:`param` s; ``game`` (a class variable) is the env's
    name, used in error messages.
    """

    game: ClassVar[str] = "game"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check = field.metadata.get("check")
            if check is not None:
                object.__setattr__(self, field.name, check(field.name, getattr(self, field.name), self))
        self.validate()

    def validate(self) -> None:
        """Rules that read several fields (after each field's own check); none by default."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The parameter names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_kwargs(cls: type[C], **kwargs: Any) -> C:
        """The config of ``kwargs``; an unknown name is a ``ValueError`` naming the close matches, or this game's
        name for a concept another game or paper spells differently (:data:`SYNONYMS`)."""
        names = cls.names()
        for name in kwargs:
            if name not in names:
                raise ValueError(
                    f"{cls.game}: unknown parameter {name!r}{name_hint(name, names)} (parameters: {list(names)})"
                )
        return cls(**kwargs)

    def per_player_names(self) -> tuple[str, ...]:
        """The fields that hold one value per player."""
        return tuple(f.name for f in dataclasses.fields(self) if f.metadata.get("per_player"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{name: value}`` (arrays as lists), in declaration order."""
        return {name: _plain(getattr(self, name)) for name in self.names()}


def _plain(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


__all__ = [
    "PLAYER_BYTES",
    "SCALE_MAX",
    "SCALE_MIN",
    "Check",
    "GameConfig",
    "at_least",
    "each_player",
    "flag",
    "name_hint",
    "number",
    "noise_level",
    "one_of",
    "param",
    "players",
]
