"""fedgames: multi-agent RL environments for strategic federated learning.

``fedgames.make(env_id, mechanisms=[...], **config)`` builds a PettingZoo ``ParallelEnv``; ``fedgames.register``
adds your own games; ``fedgames.list_envs()`` lists them.
"""

from fedgames.registry import list_envs, make, register

register(
    "mean_estimation_v0",
    entry_point="fedgames.envs.mean_estimation_v0:parallel_env",
    aec_entry_point="fedgames.envs.mean_estimation_v0:raw_env",
)

__version__ = "0.1.0"
__all__ = ["list_envs", "make", "register"]
