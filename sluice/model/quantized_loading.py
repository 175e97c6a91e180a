"""Loads the quantized linears of a model: gathers each projection's tensors (GPTQ's qweight,
qzeros, scales and g_idx; AWQ's qweight, qzeros and scales; a GGUF's blocks and their type; a
full-precision weight to quantize at load), unpacks checkpoint integers into a
`QuantizedWeight`, joins the projections a fused layer holds (q, k, v; gate, up) along the
output features, and hands the result to the layer's linear method, which packs it for its
kernel (`load_weight`) or quantizes it (`load_dense`)."""

from dataclasses import dataclass, field

import torch
from torch import nn

from sluice.distributed.sharding import is_whole
from sluice.model.layers.linear import ColumnParallelLinear, RowParallelLinear
from sluice.model.packed_slicing import DROPPED, cut, part_axes
from sluice.quantization.awq import convert_awq
from sluice.quantization.gguf_blocks import GgmlType, convert_gguf_blocks
from sluice.quantization.gptq import convert_gptq
from sluice.quantization.quantized_weight import QuantizedWeight
from sluice.quantization.scheme import QuantizationScheme

GPTQ_PARTS = frozenset({"qweight", "qzeros", "scales", "g_idx"})
AWQ_PARTS = frozenset({"qweight", "qzeros", "scales"})
GGUF_PARTS = frozenset({"gguf_blocks", "gguf_type"})
DENSE_PARTS = frozenset({"weight"})


@dataclass(slots=True)
class _PendingLayer:
    num_shards: int
    parts: dict[str | int | None, dict[str, torch.Tensor]] = field(default_factory=dict)
    """Per shard: its checkpoint tensors by part name, until converted."""
    shards: dict[str | int | None, QuantizedWeight | torch.Tensor] = field(default_factory=dict)


class QuantizedLinearLoader:
    def __init__(self, scheme: QuantizationScheme, layers: dict[str, nn.Module]) -> None:
        """`layers`: the model's quantized linear layers by module name."""
        self.scheme = scheme
        self.layers = layers
        self.parts = {"gptq": GPTQ_PARTS, "awq": AWQ_PARTS, "gguf": GGUF_PARTS}.get(
            scheme.method, DENSE_PARTS
        )
        self._pending: dict[str, _PendingLayer] = {}
        self.loaded: set[str] = set()
        """Module names of the layers loaded so far."""

    def claims(self, module_name: str, part: str) -> bool:
        """Whether the tensor `module_name.part` is one of a quantized layer's parts."""
        return module_name in self.layers and part in self.parts

    def add(
        self,
        module_name: str,
        shard_id: str | int | None,
        part: str,
        tensor: torch.Tensor,
        shard_order: tuple[str | int | None, ...],
    ) -> None:
        """Take one part of one projection; `shard_order` lists the fused layer's projections
        in output order (one None for an unfused layer)."""
        try:
            self._add(module_name, shard_id, part, tensor, shard_order)
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{module_name}: {error}") from error

    def _add(
        self,
        module_name: str,
        shard_id: str | int | None,
        part: str,
        tensor: torch.Tensor,
        shard_order: tuple[str | int | None, ...],
    ) -> None:
        pending = self._pending.setdefault(module_name, _PendingLayer(len(shard_order)))
        parts = pending.parts.setdefault(shard_id, {})
        parts[part] = tensor
        if set(parts) == self.parts:
            projection = shard_order.index(shard_id)
            mine = self._this_shards_parts(self.layers[module_name], projection, parts)
            pending.shards[shard_id] = self._convert(mine)
            del pending.parts[shard_id]
        if len(pending.shards) == pending.num_shards:
            layer = self.layers[module_name]
            shards = [pending.shards[s] for s in shard_order]
            if self.parts is DENSE_PARTS:
                dense = torch.cat([s for s in shards if isinstance(s, torch.Tensor)])
                layer.method.load_dense(layer, dense)  # type: ignore[union-attr]
            else:
                weights = [s for s in shards if isinstance(s, QuantizedWeight)]
                layer.method.load_weight(layer, _concat_outputs(weights))  # type: ignore[union-attr]
            del self._pending[module_name]
            self.loaded.add(module_name)

    def check_complete(self) -> None:
        missing = sorted(set(self.layers) - self.loaded)
        if missing:
            raise ValueError(
                f"the {self.scheme.method} checkpoint lacks the quantized tensors of "
                f"{len(missing)} linear layers, e.g. {missing[0]} (expected "
                f"{', '.join(sorted(self.parts))})"
            )

    def _this_shards_parts(
        self, layer: nn.Module, projection: int, parts: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The parts of one projection cut to what this tensor-parallel shard holds: its
        output pieces in a column-parallel layer, its input pieces in a row-parallel one."""
        if isinstance(layer, ColumnParallelLinear):
            pieces, total, side = layer.pieces[projection], layer.output_sizes[projection], 0
        elif isinstance(layer, RowParallelLinear):
            pieces, total, side = layer.pieces, layer.total_input_size, 1
        else:
            return parts
        if is_whole(pieces, total):
            return parts
        scheme = self.scheme
        gguf_type = GgmlType(int(parts["gguf_type"])) if "gguf_type" in parts else None
        mine = {}
        for name, tensor in parts.items():
            axes = part_axes(
                scheme.method,
                name,
                bits=scheme.bits,
                group_size=scheme.group_size,
                gguf_type=gguf_type,
            )
            axis = axes[side]
            if axis is None:
                mine[name] = tensor
            elif axis is not DROPPED:
                mine[name] = cut(tensor, axis, pieces, total)
        return mine

    def _convert(self, parts: dict[str, torch.Tensor]) -> QuantizedWeight | torch.Tensor:
        scheme = self.scheme
        if self.parts is DENSE_PARTS:
            return parts["weight"]
        if scheme.method == "gguf":
            return convert_gguf_blocks(parts["gguf_blocks"], GgmlType(int(parts["gguf_type"])))
        if scheme.method == "awq":
            return convert_awq(
                parts["qweight"], parts["qzeros"], parts["scales"], group_size=scheme.group_size
            )
        return convert_gptq(
            parts["qweight"],
            parts["qzeros"],
            parts["scales"],
            parts.get("g_idx"),
            bits=scheme.bits,
            group_size=scheme.group_size,
            checkpoint_format=scheme.checkpoint_format,
        )


def _concat_outputs(shards: list[QuantizedWeight]) -> QuantizedWeight:
    if len(shards) == 1:
        return shards[0]
    first = shards[0]
    for shard in shards[1:]:
        same_order = (shard.input_perm is None and first.input_perm is None) or (
            shard.input_perm is not None
            and first.input_perm is not None
            and torch.equal(shard.input_perm, first.input_perm)
        )
        if not same_order or shard.group_size != first.group_size or shard.bits != first.bits:
            raise ValueError(
                "the projections of a fused layer (q/k/v or gate/up) were quantized with "
                "different groups or input orders; sluice needs them alike to fuse them"
            )
    return QuantizedWeight(
        q=torch.cat([s.q for s in shards]),
        scales=torch.cat([s.scales for s in shards], dim=1),
        zeros=torch.cat([s.zeros for s in shards], dim=1),
        bits=first.bits,
        group_size=first.group_size,
        input_perm=first.input_perm,
    )
