"""Where float32 is only the default dtype, packed int4/int8 layers compute in bfloat16 (their
fast CPU kernel path); an explicit `--dtype`, a GPU, or a bfloat16 model leave them alone."""

import json
from pathlib import Path

import pytest
import torch

from sluice.quantization import Int4LinearMethod, Int8LinearMethod
from sluice.quantization.rtn import Int8OnTheFlyLinearMethod
from sluice.quantization.scheme import packed_kernel_dtype, resolve_scheme

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("requested", "dtype", "device", "expected"),
    [
        (None, torch.float32, CPU, torch.bfloat16),
        ("float32", torch.float32, CPU, None),
        (None, torch.bfloat16, CPU, None),
        (None, torch.bfloat16, CUDA, None),
    ],
)
def test_packed_kernel_dtype(
    requested: str | None, dtype: torch.dtype, device: torch.device, expected: torch.dtype | None
) -> None:
    assert packed_kernel_dtype(requested, dtype, device) == expected


def test_a_resolved_scheme_gives_its_linear_methods_the_kernel_dtype(tmp_path: Path) -> None:
    declared = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True}
    quantized, dense = tmp_path / "quantized", tmp_path / "dense"
    for directory, config in ((quantized, {"quantization_config": declared}), (dense, {})):
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps(config))

    gptq = resolve_scheme(None, quantized, kernel_dtype=torch.bfloat16)
    eetq = resolve_scheme("eetq", dense, kernel_dtype=torch.bfloat16)

    assert gptq is not None and eetq is not None
    int4 = gptq.linear_method()
    assert isinstance(int4, Int4LinearMethod) and int4.kernel_dtype == torch.bfloat16
    on_the_fly = eetq.linear_method()
    assert isinstance(on_the_fly, Int8OnTheFlyLinearMethod)
    assert on_the_fly.int8.kernel_dtype == torch.bfloat16
    assert isinstance(on_the_fly.int8, Int8LinearMethod)
    assert resolve_scheme(None, quantized).linear_method().kernel_dtype is None  # type: ignore[union-attr]
