"""Training learners on fedgames environments: best-response views (single-agent) and multi-agent training."""

from fedgames.train.best_response_env import BestResponseEnv, BestResponseVecEnv, others_from_profile

__all__ = ["BestResponseEnv", "BestResponseVecEnv", "others_from_profile"]
