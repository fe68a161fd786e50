"""The code blocks of README.md and the tutorial run as written, so the documents cannot drift from the code.

Each document's fenced ``python`` blocks run in order in one namespace, in a fresh working directory; a fenced
``bash`` block preceded by the marker ``<!-- docs-test: cli -->`` runs each of its ``fedgames ...`` lines
through :func:`fedgames.cli.main`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from fedgames.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/tutorial.md"]
BLOCK = re.compile(r"(<!-- docs-test: cli -->\n)?```(python|bash)\n(.*?)```", re.S)


def blocks(text: str) -> list[tuple[str, str]]:
    """The runnable blocks of a Markdown text, in order: ``("python", code)`` or ``("cli", command line)``."""
    found: list[tuple[str, str]] = []
    for marker, language, body in BLOCK.findall(text):
        if language == "python":
            found.append(("python", body))
        elif marker:
            found += [("cli", line) for line in body.splitlines() if line.startswith("fedgames ")]
    return found


def test_blocks_finds_python_and_marked_cli_only() -> None:
    text = "```python\nx = 1\n```\n```bash\nfedgames list\n```\n<!-- docs-test: cli -->\n```bash\nfedgames list\n```\n"
    assert blocks(text) == [("python", "x = 1\n"), ("cli", "fedgames list")]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_document_blocks_run(document: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = blocks((ROOT / document).read_text())
    assert any(kind == "python" for kind, _ in found), f"{document} has no python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for kind, code in found:
        if kind == "python":
            exec(compile(code, document, "exec"), namespace)
        else:
            assert main(shlex.split(code)[1:]) in (0, None), code
