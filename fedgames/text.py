"""Numbers as people read them in consoles and Markdown reports: ``n/a`` where a value is missing or not finite
(e.g. every episode behind it diverged, :mod:`fedgames.envs.health`), never ``nan``."""

from __future__ import annotations

import math
from collections.abc import Mapping


def shown(value: float | None, spec: str = ".3f") -> str:
    """``value`` formatted by ``spec``, ``n/a`` where it is ``None`` or not finite."""
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def strategy_text(summary: Mapping[str, float], spec: str = ".3f") -> str:
    """A strategy summary (:func:`~fedgames.agents.strategy.summarize_actions`) as ``alpha=0.500, beta=...``, the
    bias components ``b_*`` left out (their norm is ``bias_norm``)."""
    return ", ".join(f"{k}={shown(v, spec)}" for k, v in summary.items() if not k.startswith("b_"))
