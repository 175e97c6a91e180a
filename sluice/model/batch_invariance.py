"""Whether a token's arithmetic depends on the other tokens of its step, on this device.

Greedy bfloat16 output on CPU does not depend on load where the matmul kernels give a row the
same bits alone as among other rows, and a query the same bits whatever keys pad its context
(attention's batched matmuls; see attention/paged.py). That is a property of the kernels the
CPU gets: oneDNN's native bfloat16 kernels (avx512_bf16) have it once a single row runs as
two (see layers/linear.py), torch's own bfloat16 kernels on CPUs without AVX-512 have it, and
oneDNN's emulated bfloat16 kernels on AVX-512 CPUs without avx512_bf16 do not. Rather than
list CPUs, the engine checks the kernels it will run, on the model's own shapes, at start (a
fraction of a second) and says in its log whether the promise holds; the tests ask the same
question before they hold a run to it."""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from sluice.distributed.sharding import head_dim_of
from sluice.model.layers.linear import UnquantizedLinearMethod

PROBE_ROWS = (1, 2, 3, 5, 8, 16, 17, 33, 64)
"""Row counts whose results are compared with the largest call's: one row, small odd and
even counts, and the block boundaries of common kernels."""
PROBE_KEYS = (16, 17, 160)
"""Context lengths attended alone and padded to the longest."""


LinearFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(rows [n, input_size], weight [output_size, input_size]) -> [n, output_size]."""


def _dense_layer_linear(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    return UnquantizedLinearMethod().apply(layer, rows, None)


def linear_is_batch_invariant(
    linear: LinearFn, shapes: set[tuple[int, int]], dtype: torch.dtype, device: torch.device
) -> bool:
    """True when, for every [input_size, output_size] in `shapes`, each row of `linear` over
    `max(PROBE_ROWS)` rows equals that row computed among fewer rows (random data)."""
    generator = torch.Generator(device).manual_seed(0)
    for input_size, output_size in sorted(shapes):
        weight = torch.randn(output_size, input_size, generator=generator, device=device)
        rows = torch.randn(max(PROBE_ROWS), input_size, generator=generator, device=device)
        weight, rows = weight.to(dtype), rows.to(dtype)
        together = linear(rows, weight)
        for count in PROBE_ROWS:
            if not torch.equal(linear(rows[:count], weight), together[:count]):
                return False
    return True


def attention_is_batch_invariant(
    num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device
) -> bool:
    """True when the two batched matmuls of attention give a query the same bits alone and
    among other queries, and over its own keys alone and padded with masked ones."""
    generator = torch.Generator(device).manual_seed(0)
    group = num_heads // num_kv_heads
    longest = max(PROBE_KEYS)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=device).to(dtype)

    queries = randn(num_kv_heads, max(PROBE_ROWS) * group, head_dim)
    keys, values = randn(num_kv_heads, longest, head_dim), randn(num_kv_heads, longest, head_dim)
    scores = torch.bmm(queries, keys.transpose(1, 2))
    for count in PROBE_ROWS:
        rows = count * group
        if not torch.equal(torch.bmm(queries[:, :rows], keys.transpose(1, 2)), scores[:, :rows]):
            return False
    probs = scores.float().softmax(-1).to(dtype)
    for num_keys in PROBE_KEYS:
        padded = torch.zeros_like(probs)
        padded[:, :, :num_keys] = probs[:, :, :num_keys]
        own = torch.bmm(probs[:, :, :num_keys], values[:, :num_keys])
        if not torch.equal(torch.bmm(padded, values), own):
            return False
    return True


def model_is_batch_invariant(model: torch.nn.Module, dtype: torch.dtype) -> bool:
    """The checks on the shapes of `model`'s dense linears, its LM head and its attention."""
    config = model.config  # type: ignore[attr-defined]
    device = next(model.parameters()).device
    shapes = {
        (module.input_size, module.output_size)
        for module in model.modules()
        if isinstance(getattr(module, "method", None), UnquantizedLinearMethod)
    }
    lm_head = {(config.hidden_size, config.vocab_size)}  # a plain F.linear (layers/embedding.py)
    return (
        linear_is_batch_invariant(_dense_layer_linear, shapes, dtype, device)
        and linear_is_batch_invariant(F.linear, lm_head, dtype, device)
        and attention_is_batch_invariant(
            config.num_attention_heads,
            config.num_key_value_heads,
            head_dim_of(config),
            dtype,
            device,
        )
    )
