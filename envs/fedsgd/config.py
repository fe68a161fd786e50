"""The FedSGD game's configuration record (the convention of :mod:`fedgames.envs.contract`): the arguments of
:class:`~fedgames.envs.fedsgd.fedsgd.FedSGDEnv`, which still checks them itself."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from fedgames.envs.config import GameConfig, param


@dataclass(frozen=True)
class FedSGDConfig(GameConfig):
    """What a ``fedsgd_v0`` env was configured with (the parameters of
    :class:`~fedgames.envs.fedsgd.fedsgd.FedSGDEnv`)."""

    game: ClassVar[str] = "fedsgd_v0"

    objective: str = param("quadratic")
    n_clients: int = param(4)
    active: int | None = param(None)
    rounds: int = param(20)
    lr: str = param("constant")
    lr_value: float = param(0.1)
    strong_convexity: float | None = param(None)
    eta: float = param(1.0)
    radius: float = param(math.inf)
    noise_norm: str = param("global")
    weighting: str = param("size")
    batch_fraction: float = param(0.9)
    alpha_max: float = param(10.0)
    lam: Any = param(1.0, per_player=True)
    utility: str = param("default")
    samples_per_client: int = param(20)
    data_dir: str | None = param(None)
    data_seed: int = param(0)
    device: str = param("auto")
    byzantine: Any = param(None)
    precision: str = param("tf32")
    compile: bool | str = param(False)
