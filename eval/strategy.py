"""Strategy summaries, at their former path: the rollout layer's :mod:`fedgames.agents.strategy`."""

from fedgames.agents.strategy import summarize_actions, summarize_policy, summarize_steps

__all__ = ["summarize_actions", "summarize_policy", "summarize_steps"]
