"""Checkpoints of a training run that hold only data: reading a results folder never runs code from it.

An SB3 ``model.save`` zip pickles part of the model (schedules, spaces, ...) and ``load`` unpickles it, so a crafted
zip runs whatever it likes. Here a model is stored as its tensors alone: :func:`model_state` takes the state
dicts SB3 itself keeps of the networks and optimisers (``get_parameters``), its other torch variables (SAC's
entropy weight) and the counters that steer training (timesteps, updates: TD3's delayed policy updates count
them), written with ``torch.save`` and read back with ``torch.load(weights_only=True)``, whose unpickler builds
tensors, numbers, strings and containers and refuses everything else. The model itself is rebuilt from the run's
configuration (algorithm and hyperparameters, which ``state.json`` records as JSON) and the tensors are copied in.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import recursive_getattr
from stable_baselines3.common.utils import get_device

from fedgames.errors import first_line
from fedgames.files import json_text, write_atomic
from fedgames.train.results import RoundRecord
from fedgames.train.run_config import resumable_differences

STATE_FILE = "state.json"
STATE_FORMAT = 2
"""2: model files ``<key>.round_<r>.pt`` of tensors only; 1 (before): SB3 zips, which are not read (they unpickle)."""

MODEL_FORMAT = 1
COUNTERS = ("num_timesteps", "_n_updates", "_episode_num")
"""The model attributes besides its tensors that change what further training does."""

_STATE_KEYS = ("format", "config", "seed", "completed_rounds", "timesteps", "models", "history")


def model_state(model: BaseAlgorithm) -> dict[str, Any]:
    """``model``'s tensors and training counters as plain data (what :func:`restore_model` takes)."""
    _, variables = model._get_torch_save_params()  # SB3's own list of what is not a state dict
    return {
        "format": MODEL_FORMAT,
        "algo": type(model).__name__,
        "parameters": model.get_parameters(),
        "variables": {name: recursive_getattr(model, name).detach().cpu() for name in variables},
        "counters": {name: int(getattr(model, name)) for name in COUNTERS},
    }


def save_model(model: BaseAlgorithm, path: str | Path) -> None:
    """Write :func:`model_state` to ``path`` atomically."""
    write_atomic(path, lambda tmp: torch.save(model_state(model), tmp))


