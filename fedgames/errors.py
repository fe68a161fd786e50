"""Helpers for clear error messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from difflib import get_close_matches


def did_you_mean(name: str, choices: Iterable[str], shown: Mapping[str, str] | None = None) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` (ignoring case), or ``""``; ``shown`` maps a choice
    to the text to show for it (default: the choice itself)."""
    shown = {c: (shown or {}).get(c, c) for c in choices}
    folded = {c.lower(): c for c in shown}  # case aside: 'c' finds 'C'
    close = get_close_matches(str(name).lower(), list(folded), n=3, cutoff=0.5)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(shown[folded[c]]) for c in close) + "?"


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name where it has none), for a one-line report."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
