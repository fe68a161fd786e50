"""The FedSGD game's configuration (SPEC §2; the convention of :mod:`fedgames.envs.contract`): every parameter of
``fedsgd_v0`` declared once with its default and its check. The simulator
(:class:`~fedgames.envs.fedsgd.game.FedSGDGame`) checks the settings it shares with the env by these same field
checks (:func:`simulator_settings`). Imports numpy and torch alone, like the rest of the batched game."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedgames.envs.config import SCALE_MAX, SCALE_MIN, Check, GameConfig, at_least, each_player, number, one_of, param
from fedgames.envs.config import players as player_slots
from fedgames.envs.fedsgd.byzantine import AttackSpec, ByzantineClients
from fedgames.envs.fedsgd.engine import PRECISIONS, compile_mode, resolve_device
from fedgames.errors import did_you_mean
from fedgames.memory import check_fits
from fedgames.validation import integer, real

OBJECTIVES = ("quadratic", "logistic", "cnn")
"""The objectives: the strongly convex quadratic, logistic regression on digits, the FEMNIST CNN."""

KNOWN_STRONG_CONVEXITY = ("quadratic",)
"""The objectives whose model knows its strong-convexity constant ``m_sc`` (``lr="decaying"`` needs one)."""

UTILITIES = ("default", "shared_damage")
LR_SCHEDULES = ("constant", "decaying")
NOISE_NORMS = ("global", "per_tensor")
WEIGHTINGS = ("size", "uniform")


def optional(check: Check) -> Check:
    """``None``, or a value ``check`` accepts."""
    return lambda name, value, config: None if value is None else check(name, value, config)


def radius_check(name: str, value: Any, config: Any) -> float:
    """``inf`` (no projection) or a finite number ``> 0``."""
    return math.inf if value == math.inf else real(name, value, strict=True)


def active_check(name: str, value: Any, config: Any) -> int | None:
    """``None`` (every client each round) or an integer in ``[2, n_players]``."""
    return None if value is None else integer(name, value, 2, config.n_players)


def attackers_check(name: str, value: Any, config: Any) -> dict[str, AttackSpec] | None:
    """``None``, or ``{"player_i": attack}`` naming client slots ``player_0 .. player_{N-1}``, leaving at least
    one player (two under the default utility, which compares a player with the others)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping {{'player_i': attack}}, got {value!r}")
    n = config.n_players
    slots = [f"player_{i}" for i in range(n)]
    known = set(slots)
    for slot in value:
        if slot not in known:
            raise ValueError(
                f"{name}: unknown client {slot!r}{did_you_mean(str(slot), slots)} "
                f"(clients: player_0 .. player_{n - 1} of n_players={n})"
            )
    fewest = 2 if config.utility == "default" else 1
    if n - len(value) < fewest:
        raise ValueError(
            f"{name}: at most {n - fewest} of the {n} clients may be attackers under utility={config.utility!r}, "
            f"got {len(value)}"
        )
    return dict(value)


