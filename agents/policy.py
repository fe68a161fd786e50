"""The policy interface every fedgames agent implements (defined beside the game contract,
:mod:`fedgames.envs.policy`, so that a game's folder can hold its scripted agents)."""

from fedgames.envs.policy import Policy

__all__ = ["Policy"]
