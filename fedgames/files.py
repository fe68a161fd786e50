"""Writing result files atomically, so a crash never leaves a half-written report or checkpoint."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
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


def csv_text(rows: Sequence[Mapping[str, Any]], fields: Sequence[str] | None = None) -> str:
    """The rows as CSV text under a header of ``fields`` (default: the first row's keys)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0] if fields is None else fields))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
