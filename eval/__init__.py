"""Evaluating strategy profiles: Monte Carlo play and comparison with the closed-form theory."""

from fedgames.agents.rollout import Episodes, simulate, simulate_loop

__all__ = ["Episodes", "simulate", "simulate_loop"]
