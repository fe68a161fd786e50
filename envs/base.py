"""What every fedgames PettingZoo env shares: a :class:`~fedgames.envs.protocol.Protocol` that mechanism
wrappers build on, per-instance spaces, and the rule that the outermost wrapper's protocol is the one played."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from fedgames.envs.protocol import Protocol


class ProtocolEnv(ParallelEnv):
    """Base class of the fedgames parallel envs.

    Subclasses set ``protocol``, ``possible_agents``, ``observation_spaces`` and ``action_spaces`` (dicts, so
    the spaces are the same objects on every call, as PettingZoo requires) and step with :attr:`active_protocol`.
    """

    protocol: Protocol
    observation_spaces: dict[str, spaces.Space]
    action_spaces: dict[str, spaces.Space]
    _protocol_override: Protocol | None = None

    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    RENDER_MODES = ["human", "ansi"]
    """``metadata["render_modes"]`` of every fedgames env: ``ansi`` returns :meth:`render_text`, ``human`` prints
    it (what PettingZoo's ``render_test`` asks for first)."""

    def set_render_mode(self, render_mode: str | None) -> None:
        """Check ``render_mode`` against ``metadata["render_modes"]`` and keep it (PettingZoo's ``render_mode``)."""
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode

    def render(self) -> str | None:
        """PettingZoo's ``render``: the text of :meth:`render_text` (``ansi``), printed (``human``), or ``None``
        (no render mode)."""
        if self.render_mode == "ansi":
            return self.render_text()
        if self.render_mode == "human":
            print(self.render_text())
        return None

    def render_text(self) -> str:
        """A few lines on the last step played (each game says what matters: estimates, losses, participation)."""
        raise NotImplementedError

    def check_running(self, started: bool) -> None:
        """Raise a ``RuntimeError`` for a ``step()`` before any ``reset()`` (``started`` false) or after the episode
        ended."""
        if not started:
            raise RuntimeError("step() called before reset(): call reset() first")
        if not self.agents:
            raise RuntimeError("step() called on a finished episode: call reset() first")

    @property
    def messages_per_round(self) -> int:
        """How many messages the server aggregates per round (what an aggregation rule's parameters are checked
        against): one per player, unless the game says otherwise (partial participation, scripted clients)."""
        return len(self.possible_agents)

    @property
    def active_protocol(self) -> Protocol:
        """The protocol in force: the outermost mechanism wrapper's while it steps, else the env's own."""
        return self._protocol_override or self.protocol

    @contextmanager
    def using_protocol(self, protocol: Protocol) -> Iterator[None]:
        """Run the body with ``protocol`` in force; the outermost mechanism wrapper's protocol wins."""
        if self._protocol_override is not None:
            yield
            return
        self._protocol_override = protocol
        try:
            yield
        finally:
            self._protocol_override = None

    def validate_protocol(self, protocol: Protocol) -> None:
        """Reject stages this game cannot play (called when a mechanism wraps the env); all are fine here."""


def rounds_from_max_cycles(name: str, config: dict[str, Any], max_cycles: int | None) -> dict[str, Any]:
    """``config`` with PettingZoo's ``max_cycles`` (how many steps an episode lasts, the argument of its
    ``max_cycles_test``) as the game's ``rounds``, one step being one round; both given and different is a
    ``ValueError``."""
    if max_cycles is None:
        return config
    if "rounds" in config and config["rounds"] != max_cycles:
        raise ValueError(
            f"{name}: max_cycles={max_cycles!r} and rounds={config['rounds']!r} disagree (max_cycles is PettingZoo's "
            "name for rounds: give one of them)"
        )
    return config | {"rounds": max_cycles}


def stack_actions(actions: dict[str, Any], agents: list[str], width: int) -> np.ndarray:
    """Turn ``{agent: action}`` into a ``(1, N, width)`` array, with clear errors for missing or malformed ones."""
    if not isinstance(actions, Mapping):
        raise ValueError(
            f"actions must be a dict {{agent: action}} (PettingZoo's parallel API), got {type(actions).__name__}"
        )
    missing = [a for a in agents if a not in actions]
    extra = [a for a in actions if a not in agents]
    if missing or extra:
        raise ValueError(f"actions must name every live agent exactly: missing {missing}, unknown {extra}")
    rows = []
    for agent in agents:
        action = np.asarray(actions[agent])
        if action.shape != (width,):
            raise ValueError(f"action of {agent} must have shape ({width},), got {action.shape}")
        if not (np.issubdtype(action.dtype, np.floating) or np.issubdtype(action.dtype, np.integer)):
            raise ValueError(f"action of {agent} must be real numbers, got dtype {action.dtype}")
        rows.append(action.astype(np.float64))
    return np.stack(rows)[None]
