"""Results folders: checked before any work, and recording which run wrote them.

:func:`check_output_folder` refuses a folder that cannot be written (a file, a path under a file, no write
permission) before a command computes anything. :func:`recording` wraps a run: it lists every file the run writes
(through :func:`fedgames.files.write_atomic`) in ``manifest.json`` with the command, its configuration, the seed and
the fedgames version, and removes the files an earlier run's manifest lists that this run did not write (a
``--no-plot`` run leaves no stale figure beside its report). Only the files directly in the folder are listed and
cleaned: its sub-folders hold a resumable run's data (``checkpoints/``, the B.3 reproduction's finished
``runs/``), which a resumed run does not rewrite and its own store keeps. Files that no manifest lists are never
touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedgames.files import json_text, write_atomic, written_files

MANIFEST = "manifest.json"


RESULT_SUFFIXES = (".json", ".md", ".csv", ".png")
"""The kinds of file the commands write into an output folder (reports, tables, figures, the manifest)."""

RESULT_FOLDERS = ("checkpoints", "runs")
"""The folders they write there (training's and the reproductions' checkpoints, B.3's run records)."""


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """``path`` if a run can write its files there: an existing folder, or one that can be created.

    Nothing is created; a probe file is written and removed in the folder, or in its nearest existing parent.

    Raises:
        ValueError: naming ``option``: ``path`` is a file, lies under a file, or is not writable, or holds a
            folder named like a result file (:data:`RESULT_SUFFIXES`) or a file named like a results folder
            (:data:`RESULT_FOLDERS`), which the run would fail to write only after its work.
    """
    target = Path(path)
    existing = next(p for p in (target, *target.parents) if p.exists())  # "." or "/" at the latest
    if not existing.is_dir():
        where = "is a file" if existing == target else f"lies under {existing}, which is a file"
        raise ValueError(f"{option} {path}: {where}, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".fedgames-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"{option} {path}: cannot write in {existing} ({error.strerror or error})") from None
    if existing == target:
        for entry in target.iterdir():
            if entry.is_dir() and entry.suffix in RESULT_SUFFIXES:
                raise ValueError(f"{option} {path}: {entry.name} is a folder where a result file is written")
            if entry.name in RESULT_FOLDERS and not entry.is_dir():
                raise ValueError(f"{option} {path}: {entry.name} is a file where a folder of results is written")
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _kept(relative: Path) -> bool:
    """Whether ``relative`` lies in a sub-folder: resume data, which a manifest neither lists nor cleans."""
    return len(relative.parts) != 1


def _listed_before(folder: Path) -> list[Path]:
    """The files an earlier run's manifest lists (relative, inside ``folder``); none for a missing or unreadable
    manifest."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        names = [str(name) for name in manifest["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    relative = [Path(name) for name in names]
    return [p for p in relative if not p.is_absolute() and ".." not in p.parts and not _kept(p)]


@contextmanager
def recording(
    folder: str | Path, command: Sequence[str], config: Mapping[str, Any], seed: int | None = None
) -> Iterator[list[Path]]:
    """Record the files written in ``folder`` during the body; on success write ``manifest.json`` and remove the
    files the previous manifest listed that this run did not write.

    Yields the list of written paths (relative to ``folder``), filled as the run goes. A run that fails leaves the
    previous manifest and files in place.
    """
    from fedgames import __version__

    root = Path(folder)
    written: list[Path] = []

    def listen(path: Path) -> None:
        try:
            relative = path.resolve().relative_to(root.resolve())
        except ValueError:
            return  # outside the folder
        if relative != Path(MANIFEST) and not _kept(relative) and relative not in written:
            written.append(relative)

    with written_files(listen):
        yield written
    removed = [p for p in _listed_before(root) if p not in written and (root / p).is_file()]
    for stale in removed:
        (root / stale).unlink()
    manifest = {
        "command": list(command),
        "config": dict(config),
        "seed": seed,
        "fedgames": __version__,
        "files": [str(p) for p in written],
        "sha256": {str(p): _sha256(root / p) for p in written if (root / p).is_file()},
        "removed": [str(p) for p in removed],
    }
    write_atomic(root / MANIFEST, json_text(manifest))
