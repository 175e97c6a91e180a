"""Linear layers that know how to take their slice of a checkpoint tensor.

Terms: a *column-parallel* layer splits its output features across shards, a *row-parallel*
layer splits its input features and sums the partial results with an all-reduce. Each weight
parameter carries a `weight_loader(param, loaded, shard_id)` that cuts this shard's part out of
the full checkpoint tensor, so TP needs no separate pass. How the weight is stored and multiplied
is the `LinearMethod`'s business, so quantized formats plug in without touching the model."""

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from sluice.distributed.parallel_context import ParallelContext
from sluice.distributed.sharding import Piece, copy_pieces, even_split, shard_heads
from sluice.model.kernels import packed_linear_kernel

WeightLoader = Callable[[nn.Parameter, torch.Tensor, str | int | None], None]


def expect_shape(loaded: torch.Tensor, shape: Sequence[int]) -> None:
    """A checkpoint tensor must have the full (unsharded) shape its layer expects: narrowing a
    bigger one would load part of it without a word."""
    if tuple(loaded.shape) != tuple(shape):
        raise ValueError(f"has shape {list(loaded.shape)}, the model expects {list(shape)}")


class LinearMethod(Protocol):
    """Owns a linear layer's weight storage and matmul (plain, or a quantized format)."""

    def create_weights(
        self, layer: nn.Module, input_size: int, output_size: int, dtype: torch.dtype
    ) -> None: ...

    def apply(
        self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor: ...


def dense_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`F.linear`, or the C++ kernel for a weight packed for it (model/kernel_packing.py)."""
    if is_packed(weight):
        kernel = packed_linear_kernel()
        assert kernel is not None, "a weight was packed for a kernel that did not build"
        return kernel(x.contiguous(), weight, weight.out_features, bias)  # type: ignore[attr-defined]
    return F.linear(x, weight, bias)


def is_packed(weight: torch.Tensor) -> bool:
    """Packed weights are panels (3 or 4 dimensions), plain ones a matrix."""
    return weight.dim() > 2


class UnquantizedLinearMethod:
    """A dense weight of shape [output_size, input_size] (or its packing for the C++ kernel)
    and `dense_linear`."""

    def create_weights(
        self, layer: nn.Module, input_size: int, output_size: int, dtype: torch.dtype
    ) -> None:
        layer.weight = nn.Parameter(torch.empty(output_size, input_size, dtype=dtype), False)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (
            x.shape[0] == 1
            and x.dtype == torch.bfloat16
            and x.device.type == "cpu"
            and not is_packed(layer.weight)
        ):
            # Unpacked (no C++ kernel), `F.linear` hands bfloat16 to oneDNN, which multiplies a
            # single row with another kernel than several rows, rounding some outputs
            # differently; as one of two rows, a token gets the same result whatever else
            # shares its step, so a draft verified among other positions scores exactly as
            # decoding it alone would. Two rows cost no more than one.
            return dense_linear(x.expand(2, -1), layer.weight, bias)[:1]
        return dense_linear(x, layer.weight, bias)


class _ParallelLinear(nn.Module):
    """Shared wiring: per-shard sizes, weight creation, a bias, loaders on each parameter."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        *,
        bias: bool,
        parallel: ParallelContext,
        dtype: torch.dtype,
        method: LinearMethod | None,
    ) -> None:
        super().__init__()
        self.parallel = parallel
        self.method = method or UnquantizedLinearMethod()
        self.input_size, self.output_size = input_size, output_size
        self.method.create_weights(self, input_size, output_size, dtype)
        self.bias = nn.Parameter(torch.empty(output_size, dtype=dtype), False) if bias else None
        for param in self.parameters(recurse=False):
            param.weight_loader = self.weight_loader  # type: ignore[attr-defined]

    def weight_loader(
        self, param: nn.Parameter, loaded: torch.Tensor, shard_id: str | int | None = None
    ) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.apply(self, x, self.bias)


