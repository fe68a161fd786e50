"""Classical, non-strategic Byzantine attacks on FedSGD, as baselines for the strategic players (SPEC §2).

The strategic players of the FedSGD game send ``m_t^i = g_t^i + alpha_t^i xi_t^i`` and choose ``alpha`` to serve
their reward. The attacks here are the usual *fixed* Byzantine behaviours from the robust-aggregation literature,
to compare against. Every function takes, for one round of ``R`` runs with ``m`` active clients each,

* ``honest``: ``(R, m, P)`` floating tensor, the honest (flattened) gradient ``g_i`` of every active client, as
  produced by :func:`fedgames.envs.fedsgd.engine.client_gradients` + :func:`~fedgames.envs.fedsgd.engine.flatten`;
* ``attackers``: ``(R, m)`` boolean tensor, ``True`` where the active client is Byzantine in that run,

and returns the messages ``(R, m, P)`` (a new tensor; the input is not modified): an honest client
(``attackers[r, i]`` False) sends its gradient unchanged, an attacker sends

====================================  ====================================================================
:func:`sign_flip`                     ``-scale * g_i``            (its own gradient, flipped)
:func:`gaussian`                      ``g_i + sigma * N(0, I_P)`` (its own gradient plus isotropic noise)
:func:`little_is_enough`              ``mu_H + tau * s_H``        (Baruch et al. 2019, "ALIE")
:func:`inner_product_manipulation`    ``-tau * mu_H``             (Xie et al. 2020, "IPM")
====================================  ====================================================================

where, per run ``r``, ``H_r`` is the set of honest active clients, ``mu_H = (1/|H_r|) sum_{i in H_r} g_i`` their
coordinate-wise mean and ``s_H`` their coordinate-wise sample standard deviation (unbiased, ddof = 1; defined as 0
when ``|H_r| < 2``). For ALIE and IPM every attacker of a run sends the same vector (the attackers collude and
know the honest gradients: the omniscient threat model of both papers). A run with attackers but no honest client
has no ``mu_H``: ALIE and IPM raise ``ValueError`` for it (a run without attackers is never a problem).

Everything is vectorised over runs and clients (no Python loop), device- and dtype-preserving, and works on the
GPU when the inputs live there. :data:`ATTACKS` maps names to the functions. :class:`ByzantineClients` makes some
clients of a FedSGD game scripted attackers (``FedSGDGame(..., byzantine=...)``, ``fedsgd_v0``'s ``byzantine``).

References:
    * G. Baruch, M. Baruch, Y. Goldberg. "A Little Is Enough: Circumventing Defenses For Distributed Learning".
      NeurIPS 2019.
    * C. Xie, O. Koyejo, I. Gupta. "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product
      Manipulation". UAI 2020 (PMLR 115).
    * Sign flipping and Gaussian noise: the standard baselines of e.g. Blanchard et al. 2017 (Krum), Xie et al.
      2018 (generalized Byzantine-tolerant SGD), Allouah et al. 2023 / ByzFL.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import torch

from fedgames.errors import did_you_mean
from fedgames.parsing import parse_assignments
from fedgames.validation import integer

__all__ = [
    "ALIASES",
    "ATTACKS",
    "Attack",
    "AttackSpec",
    "ByzantineClients",
    "PARAMETERS",
    "parse_attack",
    "alie_default_z",
    "gaussian",
    "honest_mean_std",
    "inner_product_manipulation",
    "little_is_enough",
    "sign_flip",
]


# ----------------------------------------------------------------------------------------------- validation


def _check_inputs(honest: torch.Tensor, attackers: torch.Tensor) -> None:
    if not isinstance(honest, torch.Tensor):
        raise ValueError(f"honest must be a torch.Tensor of shape (R, m, P), got {type(honest).__name__}")
    if honest.dim() != 3:
        raise ValueError(f"honest must have shape (R, m, P), got shape {tuple(honest.shape)}")
    if not honest.is_floating_point():
        raise ValueError(f"honest must have a real floating dtype, got {honest.dtype}")
    if not isinstance(attackers, torch.Tensor):
        raise ValueError(f"attackers must be a boolean torch.Tensor of shape (R, m), got {type(attackers).__name__}")
    if attackers.dtype != torch.bool:
        raise ValueError(f"attackers must have dtype torch.bool, got {attackers.dtype}")
    if tuple(attackers.shape) != tuple(honest.shape[:2]):
        raise ValueError(
            f"attackers must have shape (R, m) = {tuple(honest.shape[:2])} matching honest, "
            f"got {tuple(attackers.shape)}"
        )
    if attackers.device != honest.device:
        raise ValueError(f"attackers is on {attackers.device} but honest is on {honest.device}")


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise ValueError(f"{name} must be a finite real scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _replace(honest: torch.Tensor, attackers: torch.Tensor, malicious: torch.Tensor) -> torch.Tensor:
    """Attackers' rows from ``malicious`` (broadcastable to ``(R, m, P)``), honest rows from ``honest``."""
    return torch.where(attackers[..., None], malicious.to(honest.dtype), honest)


