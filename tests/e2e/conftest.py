from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sluice.model.loader import resolve_dtype
from tests.e2e.guarded import GUARDED_FLAGS
from tests.e2e.otlp_collector import OTLP_SERVICE_NAME, OtlpCollector, running_collector
from tests.e2e.server import SluiceServer, running_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SluiceServer]:
    """The default model with default flags (bfloat16 on CPUs with native bf16, else
    float32)."""
    yield from running_server(tmp_path_factory.mktemp("server"), "default")


@pytest.fixture(scope="session")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SluiceServer]:
    """A server with an API key and low limits (tests/e2e/guarded.py)."""
    yield from running_server(tmp_path_factory.mktemp("guarded"), "guarded", GUARDED_FLAGS)


@pytest.fixture(scope="session")
def fp32_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SluiceServer]:
    """float32: the dtype where batched and single-request greedy outputs must agree. Where
    float32 is the default dtype (CPUs without native bf16), the default server is one."""
    if resolve_dtype(None, torch.device("cpu")) == torch.float32:
        yield request.getfixturevalue("server")
        return
    yield from running_server(tmp_path_factory.mktemp("server"), "fp32", ("--dtype", "float32"))


@pytest.fixture(scope="session")
def otlp_collector() -> Iterator[OtlpCollector]:
    yield from running_collector()


@pytest.fixture(scope="session")
def options_server(
    tmp_path_factory: pytest.TempPathFactory, otlp_collector: OtlpCollector
) -> Iterator[SluiceServer]:
    """Default flags plus the optional features that change no other answer, one server for
    their tests: --enable-prefill-logprobs (`decoder_input_details` fills `prefill`),
    --disable-grammar-support, and tracing to `otlp_collector` as service "sluice-under-test"."""
    flags = (
        "--enable-prefill-logprobs",
        "--disable-grammar-support",
        *("--otlp-endpoint", otlp_collector.endpoint),
        *("--otlp-service-name", OTLP_SERVICE_NAME),
    )
    yield from running_server(tmp_path_factory.mktemp("server"), "options", flags)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "e2e":
            item.add_marker(pytest.mark.e2e)