def read_model_state(path: str | Path) -> dict[str, Any]:
    """The data :func:`save_model` wrote, read without unpickling anything but tensors and plain containers.

    Raises:
        ValueError: the file is missing, is not such a file (a pickle that would build other objects is refused
            unread), or lacks a part of the state; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: model file missing (the checkpoint is incomplete; delete its folder to restart)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path}: not a fedgames model file ({first_line(error)})") from None
    parts = ("format", "algo", "parameters", "variables", "counters")
    if not isinstance(state, dict) or any(part not in state for part in parts):
        raise ValueError(f"{path}: not a fedgames model file (it needs {', '.join(parts)})")
    if not isinstance(state["format"], int) or state["format"] != MODEL_FORMAT:
        raise ValueError(f"{path}: unknown model format {state['format']!r} (this fedgames reads {MODEL_FORMAT})")
    _check_model_state(path, state)
    return state


def _check_model_state(path: Path, state: Mapping[str, Any]) -> None:
    """Each part of a model file of the type :func:`model_state` writes (``parameters``: state dicts; ``variables``:
    tensors; ``counters``: integers in ``[0, 2**63)``), every floating tensor finite (``ValueError`` naming the file
    and the part)."""

    def refuse(part: str, expected: str) -> ValueError:
        return ValueError(f"{path}: not a fedgames model file ({part} must be {expected})")

    def check_finite(part: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"{path}: {part} holds NaN or inf (the run diverged before this checkpoint)")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                check_finite(f"{part}[{key!r}]", item)
        elif isinstance(value, (list, tuple)):
            for k, item in enumerate(value):
                check_finite(f"{part}[{k}]", item)

    if not isinstance(state["algo"], str):
        raise refuse("algo", "a string")
    if not isinstance(state["parameters"], Mapping) or not all(
        isinstance(v, Mapping) for v in state["parameters"].values()
    ):
        raise refuse("parameters", "a mapping of state dicts")
    variables = state["variables"]
    if not isinstance(variables, Mapping) or not all(isinstance(v, torch.Tensor) for v in variables.values()):
        raise refuse("variables", "a mapping of names to tensors")
    counters = state["counters"]
    if not isinstance(counters, Mapping) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 for v in counters.values()
    ):
        raise refuse("counters", "a mapping of names to integers in [0, 2**63)")
    check_finite("parameters", state["parameters"])
    check_finite("variables", variables)


def restore_model(model: BaseAlgorithm, state: Mapping[str, Any], source: str | Path) -> None:
    """Copy a :func:`model_state` into ``model``, a fresh model of the same algorithm and hyperparameters
    (``ValueError`` naming ``source`` when the tensors do not fit it)."""
    if state["algo"] != type(model).__name__:
        raise ValueError(f"{source}: a {state['algo']} model, but this run trains {type(model).__name__}")
    _, variables = model._get_torch_save_params()
    if set(state["variables"]) != set(variables) or set(state["counters"]) != set(COUNTERS):
        raise ValueError(f"{source}: holds the variables {sorted(state['variables'])}, this run's model {variables}")
    try:
        model.set_parameters(dict(state["parameters"]), exact_match=True, device=get_device(model.device))
        with torch.no_grad():
            for name, value in state["variables"].items():
                recursive_getattr(model, name).copy_(value)
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{source}: its tensors do not fit this run's models ({error})") from None
    for name, value in state["counters"].items():
        setattr(model, name, int(value))


class CheckpointStore:
    """``state.json`` plus one model file per learner and completed round, in ``directory``.

    The models of round r go to new files ``<key>.round_<r>.pt`` (each written to a temporary name and renamed);
    ``state.json`` is replaced atomically afterwards and only then are older model files removed, so the state
    always points at complete files of one round, whatever moment a crash hits.

    Args:
        directory: the checkpoint folder.
        config: the run's configuration (:func:`~fedgames.train.run_config.run_config`); a saved state made with
            another one is refused.
        keys: the learners' model keys (agents, or ``"shared"``): the files a state may name.
    """

    def __init__(self, directory: str | Path, config: dict[str, Any], keys: Sequence[str]) -> None:
        self.directory = Path(directory)
        self.config = config
        self.keys = list(keys)

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    def model_name(self, key: str, completed_rounds: int) -> str:
        return f"{key}.round_{completed_rounds:04d}.pt"

    def load_state(self) -> dict[str, Any] | None:
        """The saved state (``None`` when there is none), its history as :class:`RoundRecord`.

        Raises:
            ValueError: naming ``state.json``: unreadable (e.g. truncated) or incomplete, of another format, made
                with another configuration (the message names the differing keys), or naming model files that are
                not this run's.
        """
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{self.state_path}: unreadable checkpoint state ({error}); delete it to start the run over"
            ) from None
        if not isinstance(state, dict) or "format" not in state:
            raise ValueError(f"{self.state_path}: not a checkpoint state (a JSON object with a format)")
        if state["format"] == 1:
            raise ValueError(
                f"{self.state_path}: a checkpoint of an older fedgames (SB3 zip files, which can run code when "
                "loaded, so they are not read); train into a new folder"
            )
        if state["format"] != STATE_FORMAT:
            raise ValueError(f"{self.state_path}: unknown state format {state['format']!r}")
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"{self.state_path}: incomplete checkpoint state, no {', '.join(missing)}")
        if not isinstance(state["config"], dict):
            raise ValueError(f"{self.state_path}: its config must be a JSON object, got {state['config']!r:.100}")
        differing = resumable_differences(state["config"], self.config)
        if differing:
            raise ValueError(
                f"checkpoint {self.directory} was made with a different configuration; differing "
                f"keys: {', '.join(differing)}"
            )
        self._check_models(state)
        try:
            state["history"] = [RoundRecord.from_dict(record) for record in state["history"]]
        except (TypeError, ValueError) as error:
            raise ValueError(f"{self.state_path}: {error}") from None
        return state

    def _check_models(self, state: Mapping[str, Any]) -> None:
        models = state["models"]
        rounds = state["completed_rounds"]
        if not isinstance(models, dict) or sorted(models) != sorted(self.keys) or not isinstance(rounds, int):
            raise ValueError(f"{self.state_path}: it must name one model file for each of {self.keys}")
        for key, name in models.items():
            if name != self.model_name(key, rounds) or not re.fullmatch(r"[\w.-]+", name):
                raise ValueError(
                    f"{self.state_path}: model file {name!r} for {key!r}; expected {self.model_name(key, rounds)!r}"
                )

    def model_files(self, state: Mapping[str, Any]) -> dict[str, Path]:
        return {key: self.directory / name for key, name in state["models"].items()}

    def save(
        self, models: Mapping[str, BaseAlgorithm], completed_rounds: int, timesteps: int, history: list[RoundRecord]
    ) -> None:
        names = {key: self.model_name(key, completed_rounds) for key in models}
        for key, model in models.items():
            save_model(model, self.directory / names[key])
        state = {
            "format": STATE_FORMAT,
            "config": self.config,
            "seed": self.config["seed"],
            "completed_rounds": completed_rounds,
            "timesteps": timesteps,
            "models": names,
            "history": [record.to_dict() for record in history],
        }
        write_atomic(self.state_path, json_text(state))
        for key in names:
            for old in self.directory.glob(f"{key}.round_*.pt"):
                if old.name != names[key]:
                    old.unlink(missing_ok=True)


__all__ = ["CheckpointStore", "read_model_state", "restore_model", "save_model"]
