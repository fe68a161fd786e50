"""Test-wide settings."""

from fedgames.memory import use_huge_pages

use_huge_pages()  # before torch is imported (see its docstring)

import pytest  # noqa: E402
import torch  # noqa: E402


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
