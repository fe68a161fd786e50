"""Parameter checks with clear errors: each names the parameter, the value given and the allowed range."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, SupportsFloat, SupportsIndex, cast

import numpy as np

from fedgames.errors import did_you_mean


def integer(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (booleans and non-integral floats are refused)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        number = int(value)
        if number >= minimum and (maximum is None or number <= maximum):
            return number
    allowed = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
    raise ValueError(f"{name} must be {allowed}, got {value!r}")


def real(
    name: str,
    value: object,
    minimum: float = 0.0,
    maximum: float = float("inf"),
    strict: bool = False,
    strict_maximum: bool = False,
) -> float:
    """``value`` as a finite ``float`` in ``[minimum, maximum]``; ``strict`` / ``strict_maximum`` open an end."""
    try:
        if isinstance(value, (bool, np.bool_, str)) or not isinstance(value, (SupportsFloat, SupportsIndex)):
            raise TypeError
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if (
        not np.isfinite(x)
        or x < minimum
        or x > maximum
        or (strict and x == minimum)
        or (strict_maximum and x == maximum)
    ):
        if maximum == float("inf"):
            allowed = f"> {minimum:g}" if strict else f">= {minimum:g}"
        else:
            allowed = f"in {'(' if strict else '['}{minimum:g}, {maximum:g}{')' if strict_maximum else ']'}"
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return x


def per_player(
    name: str,
    value: object,
    n_players: int,
    minimum: float = 0.0,
    strict: bool = False,
    maximum: float = float("inf"),
) -> np.ndarray:
    """One number for everybody or one per player, each a finite number in ``[minimum, maximum]`` (open at
    ``minimum`` with ``strict``) checked by :func:`real` (its error names the parameter, the player's index where
    one per player is given, and the allowed range), as an array ``(n_players,)``."""
    if np.ndim(value) == 0:  # type: ignore[arg-type]  # numpy's stubs want an ArrayLike; any object is 0-d or not
        return np.full(n_players, real(name, value, minimum, maximum, strict=strict))
    values = list(cast(Iterable[object], value))
    if len(values) != n_players:
        raise ValueError(f"{name} must be one number or one per player ({n_players}), got {len(values)} values")
    return np.array([real(f"{name}[{i}]", v, minimum, maximum, strict=strict) for i, v in enumerate(values)])


def check_call(
    owner: str, function: Callable[..., Any], given: dict[str, Any], skip: int = 1, also_allowed: tuple[str, ...] = ()
) -> None:
    """Raise a ``ValueError`` if ``given`` has a keyword ``function`` does not take (with a 'did you mean') or
    lacks one it requires; the first ``skip`` positional parameters are not counted."""
    parameters = list(inspect.signature(function).parameters.values())[skip:]
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    allowed = named + list(also_allowed)
    if not any(p.kind is p.VAR_KEYWORD for p in parameters):
        for name in given:
            if name not in allowed:
                raise ValueError(
                    f"{owner}: unknown parameter {name!r}{did_you_mean(name, allowed)} (parameters: {allowed})"
                )
    missing = [p.name for p in parameters if p.default is p.empty and p.name in named and p.name not in given]
    if missing:
        raise ValueError(f"{owner} needs parameter(s) {missing}")
