"""Whether a token's arithmetic depends on the other tokens of its step, on this device.

Greedy bfloat16 output on CPU does not depend on load where the matmul kernels give a row the
same bits alone as among other rows, and attention gives a query the same bits alone, among
other queries and inside a prompt chunk. The C++ kernels (model/kernels) do both by
construction. Without them (no compiler) it is a property of torch's kernels on the CPU at
hand: oneDNN's native bfloat16 kernels (avx512_bf16) have it once a single row runs as two
(see layers/linear.py), torch's own bfloat16 kernels on CPUs without AVX-512 have it, oneDNN's
emulated bfloat16 kernels on AVX-512 CPUs without avx512_bf16 do not, and the gathering
attention backend's batched matmuls may not. Rather than trust either, the engine checks the
kernels it will run, on the model's own shapes, at start (a fraction of a second) and says in
its log whether the promise holds; the tests ask the same question before they hold a run to
it."""

from collections.abc import Callable

import torch

from sluice.distributed.sharding import head_dim_of
from sluice.model.attention.backend import AttentionBackend, BatchLayout, slot_mapping_for
from sluice.model.kernel_packing import pack
from sluice.model.layers.linear import UnquantizedLinearMethod, dense_linear, is_packed

PROBE_ROWS = (1, 2, 3, 5, 8, 16, 17, 33, 64)
"""Row counts whose results are compared with the largest call's: one row, small odd and
even counts, and the block boundaries of common kernels."""
PROBE_KEYS = (16, 17, 160)
"""Context lengths of the decodes attended alone and together."""
PROBE_BLOCK_SIZE = 16


LinearFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(rows [n, input_size], weight [output_size, input_size]) -> [n, output_size]."""


def _dense_layer_linear(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    layer = torch.nn.Module()
    # A packed weight is a parameter already, carrying its out_features.
    is_parameter = isinstance(weight, torch.nn.Parameter)
    layer.weight = weight if is_parameter else torch.nn.Parameter(weight, requires_grad=False)
    return UnquantizedLinearMethod().apply(layer, rows, None)


def linear_is_batch_invariant(
    linear: LinearFn,
    shapes: set[tuple[int, int]],
    dtype: torch.dtype,
    device: torch.device,
    prepare_weight: Callable[[torch.Tensor], torch.Tensor] = lambda weight: weight,
) -> bool:
    """True when, for every [input_size, output_size] in `shapes`, each row of `linear` over
    `max(PROBE_ROWS)` rows equals that row computed among fewer rows (random data), with the
    weight as the model holds it after loading (`prepare_weight`: packed, say)."""
    generator = torch.Generator(device).manual_seed(0)
    for input_size, output_size in sorted(shapes):
        weight = torch.randn(output_size, input_size, generator=generator, device=device)
        rows = torch.randn(max(PROBE_ROWS), input_size, generator=generator, device=device)
        weight, rows = prepare_weight(weight.to(dtype)), rows.to(dtype)
        together = linear(rows, weight)
        for count in PROBE_ROWS:
            if not torch.equal(linear(rows[:count], weight), together[:count]):
                return False
    return True


def attention_is_batch_invariant(
    backend: AttentionBackend,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    dtype: torch.dtype,
    device: torch.device,
) -> bool:
    """True when `backend` gives a query the same bits decoded alone, among other decodes of
    other context lengths, and as the last token of a prompt chunk: the forms a token takes in
    a step (random data, contexts of `PROBE_KEYS` tokens)."""
    generator = torch.Generator(device).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=device).to(dtype)

    num_requests, longest = max(PROBE_ROWS), max(PROBE_KEYS)
    blocks_each = -(-longest // PROBE_BLOCK_SIZE)
    kv_cache = randn(2, num_kv_heads, num_requests * blocks_each * PROBE_BLOCK_SIZE, head_dim)
    tables = [list(range(r * blocks_each, (r + 1) * blocks_each)) for r in range(num_requests)]
    contexts = [PROBE_KEYS[r % len(PROBE_KEYS)] for r in range(num_requests)]
    queries = randn(num_requests, num_heads, head_dim)

    def attend(q: torch.Tensor, layout: BatchLayout) -> torch.Tensor:
        # The new tokens' keys and values are those already at their slots: writing them
        # leaves the cache as it is.
        slots = torch.tensor(slot_mapping_for(layout), device=device)
        k, v = kv_cache[0][:, slots].transpose(0, 1), kv_cache[1][:, slots].transpose(0, 1)
        metadata = backend.build_metadata(layout, device)
        return backend.forward(q, k, v, kv_cache, metadata, head_dim**-0.5)

    def decodes(count: int) -> BatchLayout:
        starts = [context - 1 for context in contexts[:count]]
        return BatchLayout([1] * count, starts, tables[:count], PROBE_BLOCK_SIZE)

    together = attend(queries, decodes(num_requests))
    for count in PROBE_ROWS:
        if not torch.equal(attend(queries[:count], decodes(count)), together[:count]):
            return False
    chunk_len = min(PROBE_KEYS)
    request = contexts.index(longest)
    chunk = BatchLayout([chunk_len], [longest - chunk_len], [tables[request]], PROBE_BLOCK_SIZE)
    chunk_q = torch.cat([randn(chunk_len - 1, num_heads, head_dim), queries[request : request + 1]])
    return torch.equal(attend(chunk_q, chunk)[-1], together[request])


def model_is_batch_invariant(
    model: torch.nn.Module, backend: AttentionBackend, dtype: torch.dtype
) -> bool:
    """The checks on the shapes of `model`'s dense linears, its LM head and its attention."""
    config = model.config  # type: ignore[attr-defined]
    device = next(model.parameters()).device
    dense = [
        module
        for module in model.modules()
        if isinstance(getattr(module, "method", None), UnquantizedLinearMethod)
    ]
    shapes = {(module.input_size, module.output_size) for module in dense}
    # The LM head is a plain dense_linear (layers/embedding.py), packed when the linears are.
    lm_head = {(config.hidden_size, config.vocab_size)}
    packed = any(is_packed(module.weight) for module in dense)
    as_loaded = pack if packed else lambda weight: weight
    return (
        linear_is_batch_invariant(_dense_layer_linear, shapes, dtype, device, as_loaded)
        and linear_is_batch_invariant(dense_linear, lm_head, dtype, device, as_loaded)
        and attention_is_batch_invariant(
            backend,
            config.num_attention_heads,
            config.num_key_value_heads,
            head_dim_of(config),
            dtype,
            device,
        )
    )
