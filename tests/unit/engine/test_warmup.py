"""Warm-up on a tiny random Llama: the prefill runs (split at the model's context length), its
activation memory is measured, and the KV budget leaves room for it."""

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sluice.distributed.parallel_context import SINGLE_DEVICE
from sluice.engine import warmup
from sluice.engine.warmup import Warmup, kv_capacity_tokens, warm_up
from sluice.model.attention.paged import PagedAttentionBackend
from sluice.model.kv_cache import KVCacheSpec
from sluice.model.loader import load_model, read_hf_config
from tests.model.tiny_config import TINY

CPU = torch.device("cpu")
SPEC = KVCacheSpec(num_layers=2, num_kv_heads=2, head_dim=16, dtype=torch.float32)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    path: Path = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(**{**TINY, "max_position_embeddings": 300})
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    backend = PagedAttentionBackend()
    return load_model(
        path,
        read_hf_config(path),
        dtype=torch.float32,
        device=CPU,
        parallel=SINGLE_DEVICE,
        backend=backend,
    )


def test_warm_up_runs_a_prefill_longer_than_the_context_and_measures_it(
    tiny_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(warmup, "CPU_MEASURED_PREFILL_TOKENS", 1000)  # the whole step, as on CUDA
    result = warm_up(
        tiny_model,
        PagedAttentionBackend(),
        SPEC,
        CPU,
        num_tokens=1000,  # four prompts: 300 + 300 + 300 + 100 positions
        max_positions=300,
        block_size=16,
    )

    assert result.num_tokens == result.measured_tokens == 1000
    assert result.activation_bytes >= 0
    assert result.duration_s > 0


def test_a_cpu_warm_up_measures_a_shorter_prefill_and_scales_its_memory(
    tiny_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    measured: list[int] = []

    def run_prefill(
        model: object, backend: object, spec: object, device: object, num_tokens: int, *_: object
    ) -> tuple[int, float]:
        measured.append(num_tokens)
        return 1000, 0.5

    monkeypatch.setattr(warmup, "_run_prefill", run_prefill)
    result = warm_up(
        tiny_model,
        PagedAttentionBackend(),
        SPEC,
        CPU,
        num_tokens=4096,
        max_positions=300,
        block_size=16,
    )

    assert measured == [warmup.CPU_MEASURED_PREFILL_TOKENS] == [128]
    assert result.num_tokens == 4096
    assert result.measured_tokens == 128
    # 1000 bytes for 128 tokens, times 32; then the attention of 13 prompts of 300 tokens and
    # one of 196: their masks, a byte a query-key pair, and 16 bytes a score of 4 heads.
    masks = 13 * 300 * 300 + 196 * 196
    assert result.activation_bytes == 32_000 + masks + 16 * 4 * 300 * 300


def test_the_scaled_estimate_bounds_what_the_whole_prefill_takes(
    tiny_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    def peak(num_tokens: int) -> Warmup:
        return warm_up(
            tiny_model,
            PagedAttentionBackend(),
            SPEC,
            CPU,
            num_tokens=num_tokens,
            max_positions=300,
            block_size=16,
        )

    estimate = peak(2000)
    monkeypatch.setattr(warmup, "CPU_MEASURED_PREFILL_TOKENS", 2000)
    measured = peak(2000)

    assert estimate.measured_tokens == 128 and measured.measured_tokens == 2000
    assert measured.activation_bytes > 0
    assert estimate.activation_bytes >= measured.activation_bytes


def test_kv_capacity_leaves_room_for_the_warm_up_activations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(warmup, "_available_memory_bytes", lambda: 10 * 2**20 * 5)  # 50 MiB
    quiet = Warmup(64, activation_bytes=0, measured_tokens=64, duration_s=0.1)
    heavy = Warmup(64, activation_bytes=4 * 2**20, measured_tokens=64, duration_s=0.1)

    tokens = kv_capacity_tokens(SPEC.bytes_per_token, CPU, quiet)

    assert tokens == (10 * 2**20) // SPEC.bytes_per_token  # 20% of what is available
    assert (
        kv_capacity_tokens(SPEC.bytes_per_token, CPU, heavy) == (6 * 2**20) // SPEC.bytes_per_token
    )
    huge = Warmup(64, activation_bytes=2**40, measured_tokens=64, duration_s=0.1)
    assert kv_capacity_tokens(SPEC.bytes_per_token, CPU, huge) == 0
