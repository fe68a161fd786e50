"""Writing result files atomically, so a crash never leaves a half-written report or checkpoint."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)  # reading it means setting it
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, write: Any) -> None:
    """Write ``path`` via a temporary file in the same folder and an atomic rename.

    ``write`` is the text to write, or a callable that writes to the temporary path it is given. The file gets the
    permissions a plain ``open`` would give it (``0o666`` less the umask; the temporary file is private).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_orphan_temporaries(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if callable(write):
            write(tmp)
        else:
            Path(tmp).write_text(write)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    for listener in _LISTENERS:
        listener(target)


_LISTENERS: list[Callable[[Path], None]] = []


@contextmanager
def written_files(listener: Callable[[Path], None]) -> Iterator[None]:
    """Call ``listener`` with the path of every file :func:`write_atomic` completes in the body (what a results
    folder's manifest lists, :mod:`fedgames.run_folder`)."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


def remove_orphan_temporaries(path: str | Path) -> None:
    """Delete the temporary files an interrupted :func:`write_atomic` of ``path`` left behind (a process killed
    between creating its temporary and the rename cannot remove it itself). A file has one writer at a time: a
    result file is written by the run that owns its folder."""
    target = Path(path)
    for orphan in target.parent.glob(f".{target.name}.*.tmp"):
        orphan.unlink(missing_ok=True)


def remove_orphans_in(folder: str | Path) -> None:
    """Delete every temporary file an interrupted :func:`write_atomic` left in ``folder`` (``.NAME.*.tmp``), for a
    folder that only its run writes (a file that is never written again would keep its orphan otherwise)."""
    for orphan in Path(folder).glob(".*.tmp"):
        if orphan.is_file():
            orphan.unlink(missing_ok=True)


def _finite_or_none(value: Any, path: str, non_finite: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        non_finite.append(f"{path}: {value}")
        return None
    if isinstance(value, Mapping):
        return {key: _finite_or_none(item, f"{path}.{key}", non_finite) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item, f"{path}[{i}]", non_finite) for i, item in enumerate(value)]
    return value


def json_text(data: Any) -> str:
    """``data`` as strict JSON (RFC 8259: no ``NaN`` / ``Infinity`` literals, which strict parsers reject).

    NumPy scalars and arrays become numbers and lists. A non-finite number becomes ``null``, and a mapping at the top
    gains ``"non_finite"``: the path and value of each one replaced, so the report says what went bad.
    """
    plain = json.loads(json.dumps(data, default=_plain))
    non_finite: list[str] = []
    strict = _finite_or_none(plain, "$", non_finite)
    if non_finite and isinstance(strict, dict):
        strict["non_finite"] = non_finite
    return json.dumps(strict, indent=2, allow_nan=False)


def _plain(value: Any) -> Any:
    """What :func:`json.dumps` cannot write itself: NumPy arrays and scalars (anything with ``tolist``)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def csv_text(rows: Sequence[Mapping[str, Any]], fields: Sequence[str] | None = None) -> str:
    """The rows as CSV text under a header of ``fields`` (default: the first row's keys)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0] if fields is None else fields))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
