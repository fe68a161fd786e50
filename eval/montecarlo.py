"""Monte Carlo play, at its former path: the rollout layer's :mod:`fedgames.agents.rollout` (``train`` plays
policies too, and may not import ``eval``)."""

from fedgames.agents.rollout import Episodes, Rollout, episode_batches, recorded_play, rollout, simulate, simulate_loop

__all__ = ["Episodes", "Rollout", "episode_batches", "recorded_play", "rollout", "simulate", "simulate_loop"]
