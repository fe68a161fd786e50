"""Process-wide memory settings (``fedgames.memory``), each checked in a fresh interpreter."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import os, sys
{before}
from fedgames.memory import use_huge_pages
print(use_huge_pages(), os.environ.get("THP_MEM_ALLOC_ENABLE"))
"""


@pytest.mark.parametrize(
    "before, variable, expected",
    [
        ("", None, "True 1"),  # fresh: set, and torch will read it
        ("import torch", None, "False None"),  # too late: torch has read it already
        ("", "0", "False 0"),  # the user's own setting is kept
        ("import torch", "1", "True 1"),  # set by the user before torch: in effect
    ],
)
def test_use_huge_pages_sets_the_variable_only_before_torch(before, variable, expected):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if variable is not None:
        env["THP_MEM_ALLOC_ENABLE"] = variable
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(before=before)], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == expected


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings of glibc")
def test_keep_freed_memory_takes_on_glibc():
    out = subprocess.run(
        [sys.executable, "-c", "from fedgames.memory import keep_freed_memory; print(keep_freed_memory())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "True"
