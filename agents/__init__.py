"""Agents: the policy interface, the learned and generic scripted policies, and (re-exported from their games'
folders) the games' own scripted agents."""

from fedgames.agents.learned import SB3Policy
from fedgames.agents.scripted import RandomPolicy
from fedgames.envs.mean_estimation.agents import FixedPolicy, HonestPolicy, profile_policies, theory_best_response
from fedgames.envs.participation.agents import MyopicParticipant
from fedgames.envs.policy import ConstantPolicy, Policy, constant_policies

__all__ = [
    "ConstantPolicy",
    "FixedPolicy",
    "HonestPolicy",
    "MyopicParticipant",
    "Policy",
    "RandomPolicy",
    "SB3Policy",
    "constant_policies",
    "profile_policies",
    "theory_best_response",
]
