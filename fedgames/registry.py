"""The fedgames registry: a thin layer over PettingZoo 1.27's own registry.

Every fedgames env is registered in PettingZoo's registry under the namespace ``fedgames/`` (so
``pettingzoo.make("parallel", "fedgames/mean_estimation-v0")`` works). :func:`make` adds two things PettingZoo
lacks: mechanisms (composable wrappers, :mod:`fedgames.mechanisms`) and third-party plugins, discovered through
the entry-point group ``fedgames.envs``.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."fedgames.envs"]
    my_game = "my_pkg.registration:register_envs"

where ``register_envs()`` calls :func:`fedgames.register` for each of its envs. Plugins are loaded on the first
:func:`make` or :func:`list_envs`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

import pettingzoo
from pettingzoo import ParallelEnv
from pettingzoo.env_registry.exceptions import NameNotFound
from pettingzoo.env_registry.spec import _normalize_env_id

from fedgames.errors import did_you_mean

NAMESPACE = "fedgames"
ENTRY_POINT_GROUP = "fedgames.envs"

_log = logging.getLogger(__name__)
_registered: list[str] = []
_plugins_loaded = False


def canonical_id(env_id: str) -> str:
    """``"mean_estimation_v0"`` or ``"fedgames/mean_estimation-v0"`` -> ``"fedgames/mean_estimation-v0"``
    (a ``TypeError`` for an id that is not a string)."""
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a string such as 'mean_estimation_v0', got {env_id!r}")
    normalized = _normalize_env_id(env_id)
    if "/" not in normalized:
        normalized = f"{NAMESPACE}/{normalized}"
    return normalized


def module_id(full_id: str) -> str:
    """``"fedgames/mean_estimation-v0"`` -> ``"mean_estimation_v0"`` (the PettingZoo module spelling); an id in
    another namespace stays whole."""
    namespace, _, name = full_id.rpartition("/")
    if namespace != NAMESPACE:
        return full_id
    base, _, version = name.rpartition("-")
    return f"{base}_{version}" if base else name


def register(
    env_id: str,
    entry_point: str | Callable[..., ParallelEnv],
    aec_entry_point: str | Callable[..., Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> str:
    """Register a parallel env (and optionally its AEC form) in PettingZoo's registry; return its full id.

    Args:
        env_id: ``name_vN`` or ``namespace/name-vN``; without a namespace it goes under ``fedgames/``.
        entry_point: ``"module:function"`` or a callable returning the ``ParallelEnv``.
        aec_entry_point: the same for the AEC env (PettingZoo's ``raw_env``), if any.
        kwargs: default config.
    """
    for name, point in (("entry_point", entry_point), ("aec_entry_point", aec_entry_point)):
        if point is not None and not callable(point) and not (isinstance(point, str) and ":" in point):
            raise ValueError(f"register: {name} must be 'module:function' or a callable, got {point!r}")
    full_id = canonical_id(env_id)
    pettingzoo.register("parallel", full_id, entry_point=entry_point, kwargs=dict(kwargs or {}))
    if aec_entry_point is not None:
        pettingzoo.register("aec", full_id, entry_point=aec_entry_point, kwargs=dict(kwargs or {}))
    if full_id not in _registered:
        _registered.append(full_id)
    return full_id


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for plugin in entry_points(group=ENTRY_POINT_GROUP):
        try:
            hook = plugin.load()
            if callable(hook):
                hook()
        except Exception as exc:  # a broken plugin must not break the library or the other plugins
            _log.warning("fedgames plugin %r failed to load: %s", plugin.name, exc)


def list_envs() -> list[str]:
    """Ids of all registered fedgames envs (built-in and plugins)."""
    _load_plugins()
    return list(_registered)


class UnknownEnvError(ValueError, NameNotFound):
    """An env id that is not registered: a ``ValueError`` as every bad input here, and PettingZoo's
    ``NameNotFound``, as ``pettingzoo.make`` raises."""


def make(env_id: str, mechanisms: Iterable[Any] | None = (), **config: Any) -> ParallelEnv:
    """Create a registered env as a ``ParallelEnv``, wrapped in ``mechanisms`` (the first innermost).

    Args:
        env_id: e.g. ``"mean_estimation_v0"`` or ``"fedgames/mean_estimation-v0"``.
        mechanisms: a list of specs such as ``"side_payment:C=0.4,balanced=true"``, ``("noisy_response", {"C":
            0.5})`` or callables ``env -> wrapped env`` (``None`` or empty: none).
        **config: the env's configuration.
    """
    from fedgames.mechanisms.specs import apply_mechanisms

    _load_plugins()
    full_id = canonical_id(env_id)
    try:
        pettingzoo.spec("parallel", full_id)  # also resolves an id without version to the latest one
    except Exception:
        spelled = (lambda k: k) if "/" in env_id else module_id  # answer in the spelling the caller used
        known = [spelled(k) for k in list_envs()]
        by_name = {k.split("/", 1)[-1]: spelled(k) for k in list_envs()}
        close = did_you_mean(full_id.split("/", 1)[-1], by_name, shown=by_name)
        raise UnknownEnvError(f"unknown env {env_id!r}{close} (registered: {known})") from None
    env = pettingzoo.make("parallel", full_id, **config)
    return apply_mechanisms(env, mechanisms)