# ----------------------------------------------------------------------------------------------- statistics


def honest_mean_std(honest: torch.Tensor, attackers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per run, the coordinate-wise mean and unbiased standard deviation of the honest clients' gradients.

    Returns ``(mu, s)``, each ``(R, P)``: ``mu_r = (1/n_r) sum_{i in H_r} g_i`` and
    ``s_r = sqrt(sum_{i in H_r} (g_i - mu_r)^2 / (n_r - 1))`` (two-pass, ddof = 1), with ``n_r = |H_r|`` and
    ``s_r = 0`` when ``n_r < 2``. Raises ``ValueError`` if some run has attackers but no honest client (a run
    with no active client at all, ``m = 0``, gets ``mu = s = 0``, which no message uses).
    """
    _check_inputs(honest, attackers)
    good = ~attackers  # (R, m)
    n = good.sum(dim=1)  # (R,)
    bad = (n == 0) & attackers.any(dim=1)
    if bool(bad.any()):
        runs = torch.nonzero(bad).flatten().tolist()
        raise ValueError(f"attackers: runs {runs[:10]} have no honest client, so the honest mean is undefined")
    w = good.to(honest.dtype)[..., None]  # (R, m, 1)
    nf = n.to(honest.dtype)[:, None]  # (R, 1)
    mu = (w * honest).sum(dim=1) / nf.clamp(min=1)  # (R, P)
    ss = (w * (honest - mu[:, None, :]) ** 2).sum(dim=1)  # (R, P)
    var = torch.where(nf >= 2, ss / (nf - 1).clamp(min=1), torch.zeros_like(ss))
    return mu, var.sqrt()


def alie_default_z(n: int, f: int) -> float:
    """The ALIE paper's default magnitude ``z_max`` (Baruch et al. 2019, §3 / Algorithm 3).

    With ``n`` workers of which ``f`` are Byzantine, the attackers need ``s = floor(n/2 + 1) - f`` honest
    "supporters" and pick ``z_max = Phi^{-1}((n - s) / n)`` (``Phi`` the standard normal CDF). Use it with this
    module's sign convention as ``little_is_enough(..., tau=-alie_default_z(n, f))``.
    Raises ``ValueError`` when ``(n - s)/n`` is not in ``(0, 1)`` (e.g. ``f > n/2`` or ``n < 2``).
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(f, bool) or not isinstance(f, numbers.Integral) or not 0 <= f <= n:
        raise ValueError(f"f must be an integer in [0, n], got {f!r}")
    s = n // 2 + 1 - f
    p = (n - s) / n
    if not 0.0 < p < 1.0:
        raise ValueError(f"f: no ALIE z_max for n={n}, f={f} (needed supporters s={s}, quantile {p} not in (0, 1))")
    return NormalDist().inv_cdf(p)


# ----------------------------------------------------------------------------------------------- attacks


def sign_flip(honest: torch.Tensor, attackers: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Sign flipping: an attacker sends ``-scale * g_i``, its own honest gradient reversed and scaled.

    Args:
        honest: ``(R, m, P)`` honest gradients of the active clients.
        attackers: ``(R, m)`` bool, which active clients are Byzantine.
        scale: finite multiplier (1 = plain sign flip; larger values are the "scaled" variant).

    Returns:
        ``(R, m, P)`` messages.
    """
    _check_inputs(honest, attackers)
    scale = _finite("scale", scale)
    return _replace(honest, attackers, -scale * honest)


def gaussian(
    honest: torch.Tensor, attackers: torch.Tensor, sigma: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian noise: an attacker sends ``g_i + sigma * z_i`` with ``z_i ~ N(0, I_P)`` independent per client.

    Note ``E||sigma z_i||^2 = sigma^2 P`` (per-coordinate variance ``sigma^2``), unlike the game's normalised
    ``alpha xi`` with ``E||xi||^2 = 1``: ``sigma = alpha / sqrt(P)`` reproduces the strategic noise in law.
    The noise is drawn for the whole ``(R, m, P)`` block, then masked, so for a fixed generator state the result
    does not depend on which clients attack.

    Args:
        honest: ``(R, m, P)`` honest gradients of the active clients.
        attackers: ``(R, m)`` bool, which active clients are Byzantine.
        sigma: per-coordinate noise standard deviation, finite and ``>= 0``.
        generator: a ``torch.Generator`` on ``honest``'s device for reproducibility (``None``: the global RNG).

    Returns:
        ``(R, m, P)`` messages.
    """
    _check_inputs(honest, attackers)
    sigma = _finite("sigma", sigma)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    noise = torch.randn(honest.shape, generator=generator, dtype=honest.dtype, device=honest.device)
    return _replace(honest, attackers, honest + sigma * noise)


def little_is_enough(honest: torch.Tensor, attackers: torch.Tensor, tau: float) -> torch.Tensor:
    """ "A little is enough" (ALIE; Baruch, Baruch & Goldberg, NeurIPS 2019).

    Every attacker of run ``r`` sends the same vector ``mu_r + tau * s_r``, where ``mu_r`` and ``s_r`` are the
    coordinate-wise mean and unbiased (ddof = 1) standard deviation of the run's *honest* clients' gradients
    (``s_r = 0`` with a single honest client; see :func:`honest_mean_std`).

    **Sign convention.** This function adds: ``mu + tau * s``. The paper (and e.g. ByzFL) writes
    ``mu - z * s`` with ``z > 0``, so the usual attack is a **negative** ``tau = -z``
    (``tau = -alie_default_z(n, f)`` for the paper's default). Each coordinate of the message then lies ``|tau|``
    honest standard deviations from the honest mean: small enough to pass median-, trimmed-mean- and
    distance-based defences, yet all attackers push consistently in one direction. For
    ``|tau| <= 1/sqrt(n_r)`` the message provably stays within ``[min, max]`` of the honest values per coordinate
    (``n_r`` honest clients; a bound from ``s^2 <= n a^2`` with ``a`` the gap from the mean to either extreme).

    Args:
        honest: ``(R, m, P)`` honest gradients of the active clients.
        attackers: ``(R, m)`` bool, which active clients are Byzantine.
        tau: finite number of honest standard deviations to move (negative = the paper's direction).

    Returns:
        ``(R, m, P)`` messages.

    Raises:
        ValueError: bad inputs, or a run in which every active client is an attacker.
    """
    _check_inputs(honest, attackers)
    tau = _finite("tau", tau)
    mu, s = honest_mean_std(honest, attackers)
    return _replace(honest, attackers, (mu + tau * s)[:, None, :])


def inner_product_manipulation(honest: torch.Tensor, attackers: torch.Tensor, tau: float) -> torch.Tensor:
    """Inner product manipulation (IPM; Xie, Koyejo & Gupta, "Fall of Empires", UAI 2020).

    Every attacker of run ``r`` sends ``-tau * mu_r`` with ``mu_r`` the mean of the run's honest clients'
    gradients. With ``n_r`` honest clients and ``f_r`` attackers among ``m`` active ones, the plain mean of all
    messages is ``((n_r - f_r * tau) / m) * mu_r``, so its inner product with ``mu_r`` is negative exactly when
    ``f_r * tau > n_r`` (and ``mu_r != 0``): the averaged step then goes uphill. A small ``tau`` (the paper uses
    e.g. 0.1) instead keeps the attackers close to the honest cluster so robust aggregators select them.

    Args:
        honest: ``(R, m, P)`` honest gradients of the active clients.
        attackers: ``(R, m)`` bool, which active clients are Byzantine.
        tau: finite scale ``epsilon`` of the paper (positive = opposite to the honest mean).

    Returns:
        ``(R, m, P)`` messages.

    Raises:
        ValueError: bad inputs, or a run in which every active client is an attacker.
    """
    _check_inputs(honest, attackers)
    tau = _finite("tau", tau)
    mu, _ = honest_mean_std(honest, attackers)
    return _replace(honest, attackers, (-tau * mu)[:, None, :])


ATTACKS: dict[str, Callable[..., torch.Tensor]] = {
    "sign_flip": sign_flip,
    "gaussian": gaussian,
    "little_is_enough": little_is_enough,
    "inner_product_manipulation": inner_product_manipulation,
}
"""Name -> attack function. Each is called as ``fn(honest, attackers, <parameter>, ...)``."""


# ----------------------------------------------------------------------------------------------- scripted clients

ALIASES = {"alie": "little_is_enough", "ipm": "inner_product_manipulation"}
"""Short names accepted in attack specs."""

_REQUIRED = object()
PARAMETERS: dict[str, dict[str, object]] = {
    "sign_flip": {"scale": 1.0},
    "gaussian": {"sigma": _REQUIRED},
    "little_is_enough": {"tau": None},  # None: the ALIE paper's default, see ByzantineClients
    "inner_product_manipulation": {"tau": _REQUIRED},
}
"""Each attack's parameters (besides ``honest``, ``attackers`` and the generator) and their defaults."""

AttackSpec = str | tuple[str, Mapping[str, Any]]
"""``"sign_flip"``, ``"alie:tau=-1.5"`` (the mechanism-spec syntax) or ``("gaussian", {"sigma": 0.01})``."""


@dataclass(frozen=True)
class Attack:
    """One configured attack: a name of :data:`ATTACKS` and its parameters."""

    name: str
    params: tuple[tuple[str, float], ...]

    def __call__(self, honest: torch.Tensor, attackers: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The messages ``(R, m, P)`` with the ``attackers``' rows replaced by this attack's."""
        extra = {"generator": generator} if self.name == "gaussian" else {}
        return ATTACKS[self.name](honest, attackers, **dict(self.params), **extra)


def parse_attack(spec: AttackSpec, owner: str) -> tuple[str, dict[str, Any]]:
    """``spec`` -> ``(canonical name, given parameters)``; unknown names (with a did-you-mean) and parameters, and
    missing required ones, raise ``ValueError`` naming ``owner``."""
    if isinstance(spec, str):
        name, _, args = spec.partition(":")
        params = parse_assignments((a.strip() for a in args.split(",") if a.strip()), f"{owner} {spec!r}")
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], Mapping):
        name, params = spec[0], dict(spec[1])
    else:
        raise ValueError(
            f"{owner}: an attack is a string 'name' or 'name:key=value,...' or a (name, params) pair, got {spec!r}"
        )
    name = ALIASES.get(name.strip(), name.strip())
    if name not in ATTACKS:
        names = list(ATTACKS) + list(ALIASES)
        raise ValueError(f"{owner}: unknown attack {name!r}{did_you_mean(name, names)} (attacks: {names})")
    allowed = PARAMETERS[name]
    for key in params:
        if key not in allowed:
            raise ValueError(
                f"{owner}: attack {name} has no parameter {key!r}{did_you_mean(key, allowed)} "
                f"(parameters: {list(allowed)})"
            )
    missing = [key for key, default in allowed.items() if default is _REQUIRED and key not in params]
    if missing:
        raise ValueError(f"{owner}: attack {name} needs parameter(s) {missing}")
    return name, params


class ByzantineClients:
    """The non-strategic Byzantine clients of a FedSGD game: part of the environment, not players.

    In every round where a Byzantine client is active its message ``m_t^i = g_t^i + alpha_t^i xi_t^i`` is replaced
    by its attack's message (the table at the top of this module), computed from the honest gradients ``g_t^j`` of
    *all* active clients of the run (the omniscient threat model); :func:`little_is_enough` and
    :func:`inner_product_manipulation` use the honest clients' gradients, not their noisy messages. The server
    then treats the message as anyone's (aggregation, deviation, payments). Clients that share one attack
    configuration collude (ALIE and IPM send one common vector); the honest set of a run excludes every Byzantine
    client, whatever its attack.

    Args:
        config: ``{client index: attack spec}`` (:data:`AttackSpec`); ``alie`` and ``ipm`` are accepted for
            ``little_is_enough`` and ``inner_product_manipulation``. Parameters: ``sign_flip`` ``scale`` (default
            1), ``gaussian`` ``sigma`` (required; per coordinate, so ``sigma = alpha / sqrt(P)`` matches the game's
            noise), ``little_is_enough`` ``tau`` (default ``-alie_default_z(m, f)``, the ALIE paper's ``z_max``
            for ``m`` active clients and ``f = min(len(config), m)``), ``inner_product_manipulation`` ``tau``
            (required).
        n_clients: ``N``, every client (``fedsgd_v0``'s ``n_players`` slots, the attackers among them).
        active: clients per round ``m``. ALIE and IPM need an honest client in every round, so then fewer than
            ``m`` clients may be Byzantine.
    """

    def __init__(self, config: Mapping[int, AttackSpec], n_clients: int, active: int) -> None:
        if not isinstance(config, Mapping) or not config:
            raise ValueError(f"byzantine must be a non-empty mapping {{client: attack}}, got {config!r}")
        f = min(len(config), active)
        groups: dict[Attack, list[int]] = {}
        for client, spec in config.items():
            client = integer("byzantine: client", client, 0, n_clients - 1)
            owner = f"byzantine: client {client}"
            name, params = parse_attack(spec, owner)
            if name == "little_is_enough" and params.get("tau") is None:
                try:
                    params["tau"] = -alie_default_z(active, f)
                except ValueError as error:
                    raise ValueError(
                        f"{owner}: little_is_enough has no default tau for m={active} active clients "
                        f"and f={f} Byzantine ones ({error}); give tau"
                    ) from None
            attack = Attack(name, tuple(sorted(params.items())))
            probe = torch.zeros(1, 2, 1)
            try:  # bad values (NaN, negative sigma, ...) fail here, with the parameter's name, not mid-episode
                attack(probe, torch.tensor([[True, False]]), torch.Generator())
            except ValueError as error:
                raise ValueError(f"{owner}: {error}") from None
            groups.setdefault(attack, []).append(client)
        needs_honest = [a.name for a in groups if a.name in ("little_is_enough", "inner_product_manipulation")]
        if needs_honest and len(config) >= active:
            raise ValueError(
                f"byzantine: {needs_honest[0]} needs an honest client in every round, so fewer than "
                f"active={active} clients may be Byzantine, got {len(config)}"
            )
        self.n_clients = n_clients
        self.clients = tuple(sorted(c for members in groups.values() for c in members))
        self.groups = [(attack, self._mask(members)) for attack, members in groups.items()]
        self.mask = self._mask(self.clients)

    def _mask(self, clients: Any) -> torch.Tensor:
        mask = torch.zeros(self.n_clients, dtype=torch.bool)
        mask[list(clients)] = True
        return mask

    def corrupt(
        self, honest: torch.Tensor, messages: torch.Tensor, active: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """The round's messages ``(R, m, P)`` with the active Byzantine clients' rows replaced by their attacks.

        Args:
            honest: ``(R, m, P)`` every active client's honest gradient.
            messages: ``(R, m, P)`` what the clients would send (``g + alpha xi``).
            active: ``(R, m)`` the active clients' indices.
            generator: draws the Gaussian attack's noise (on the tensors' device).
        """
        attackers = self.mask.to(active.device)[active]
        for attack, members in self.groups:
            chosen = members.to(active.device)[active]
            messages = torch.where(chosen[..., None], attack(honest, attackers, generator), messages)
        return messages
