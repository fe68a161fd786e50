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


def test_json_text_is_strict_json_and_names_each_non_finite_value():
    import json

    import numpy as np

    from fedgames.files import json_text

    text = json_text({"nash_conv": float("nan"), "rows": [1.0, float("inf"), np.float64(2.5)], "x": np.arange(2)})
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON literal {name}"))
    assert strict["nash_conv"] is None and strict["rows"] == [1.0, None, 2.5] and strict["x"] == [0, 1]
    assert strict["non_finite"] == ["$.nash_conv: nan", "$.rows[1]: inf"]
    assert "non_finite" not in json.loads(json_text({"a": 1.0}))


def test_write_atomic_removes_the_temporaries_a_killed_write_left(tmp_path):
    orphan = tmp_path / ".report.json.abc123.tmp"
    orphan.write_text("half a report")
    other = tmp_path / ".other.json.abc123.tmp"  # another file's temporary: not ours to remove
    other.write_text("")
    write_atomic(tmp_path / "report.json", "{}")
    assert not orphan.exists() and other.exists()
    assert (tmp_path / "report.json").read_text() == "{}"
