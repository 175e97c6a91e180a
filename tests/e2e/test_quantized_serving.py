"""A GPTQ checkpoint (4-bit, act-order, short last groups) is detected from its config.json and
served over HTTP: its greedy answer is the one its dequantized weights give, computed
in-process; and what `sluice quantize` writes, sluice serves."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoTokenizer

from sluice.cpu import has_native_bf16
from sluice.weights.sources import resolve_model
from tests.e2e.server import SluiceServer, running_server
from tests.model.quantized_checkpoints import write_quantized_pair
from tests.model.runner_driver import build_runner, greedy_generate
from tests.unit.quantization.tiny_llama import write_tiny_llama

PROMPT = "<|im_start|>user\nName three rivers.<|im_end|>\n<|im_start|>assistant\n"
MAX_NEW_TOKENS = 16
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": False, "desc_act": True}
"""Group size 128, AutoGPTQ's and `sluice quantize`'s default: the default model's 576-feature
inputs then end in a short group of 64."""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    write_quantized_pair(resolve_model().path, root / "gptq", root / "dequantized", GPTQ)
    return root / "gptq", root / "dequantized"


@pytest.fixture(scope="module")
def gptq_server(
    tmp_path_factory: pytest.TempPathFactory, checkpoints: tuple[Path, Path]
) -> Iterator[SluiceServer]:
    flags = ("--model-id", str(checkpoints[0]), "--dtype", "float32")
    yield from running_server(tmp_path_factory.mktemp("server"), "gptq", flags)


def test_a_gptq_checkpoint_answers_what_its_dequantized_weights_answer(
    gptq_server: SluiceServer, checkpoints: tuple[Path, Path]
) -> None:
    parameters = {"max_new_tokens": MAX_NEW_TOKENS, "details": True, "ignore_eos": True}

    response = httpx.post(
        f"{gptq_server.url}/generate",
        json={"inputs": PROMPT, "parameters": parameters},
        timeout=120,
    )

    assert response.status_code == 200, response.text
    tokens = [token["id"] for token in response.json()["details"]["tokens"]]
    dequantized = build_runner(checkpoints[1], torch.float32)
    prompt_ids = AutoTokenizer.from_pretrained(checkpoints[1])(PROMPT)["input_ids"]
    assert tokens == greedy_generate(dequantized, prompt_ids, MAX_NEW_TOKENS)
    info = httpx.get(f"{gptq_server.url}/info").json()
    assert info["model_id"] == checkpoints[0].name  # no file system path in the API


@pytest.mark.parametrize(
    ("method", "method_flags"), [("gptq", ["--act-order"]), ("awq", ["--method", "awq"])]
)
def test_sluice_quantize_writes_a_checkpoint_that_sluice_serves(
    tmp_path_factory: pytest.TempPathFactory, method: str, method_flags: list[str]
) -> None:
    """The round trip: `sluice quantize` (GPTQ with act-order, or AWQ; 4 bits) on a small random
    Llama, then `sluice serve` on its output, queried over HTTP."""
    root = tmp_path_factory.mktemp("round-trip")
    model = write_tiny_llama(root / "tiny")
    quantize = [sys.executable, "-m", "sluice", "quantize", "--model-id", str(model)]
    flags = ["--group-size", "32", *method_flags, "--calibration-samples", "4", "--seq-len", "64"]
    result = subprocess.run(
        [*quantize, "--output", str(root / method), *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr

    serve_flags = ("--model-id", str(root / method), "--max-batch-prefill-tokens", "128")
    for server in running_server(root, f"tiny-{method}", serve_flags):
        body = {"inputs": "It is a truth", "parameters": {"max_new_tokens": 8, "details": True}}
        response = httpx.post(f"{server.url}/generate", json=body, timeout=120)

        assert response.status_code == 200, response.text
        assert response.json()["details"]["generated_tokens"] >= 1


def test_the_default_gguf_served_packed_answers_as_dequantized(
    tmp_path_factory: pytest.TempPathFactory, fp32_server: SluiceServer
) -> None:
    """`--quantize gguf` runs the embedded Q4_1 blocks on the int4 kernel: in float32 the greedy
    answer is the dequantized model's, token for token, with the same logprobs."""
    body = {
        "inputs": PROMPT,
        "parameters": {"max_new_tokens": MAX_NEW_TOKENS, "details": True, "ignore_eos": True},
    }
    dense = httpx.post(f"{fp32_server.url}/generate", json=body, timeout=120)
    flags = ("--quantize", "gguf", "--dtype", "float32")
    for server in running_server(tmp_path_factory.mktemp("server"), "gguf", flags):
        packed = httpx.post(f"{server.url}/generate", json=body, timeout=120)

        assert packed.status_code == dense.status_code == 200, packed.text
        assert packed.json()["generated_text"] == dense.json()["generated_text"]
        packed_tokens = packed.json()["details"]["tokens"]
        dense_tokens = dense.json()["details"]["tokens"]
        assert [t["id"] for t in packed_tokens] == [t["id"] for t in dense_tokens]
        # the kernel sums in another order: logprobs agree to float32 rounding, not bit for bit
        for packed_token, dense_token in zip(packed_tokens, dense_tokens, strict=True):
            assert abs(packed_token["logprob"] - dense_token["logprob"]) < 1e-3


@pytest.mark.skipif(has_native_bf16(), reason="bfloat16 is the default dtype on this CPU")
def test_packed_layers_compute_in_bfloat16_where_float32_is_only_the_default(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Without `--dtype` on a CPU without native bf16, `--quantize gguf` runs its int4 kernel
    on bfloat16 activations (the kernel's fast path) and every other layer in float32: the
    server answers what the same model computes in-process that way."""
    flags = ("--quantize", "gguf")
    body = {
        "inputs": PROMPT,
        "parameters": {"max_new_tokens": MAX_NEW_TOKENS, "details": True, "ignore_eos": True},
    }
    for server in running_server(tmp_path_factory.mktemp("server"), "gguf-default", flags):
        response = httpx.post(f"{server.url}/generate", json=body, timeout=120)

        assert response.status_code == 200, response.text
        assert "gguf 4-bit computing in bfloat16" in server.log_path.read_text()
    tokens = [token["id"] for token in response.json()["details"]["tokens"]]
    path = resolve_model().path
    runner = build_runner(path, torch.float32, quantize="gguf", kernel_dtype=torch.bfloat16)
    prompt_ids = AutoTokenizer.from_pretrained(path)(PROMPT)["input_ids"]
    assert tokens == greedy_generate(runner, prompt_ids, MAX_NEW_TOKENS)
