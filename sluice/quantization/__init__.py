"""Weight-only quantization: checkpoint converters and the linear methods that run packed weights.

Terms: a weight is stored as small unsigned integers *q* with, per *group* of `group_size`
consecutive input features and per output feature, a *scale* s and an integer *zero point* z, so
that w = (q - z) * s. *Packed* means several q share one machine word (a checkpoint's int32, or a
kernel's own layout). Converters (`gptq`, `awq`) turn a checkpoint's tensors into one
`QuantizedWeight`; linear methods (`int4_linear`, `int8_linear`) pack it for a torch kernel. Nothing
here reads files or knows model names: wiring into the loader lives elsewhere."""

from sluice.quantization.awq import convert_awq
from sluice.quantization.gptq import GptqCheckpointFormat, convert_gptq
from sluice.quantization.int4_linear import Int4LinearMethod
from sluice.quantization.int8_linear import Int8LinearMethod
from sluice.quantization.quantized_weight import QuantizedWeight

__all__ = [
    "GptqCheckpointFormat",
    "Int4LinearMethod",
    "Int8LinearMethod",
    "QuantizedWeight",
    "convert_awq",
    "convert_gptq",
]
