"""A reference-quantized weight packed as a GPTQ checkpoint stores it, then read back by
`convert_gptq`: the round trip every GPTQ test starts from."""

from sluice.quantization import GptqCheckpointFormat, QuantizedWeight, convert_gptq
from tests.unit.quantization.reference import Reference, pack_gptq


def gptq_round_trip(ref: Reference, group_size: int, *, v1: bool = True) -> QuantizedWeight:
    """`group_size` as the checkpoint's config says it (-1: per channel); `v1`: AutoGPTQ's
    format, else GPTQModel's."""
    tensors = pack_gptq(ref, v1=v1)
    return convert_gptq(
        tensors["qweight"],
        tensors["qzeros"],
        tensors["scales"],
        tensors["g_idx"],
        bits=ref.bits,
        group_size=group_size,
        checkpoint_format=GptqCheckpointFormat.V1 if v1 else GptqCheckpointFormat.V2,
    )