class ColumnParallelLinear(_ParallelLinear):
    """Output features split across shards; no communication in forward. Several projections
    fused along the output (gate and up) are each split, and the shard holds its part of each
    in order."""

    def __init__(
        self,
        input_size: int,
        output_sizes: Sequence[int],
        *,
        bias: bool = False,
        parallel: ParallelContext,
        dtype: torch.dtype,
        method: LinearMethod | None = None,
        pieces: Sequence[Sequence[Piece]] | None = None,
    ) -> None:
        """`pieces`: per projection, the checkpoint output features this shard holds; by
        default an even split of each."""
        self.output_sizes = list(output_sizes)
        self.pieces = (
            [list(p) for p in pieces]
            if pieces is not None
            else [[even_split(total, parallel.tp_size, parallel.tp_rank)] for total in output_sizes]
        )
        self.shard_sizes = [sum(piece.size for piece in p) for p in self.pieces]
        super().__init__(
            input_size,
            sum(self.shard_sizes),
            bias=bias,
            parallel=parallel,
            dtype=dtype,
            method=method,
        )

    def weight_loader(
        self, param: nn.Parameter, loaded: torch.Tensor, shard_id: str | int | None = None
    ) -> None:
        index = self._projection_index(shard_id)
        expect_shape(loaded, (self.output_sizes[index], *param.shape[1:]))
        offset = sum(self.shard_sizes[:index])
        target = param.data.narrow(0, offset, self.shard_sizes[index])
        copy_pieces(target, loaded, 0, self.pieces[index])

    def _projection_index(self, shard_id: str | int | None) -> int:
        return 0 if shard_id is None else int(shard_id)


class QKVParallelLinear(ColumnParallelLinear):
    """Fused q, k and v projections; each shard computes the heads `shard_heads` gives it."""

    SHARD_IDS = {"q": 0, "k": 1, "v": 2}

    def __init__(
        self,
        hidden_size: int,
        head_dim: int,
        total_num_heads: int,
        total_num_kv_heads: int,
        *,
        bias: bool,
        parallel: ParallelContext,
        dtype: torch.dtype,
        method: LinearMethod | None = None,
    ) -> None:
        self.heads = shard_heads(
            total_num_heads, total_num_kv_heads, head_dim, parallel.tp_size, parallel.tp_rank
        )
        self.num_heads = self.heads.num_heads
        self.num_kv_heads = self.heads.num_kv_heads
        kv_pieces = self.heads.kv_pieces()
        super().__init__(
            hidden_size,
            [total_num_heads * head_dim, *[total_num_kv_heads * head_dim] * 2],
            bias=bias,
            parallel=parallel,
            dtype=dtype,
            method=method,
            pieces=[self.heads.query_pieces(), kv_pieces, kv_pieces],
        )

    def _projection_index(self, shard_id: str | int | None) -> int:
        if not isinstance(shard_id, str) or shard_id not in self.SHARD_IDS:
            raise ValueError(f"qkv shard id must be one of q, k, v; got {shard_id!r}")
        return self.SHARD_IDS[shard_id]


class RowParallelLinear(_ParallelLinear):
    """Input features split across shards; partial outputs summed with an all-reduce."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        *,
        bias: bool = False,
        parallel: ParallelContext,
        dtype: torch.dtype,
        method: LinearMethod | None = None,
        pieces: Sequence[Piece] | None = None,
    ) -> None:
        """`pieces`: the checkpoint input features this shard holds (for o_proj, its query
        slots); by default an even split."""
        self.total_input_size = input_size
        self.pieces = (
            list(pieces)
            if pieces is not None
            else [even_split(input_size, parallel.tp_size, parallel.tp_rank)]
        )
        super().__init__(
            sum(piece.size for piece in self.pieces),
            output_size,
            bias=bias,
            parallel=parallel,
            dtype=dtype,
            method=method,
        )

    def weight_loader(
        self, param: nn.Parameter, loaded: torch.Tensor, shard_id: str | int | None = None
    ) -> None:
        if param.dim() == 1:  # the bias is added once, after the reduction
            expect_shape(loaded, param.shape)
            param.data.copy_(loaded)
            return
        expect_shape(loaded, (param.shape[0], self.total_input_size))
        copy_pieces(param.data, loaded, 1, self.pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.method.apply(self, x, None)
        out = self.parallel.all_reduce(out)
        return out if self.bias is None else out + self.bias
