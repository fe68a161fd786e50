"""One-way layers (docs/architecture.md): every import inside the package goes down the order below, never up.

The test reads the import statements of every module (``ast``, function-level imports included) under the
package-dir mapping of pyproject.toml (repo folders ``envs/``, ``mechanisms/``, ... install as ``fedgames.envs``,
``fedgames.mechanisms``, ...), which import-linter's graph builder cannot follow. A module belongs to the layer of
its longest matching prefix; the games are siblings and do not import each other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GAMES = ("mean_estimation", "fedsgd", "participation")

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "core helpers",
        tuple(
            f"fedgames.{m}"
            for m in ("errors", "validation", "arrays", "files", "memory", "parsing", "run_folder", "text")
        ),
    ),
    ("envs: protocol, batches, contract, policy interface", ("fedgames.envs",)),
    ("mechanisms", ("fedgames.mechanisms",)),
    ("registry: fedgames.make, register, list_envs", ("fedgames", "fedgames.registry")),
    ("games", tuple(f"fedgames.envs.{g}{suffix}" for g in GAMES for suffix in ("", "_v0"))),
    ("agents", ("fedgames.agents",)),
    ("rollout", ("fedgames.agents.rollout", "fedgames.agents.strategy")),
    ("train", ("fedgames.train",)),
    ("eval", ("fedgames.eval",)),
    ("CLI", ("fedgames.cli",)),
)
"""Bottom to top; a layer may import itself and the layers before it. The registry knows games by their
entry-point strings only, so it sits below them, and the reproductions in ``eval`` may call ``fedgames.make``."""

GAMES_LAYER = 4


def package_modules() -> dict[str, Path]:
    """``{module name: file}`` for every module of the package, through pyproject.toml's package-dir mapping."""
    section = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-dir]")[1].split("\n[")[0]
    mapping = dict(re.findall(r'^"([\w.]+)" = "([\w/]+)"', section, re.MULTILINE))
    assert "fedgames.envs" in mapping, "pyproject.toml: no package-dir mapping found"
    modules = {}
    for package, folder in mapping.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of ``module``'s longest matching prefix (``fedgames`` itself matches only the
    package's ``__init__``)."""
    best, length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "fedgames" and module.startswith(prefix + "."))
            if matches and len(prefix) > length:
                best, length = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/test_layers.py")
    return best


def game_of(module: str) -> str | None:
    for game in GAMES:
        for prefix in (f"fedgames.envs.{game}", f"fedgames.envs.{game}_v0"):
            if module == prefix or module.startswith(prefix + "."):
                return game
    return None


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute ``fedgames`` import in the file (``from fedgames import __version__``
    aside: a constant of the package, not a layer)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "fedgames" and {alias.name for alias in node.names} == {"__version__"}:
                continue
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name == "fedgames" or name.startswith("fedgames.")]
    return found


def violations(modules: dict[str, Path]) -> list[str]:
    bad = []
    for module, path in modules.items():
        own = layer_of(module)
        for line, target in imports(path):
            theirs = layer_of(target)
            where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line} {module} -> {target}"
            if theirs > own:
                bad.append(f"{where} ({LAYERS[own][0]} imports {LAYERS[theirs][0]}, a layer above it)")
            elif own == theirs == GAMES_LAYER and game_of(module) != game_of(target):
                bad.append(f"{where} (a game imports another game)")
    return bad


def test_every_import_goes_down_the_layers():
    assert violations(package_modules()) == []


def test_every_module_has_a_layer():
    modules = package_modules()
    assert {"fedgames.cli", "fedgames.envs.contract", "fedgames.agents.rollout"} <= set(modules)
    for module in modules:
        layer_of(module)


@pytest.mark.parametrize(
    "source, target, reason",
    [
        ("fedgames.train.oracles", "fedgames.eval.nash", "a layer above it"),
        ("fedgames.envs.contract", "fedgames.envs.mean_estimation.theory", "a layer above it"),
        ("fedgames.envs.fedsgd.game", "fedgames.envs.participation.theory", "a game imports another game"),
        ("fedgames.validation", "fedgames", "a layer above it"),
        ("fedgames.eval.nash", "fedgames.cli", "a layer above it"),
        ("fedgames.registry", "fedgames.envs.fedsgd_v0", "a layer above it"),
    ],
)
def test_an_upward_import_is_caught(tmp_path, source, target, reason):
    """The check is not vacuous: one added upward (or sideways) import is reported."""
    path = tmp_path / "module.py"
    path.write_text(f"def late():\n    import {target}\n")
    (found,) = violations({source: path, **{m: p for m, p in package_modules().items() if m != source}}) or [""]
    assert reason in found
