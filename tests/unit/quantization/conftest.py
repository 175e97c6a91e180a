from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The kernels here are tiny: with two threads on two shared cores, OpenMP's waiting for a busy
    core made this folder 15x slower (1.2 s alone, 18-25 s beside another engineer's benchmark)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
