"""Helpers for clear error messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from difflib import get_close_matches


def did_you_mean(name: str, choices: Iterable[str], shown: Mapping[str, str] | None = None) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``; ``shown`` maps a choice to the text
    to show for it (default: the choice itself)."""
    shown = {c: (shown or {}).get(c, c) for c in choices}
    close = get_close_matches(str(name), list(shown), n=3, cutoff=0.5)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(shown[c]) for c in close) + "?"