def device_check(name: str, value: Any, config: Any) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` that this machine has (kept as given: ``auto`` resolves when the
    env is built, :func:`~fedgames.envs.fedsgd.engine.resolve_device`)."""
    resolve_device(value)
    return value


def compile_check(name: str, value: Any, config: Any) -> bool | str:
    """``False``, ``True`` or a ``torch.compile`` mode (:func:`~fedgames.envs.fedsgd.engine.compile_mode`)."""
    compile_mode(value)
    return value


@dataclass(frozen=True)
class FedSGDConfig(GameConfig):
    """The FedSGD game's configuration (SPEC §2; [H] §6 and B.3).

    Attributes:
        objective: ``quadratic``, ``logistic`` or ``cnn``.
        n_players: ``N >= 2`` client slots ``player_0 .. player_{N-1}``, one writer of the data each. With
            ``byzantine`` attackers, ``n_players`` counts them too: they are scripted clients, part of the
            environment, and leave ``possible_agents`` (so ``N - len(byzantine)`` agents play).
        active: clients per round, an integer in ``[2, n_players]`` (``None``: all; attackers included).
        rounds: ``T >= 1``.
        lr: ``constant`` (``lr_value``) or ``decaying`` (``4 / (m_sc (eta + t))``, Thm 6.1's schedule).
        lr_value: the constant step, in ``(0, 1e15]`` (:data:`~fedgames.envs.config.SCALE_MAX`: the step is
            held in the model's float32, largest about ``3.4e38``; a step that large makes the run diverge, which
            is flagged).
        strong_convexity: ``m_sc`` of the decaying step, in ``[1e-15, 1e15]`` (``None``: the model's own, which
            only the quadratic knows; below :data:`~fedgames.envs.config.SCALE_MIN` the first step
            ``4 / (m_sc (eta + 1))`` leaves float32).
        eta: ``> 0``, the offset of the decaying step.
        radius: projection radius ``> 0`` around the initial model (``inf``: none).
        noise_norm: ``global`` or ``per_tensor``: what the noise ``xi`` is normalised over.
        weighting: ``size`` (dataset-size-weighted mean) or ``uniform``.
        batch_fraction: share of a client's data in its batch each round, in ``(0, 1]``.
        alpha_max: top of the aggressiveness range (``> 0``).
        utility: ``default`` (``U_i = (1/(N-1)) sum_{j != i} f(theta^j) - lambda_i f(theta^i)``, ``N`` the
            players, attackers excluded) or ``shared_damage`` (``U_i = f(theta_{T+1})``, [H] B.3).
        byzantine: ``{"player_i": attack}``: the client slots that are scripted Byzantine attackers instead of
            players (``sign_flip``, ``gaussian:sigma=...``, ``alie`` / ``little_is_enough``, ``ipm:tau=...`` /
            ``inner_product_manipulation``, or ``(name, params)``; see
            :class:`~fedgames.envs.fedsgd.byzantine.ByzantineClients`). At least one slot stays a player, two
            under the default utility.
        lam: ``lambda_i >= 0`` of the default utility, one value or one per player (attackers excluded).
        samples_per_client: quadratic samples per client / mean synthetic samples per writer (``>= 1``).
        data_dir: a LEAF FEMNIST folder for ``cnn`` (default: the synthetic writers).
        data_seed: seeds the data (fixed across episodes; ``>= 0``).
        device: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``tf32`` (the default: TF32 tensor cores on CUDA, float32 on a CPU), ``float32`` (IEEE) or
            ``bfloat16`` (the client gradients under bf16 autocast: a GPU's fast path); see
            :data:`~fedgames.envs.fedsgd.engine.PRECISIONS`.
        compile: ``torch.compile`` the client gradients and the rest of the round (``True`` or a mode such as
            ``"max-autotune"``): fused GPU kernels after a one-off compilation, the same result to rounding.
    """

    game: ClassVar[str] = "fedsgd_v0"

    objective: str = param("quadratic", one_of(OBJECTIVES))
    n_players: int = param(4, player_slots(2))
    active: int | None = param(None, active_check)
    rounds: int = param(20, at_least(1))
    lr: str = param("constant", one_of(LR_SCHEDULES))
    lr_value: float = param(0.1, number(0.0, SCALE_MAX, strict=True))
    strong_convexity: float | None = param(None, optional(number(SCALE_MIN, SCALE_MAX)))
    eta: float = param(1.0, number(strict=True))
    radius: float = param(math.inf, radius_check)
    noise_norm: str = param("global", one_of(NOISE_NORMS))
    weighting: str = param("size", one_of(WEIGHTINGS))
    batch_fraction: float = param(0.9, number(0.0, 1.0, strict=True))
    alpha_max: float = param(10.0, number(strict=True))
    utility: str = param("default", one_of(UTILITIES))
    byzantine: Mapping[str, AttackSpec] | None = param(None, attackers_check)
    lam: Any = param(1.0, each_player(players="n_agents"), per_player=True)
    samples_per_client: int = param(20, at_least(1))
    data_dir: str | None = param(None)
    data_seed: int = param(0, at_least(0))
    device: str = param("auto", device_check)
    precision: str = param("tf32", one_of(tuple(PRECISIONS)))
    compile: bool | str = param(False, compile_check)

    def validate(self) -> None:
        """``lr="decaying"`` has an ``m_sc`` (given, or the objective's own); the attacks are valid for the
        clients per round (ALIE's default ``tau`` and ALIE / IPM's honest client every round:
        :class:`~fedgames.envs.fedsgd.byzantine.ByzantineClients`)."""
        if self.lr == "decaying" and self.strong_convexity is None and self.objective not in KNOWN_STRONG_CONVEXITY:
            raise ValueError(
                f"lr='decaying' needs strong_convexity (m_sc) for this objective ({self.objective!r} does not know "
                "its own)"
            )
        if self.attackers:
            ByzantineClients(self.attackers, self.n_players, self.active or self.n_players)
        features = SAMPLE_FEATURES.get(self.objective) if self.data_dir is None else None
        if features is not None:  # generated data: its size follows samples_per_client (digits and LEAF are fixed)
            check_fits(
                f"fedsgd_v0's {self.objective} data (n_players={self.n_players} x samples_per_client="
                f"{self.samples_per_client})",
                self.n_players * self.samples_per_client * 2 * (4 * features + 32),
            )

    @property
    def attackers(self) -> dict[int, AttackSpec]:
        """``{client index: attack}`` of the ``byzantine`` slots (empty without)."""
        return {int(slot.removeprefix("player_")): attack for slot, attack in (self.byzantine or {}).items()}

    @property
    def players(self) -> np.ndarray:
        """``(n_agents,)`` the client indices of the players (the slots that are not attackers), ascending."""
        return np.setdiff1d(np.arange(self.n_players), list(self.attackers))

    @property
    def n_agents(self) -> int:
        """The players that act (``n_players`` less the attackers): ``len(possible_agents)``."""
        return self.n_players - len(self.byzantine or {})


SAMPLE_FEATURES = {"quadratic": 2, "cnn": 28 * 28}
"""Float32 features of one generated training sample (the quadratic's noise, a synthetic FEMNIST image): the data
of ``n_players * samples_per_client`` samples takes about twice ``4 features + 32`` bytes each at its peak (the
samples with their labels and writer indices, and the padded per-client copy)."""


def simulator_settings(**settings: Any) -> dict[str, Any]:
    """``settings`` (the simulator's ``lr``, ``lr_value``, ``strong_convexity``, ``eta``, ``radius``,
    ``noise_norm``, ``weighting``, ``batch_fraction``, ``alpha_max``, ``precision``, ``compile``) checked and
    normalised by the :class:`FedSGDConfig` fields of the same names (checks that read no other field)."""
    fields = {f.name: f for f in dataclasses.fields(FedSGDConfig)}
    return {name: fields[name].metadata["check"](name, value, None) for name, value in settings.items()}


__all__ = [
    "FedSGDConfig",
    "KNOWN_STRONG_CONVEXITY",
    "LR_SCHEDULES",
    "NOISE_NORMS",
    "OBJECTIVES",
    "UTILITIES",
    "WEIGHTINGS",
    "simulator_settings",
]
