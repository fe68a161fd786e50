"""fedgames: multi-agent RL environments for strategic federated learning.

``fedgames.make(env_id, mechanisms=[...], **config)`` builds a PettingZoo ``ParallelEnv``; ``fedgames.register``
adds your own games; ``fedgames.list_envs()`` lists them.

The batched engines (``fedgames.envs.*`` game stages, data) import with numpy and torch alone, so they run on a
machine without PettingZoo or Gymnasium; there the registry functions say what is missing.
"""

__version__ = "0.1.0"
__all__ = ["list_envs", "make", "register"]

try:
    from fedgames.registry import list_envs, make, register
except ModuleNotFoundError as missing:
    if missing.name not in ("pettingzoo", "gymnasium"):
        raise
    _MISSING = missing.name

    def __getattr__(name: str):  # noqa: ANN202
        if name in __all__:
            raise ImportError(f"fedgames.{name} needs {_MISSING}, which is not installed (pip install fedgames)")
        raise AttributeError(f"module 'fedgames' has no attribute {name!r}")
else:
    register(
        "mean_estimation_v0",
        entry_point="fedgames.envs.mean_estimation_v0:parallel_env",
        aec_entry_point="fedgames.envs.mean_estimation_v0:raw_env",
    )
    register(
        "fedsgd_v0",
        entry_point="fedgames.envs.fedsgd_v0:parallel_env",
        aec_entry_point="fedgames.envs.fedsgd_v0:raw_env",
    )
    register(
        "participation_v0",
        entry_point="fedgames.envs.participation_v0:parallel_env",
        aec_entry_point="fedgames.envs.participation_v0:raw_env",
    )
