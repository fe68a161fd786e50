"""Atomic result files."""

from __future__ import annotations

import os
import stat

import pytest

from fedgames.files import write_atomic


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_write_atomic_gives_the_permissions_of_a_plain_open(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "report.md", "text")
        write_atomic(tmp_path / "figure.bin", lambda path: open(path, "wb").write(b"\x00"))
        with open(tmp_path / "plain.txt", "w") as plain:
            plain.write("text")
    finally:
        os.umask(previous)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("report.md", "figure.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected
    assert (tmp_path / "report.md").read_text() == "text"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.bin", "plain.txt", "report.md"]  # no temporaries
