"""Test-wide settings."""

from fedgames.memory import use_huge_pages

use_huge_pages()  # before torch is imported (see its docstring)

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
"""The property tests' default (``tests/test_properties.py``): the same examples on every run (about 15 s)."""
settings.register_profile(
    "thorough", max_examples=2000, deadline=None, derandomize=False, suppress_health_check=[HealthCheck.too_slow]
)
"""``pytest --hypothesis-profile thorough tests/test_properties.py``: new random examples, 20x as many."""
settings.load_profile("ci")  # Hypothesis's pytest plugin loads the one ``--hypothesis-profile`` names after this

WITHOUT = ("pettingzoo", "gymnasium", "stable_baselines3")
"""What a bare GPU machine lacks (it has torch and numpy alone)."""


@pytest.fixture
def run_without_packages():
    """``run(code)``: the stripped stdout of ``code`` run in a fresh interpreter where importing any of
    :data:`WITHOUT` fails, as on a machine without them."""

    def run(code: str) -> str:
        block = (
            "import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {WITHOUT!r}: raise ModuleNotFoundError(name=name.split('.')[0])\n"
            "sys.meta_path.insert(0, Block())\n"
        )
        out = subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True, check=True)
        return out.stdout.strip()

    return run


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny MLPs gain nothing from intra-op threads, and on a busy 2-core machine two spinning torch threads
    slowed PPO down by ~50x in our measurements; one thread keeps the learning tests' timings stable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def freed_memory_kept():
    """The CNN tests allocate and free model-sized tensors every round: without this, page faults took more time
    than the arithmetic (see :func:`fedgames.memory.keep_freed_memory`)."""
    from fedgames.memory import keep_freed_memory

    keep_freed_memory()
