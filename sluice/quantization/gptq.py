"""GPTQ checkpoints (AutoGPTQ / GPTQModel layout) -> `QuantizedWeight`.

Layout, for bits b in {4, 8}, p = 32 / b values per int32 word, lowest bits first:
`qweight` int32 [input_size / p, output_size] packed along the input; `qzeros` int32
[num_groups, output_size / p] packed along the output; `scales` fp16 [num_groups, output_size];
`g_idx` int32 [input_size], the group of each input feature. w = (q - z) * s. Symmetric
checkpoints still carry qzeros, all equal to 2**(b-1).

Format "gptq" (v1, AutoGPTQ) stores z - 1; "gptq_v2" (GPTQModel) stores z. We read v1 as
(stored + 1) mod 2**b, as AutoGPTQ's current kernels do: exact for every z the v1 packer could
store without overflow (it wrote z = 0 as -1, which spills into its neighbours' bits; no reader
can undo that).

Act-order (`desc_act=True`) makes g_idx non-monotonic. Rather than gather scales per input
feature (no torch kernel does that), we sort the input features by group once, here, so every
group is contiguous and the fast grouped kernels apply; the linear method then gathers the
activation's columns by `input_perm` at run time, [tokens, input_size] elements per call, far
less than the weight. Folding that gather into the previous layer's output order would remove it
but needs the model's cooperation (the loader's business)."""

from enum import StrEnum

import torch

from sluice.quantization.packing import unpack_columns, unpack_rows
from sluice.quantization.quantized_weight import QuantizedWeight


class GptqCheckpointFormat(StrEnum):
    """`checkpoint_format` in quantize_config.json; absent means v1."""

    V1 = "gptq"
    V2 = "gptq_v2"


def convert_gptq(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor | None,
    *,
    bits: int,
    group_size: int,
    checkpoint_format: GptqCheckpointFormat = GptqCheckpointFormat.V1,
) -> QuantizedWeight:
    """Unpack one GPTQ linear; `group_size` -1 means one group per output channel."""
    if bits not in (4, 8):
        raise ValueError(f"GPTQ with {bits} bits is not supported (only 4 and 8)")
    for name, tensor in (("qweight", qweight), ("qzeros", qzeros)):
        if tensor.dtype != torch.int32 or tensor.dim() != 2:
            raise ValueError(f"GPTQ {name} must be a 2-D int32 tensor, got {tensor.dtype}")
    per_word = 32 // bits
    input_size, output_size = qweight.shape[0] * per_word, qweight.shape[1]
    group_size = input_size if group_size == -1 else group_size
    if not 0 < group_size <= input_size:
        raise ValueError(f"GPTQ group size {group_size} for input size {input_size}")
    num_groups = -(-input_size // group_size)  # the last group may be short
    expected = {
        "qzeros": (num_groups, output_size // per_word),
        "scales": (num_groups, output_size),
    }
    for name, tensor in (("qzeros", qzeros), ("scales", scales)):
        if tuple(tensor.shape) != expected[name] or output_size % per_word:
            raise ValueError(
                f"GPTQ {name} has shape {tuple(tensor.shape)}, expected {expected[name]} for "
                f"{input_size} inputs, {output_size} outputs, group size {group_size}"
            )
    q = unpack_rows(qweight, bits).t().contiguous()  # [output_size, input_size]
    zeros = unpack_columns(qzeros, bits)  # [num_groups, output_size]
    if checkpoint_format == GptqCheckpointFormat.V1:
        zeros = (zeros + 1) & ((1 << bits) - 1)
    input_perm = _group_order(g_idx, input_size, group_size)
    if input_perm is not None:
        q = q[:, input_perm].contiguous()
    return QuantizedWeight(q, scales, zeros, bits, group_size, input_perm)


def _group_order(
    g_idx: torch.Tensor | None, input_size: int, group_size: int
) -> torch.Tensor | None:
    """The input order that makes groups contiguous, or None when they already are."""
    if g_idx is None:
        return None
    if tuple(g_idx.shape) != (input_size,):
        raise ValueError(f"GPTQ g_idx has shape {tuple(g_idx.shape)}, expected ({input_size},)")
    g_idx = g_idx.long()
    in_order = torch.arange(input_size, device=g_idx.device) // group_size
    if torch.equal(g_idx, in_order):
        return None
    num_groups = -(-input_size // group_size)
    in_range = bool(g_idx.min() >= 0) and bool(g_idx.max() < num_groups)
    expected_counts = torch.bincount(in_order, minlength=num_groups)
    if not in_range or not torch.equal(
        torch.bincount(g_idx, minlength=num_groups), expected_counts
    ):
        last = input_size - (num_groups - 1) * group_size
        raise ValueError(
            f"GPTQ g_idx must put exactly {group_size} input features in each of {num_groups} "
            f"groups" + ("" if last == group_size else f" but the last, which takes {last}")
        )
    return torch.argsort(g_idx, stable=True)
