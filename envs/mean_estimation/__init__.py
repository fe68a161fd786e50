"""The mean-estimation game ([H] §4–5): batched stages, PettingZoo env and closed-form theory."""

from fedgames.envs.mean_estimation.game import MeanEstimationGame, Outcome, World

__all__ = ["MeanEstimationGame", "Outcome", "World"]
