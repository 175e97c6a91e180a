"""Which part of each weight a tensor-parallel shard holds, for any sizes and head counts.

TGI and vLLM require every size to divide by the number of shards. Here sizes are split as
evenly as possible (shards differ by at most one unit), and so are query heads; each shard
holds the KV heads its query heads read, so a KV head whose group of query heads straddles
two shards is held by both. Inside a shard the attention kernels want every KV head to serve
the same number of query heads, so a shard whose groups came out uneven pads the short ones
with query heads of zero weights: they attend, and their output meets zero columns of
o_proj, so they add nothing."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig


@dataclass(frozen=True, slots=True)
class Piece:
    """`size` consecutive features of a shard's weight: the checkpoint's features from
    `start` on, or zeros when `start` is None (padding)."""

    start: int | None
    size: int


def even_split(total: int, num_shards: int, rank: int, unit: int = 1) -> Piece:
    """Shard `rank`'s part of `total` features split in whole `unit`s, as evenly as possible:
    the first shards take one unit more when they do not divide."""
    if total % unit:
        raise ValueError(f"{total} features do not split into units of {unit}")
    base, extra = divmod(total // unit, num_shards)
    if base == 0:
        raise ValueError(
            f"{total} features in units of {unit} cannot feed {num_shards} shards one unit each"
        )
    start = rank * base + min(rank, extra)
    return Piece(start * unit, (base + (rank < extra)) * unit)


def is_whole(pieces: Sequence[Piece], size: int) -> bool:
    """Whether `pieces` are all `size` features in order: the unsharded case."""
    return len(pieces) == 1 and pieces[0].start == 0 and pieces[0].size == size


def copy_pieces(
    target: torch.Tensor, loaded: torch.Tensor, dim: int, pieces: Sequence[Piece]
) -> None:
    """Fill `target` along `dim` with `pieces` of the checkpoint tensor `loaded`, in order.
    Only the pieces are read, so a memory-mapped checkpoint is never loaded whole."""
    offset = 0
    for piece in pieces:
        part = target.narrow(dim, offset, piece.size)
        if piece.start is None:
            part.zero_()
        else:
            part.copy_(loaded.narrow(dim, piece.start, piece.size))
        offset += piece.size
    if offset != target.shape[dim]:
        raise ValueError(
            f"pieces cover {offset} features of a shard that holds {target.shape[dim]}"
        )


@dataclass(frozen=True, slots=True)
class HeadShard:
    """The attention heads one shard computes."""

    query_heads: tuple[int | None, ...]
    """The checkpoint's query head in each of the shard's query slots, grouped by KV head and
    padded with None to equal groups."""
    kv_heads: tuple[int, ...]
    """The checkpoint's KV heads the shard holds, in slot order."""
    head_dim: int

    @property
    def num_heads(self) -> int:
        """Query slots, padding included: what the attention kernels see."""
        return len(self.query_heads)

    @property
    def num_kv_heads(self) -> int:
        return len(self.kv_heads)

    def query_pieces(self) -> list[Piece]:
        """The shard's query slots as pieces of the checkpoint's query features."""
        return _joined(
            Piece(None if head is None else head * self.head_dim, self.head_dim)
            for head in self.query_heads
        )

    def kv_pieces(self) -> list[Piece]:
        return _joined(Piece(head * self.head_dim, self.head_dim) for head in self.kv_heads)


def head_dim_of(config: PretrainedConfig) -> int:
    """The attention head size of a Llama-family config (`head_dim`, else hidden / heads)."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def model_shard_heads(config: PretrainedConfig, num_shards: int, rank: int) -> HeadShard:
    """`shard_heads` for the head counts of a Llama-family config."""
    return shard_heads(
        config.num_attention_heads,
        config.num_key_value_heads,
        head_dim_of(config),
        num_shards,
        rank,
    )


def shard_heads(
    num_heads: int, num_kv_heads: int, head_dim: int, num_shards: int, rank: int
) -> HeadShard:
    """Shard `rank`'s heads: query heads split as evenly as possible, the KV heads they read."""
    if num_kv_heads <= 0 or num_heads % num_kv_heads:
        raise ValueError(
            f"{num_heads} query heads do not form equal groups over {num_kv_heads} KV heads"
        )
    if num_shards > num_heads:
        raise ValueError(
            f"{num_shards} shards for {num_heads} attention heads: each shard needs a head; "
            f"use at most {num_heads} shards"
        )
    group = num_heads // num_kv_heads
    mine = even_split(num_heads, num_shards, rank)
    assert mine.start is not None
    heads = range(mine.start, mine.start + mine.size)
    kv_heads = tuple(range(heads[0] // group, heads[-1] // group + 1))
    groups = [[h for h in heads if h // group == kv] for kv in kv_heads]
    width = max(len(members) for members in groups)
    query_heads = tuple(
        slot for members in groups for slot in (*members, *[None] * (width - len(members)))
    )
    return HeadShard(query_heads, kv_heads, head_dim)


def _joined(pieces: Iterable[Piece]) -> list[Piece]:
    """`pieces` with each run of adjacent ones (or of padding) joined into one."""
    joined: list[Piece] = []
    for piece in pieces:
        if joined:
            last = joined[-1]
            follows = (
                piece.start is None if last.start is None else piece.start == last.start + last.size
            )
            if follows:
                joined[-1] = Piece(last.start, last.size + piece.size)
                continue
        joined.append(piece)
    return joined
