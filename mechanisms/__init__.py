"""Mechanisms that make honesty pay, as composable PettingZoo wrappers (SPEC §4)."""

from fedgames.mechanisms.audit import Audit, ChallengeMixing
from fedgames.mechanisms.base import Mechanism
from fedgames.mechanisms.bounded_attack import BoundedAttack
from fedgames.mechanisms.noisy_response import NoisyResponse
from fedgames.mechanisms.robust_aggregation import RobustAggregation
from fedgames.mechanisms.side_payment import SidePayment, deviation_payments
from fedgames.mechanisms.specs import MECHANISMS, apply_mechanisms, parse_spec

__all__ = [
    "MECHANISMS",
    "Audit",
    "BoundedAttack",
    "ChallengeMixing",
    "Mechanism",
    "NoisyResponse",
    "RobustAggregation",
    "SidePayment",
    "apply_mechanisms",
    "deviation_payments",
    "parse_spec",
]
