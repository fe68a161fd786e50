"""Evaluating strategy profiles against the theory (equilibrium checks)."""
