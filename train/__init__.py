"""Training learners on fedgames environments: best-response views (single-agent), best-response oracles and
multi-agent training (independent learners, parameter sharing)."""

from fedgames.train.best_response_env import BestResponseEnv, BestResponseVecEnv, others_from_profile
from fedgames.train.multi_agent import SelfPlayVecEnv, TrainingResult, train_independent, train_shared
from fedgames.train.oracles import GridOracle, LearnedOracle, make_oracle

__all__ = [
    "BestResponseEnv",
    "BestResponseVecEnv",
    "GridOracle",
    "LearnedOracle",
    "SelfPlayVecEnv",
    "TrainingResult",
    "make_oracle",
    "others_from_profile",
    "train_independent",
    "train_shared",
]
