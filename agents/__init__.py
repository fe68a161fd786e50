"""Agents: the policy interface and scripted strategies."""

from fedgames.agents.learned import SB3Policy
from fedgames.agents.participation import MyopicParticipant
from fedgames.agents.policy import Policy
from fedgames.agents.scripted import (
    ConstantPolicy,
    FixedPolicy,
    HonestPolicy,
    RandomPolicy,
    profile_policies,
    theory_best_response,
)

__all__ = [
    "ConstantPolicy",
    "FixedPolicy",
    "HonestPolicy",
    "MyopicParticipant",
    "Policy",
    "RandomPolicy",
    "SB3Policy",
    "profile_policies",
    "theory_best_response",
]
