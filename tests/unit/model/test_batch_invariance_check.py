"""The start-up check of batch invariance tells a linear, or an attention backend, whose rows
depend on the other rows of the call from one whose rows do not."""

import pytest
import torch

from sluice.model.attention.in_place import InPlaceAttentionBackend, attention_backend_for
from sluice.model.attention.paged import PagedAttentionBackend, PagedMetadata
from sluice.model.batch_invariance import (
    PROBE_ROWS,
    attention_is_batch_invariant,
    linear_is_batch_invariant,
)
from sluice.model.kernel_packing import pack
from sluice.model.layers.linear import dense_linear

CPU = torch.device("cpu")
SHAPES = {(64, 32), (96, 48)}


def _row_by_row(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.stack([weight @ row for row in rows])


def _rounding_with_the_row_count(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # As a kernel that picks its blocking by the number of rows might: here an extra term.
    return _row_by_row(rows, weight) + (rows.shape[0] > 4) * 2**-10


def test_a_linear_computed_row_by_row_passes() -> None:
    assert linear_is_batch_invariant(_row_by_row, SHAPES, torch.float32, CPU)


def test_a_linear_whose_rows_change_with_the_row_count_fails() -> None:
    assert max(PROBE_ROWS) > 4
    assert not linear_is_batch_invariant(_rounding_with_the_row_count, SHAPES, torch.float32, CPU)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_linear_kernel_on_packed_weights_passes(dtype: torch.dtype) -> None:
    shapes = {(576, 960), (1536, 576), (576, 1000)}

    assert linear_is_batch_invariant(dense_linear, shapes, dtype, CPU, pack)


class _RoundsWithTheRowCount(PagedAttentionBackend):
    """A backend whose rows change with the number of rows in the step, as a kernel that picks
    its blocking by the batch size might."""

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: PagedMetadata,
        scale: float,
    ) -> torch.Tensor:
        out = super().forward(q, k, v, kv_cache, metadata, scale)
        return out + (q.shape[0] > 4) * 2**-6


def test_the_in_place_attention_kernel_passes_in_bfloat16() -> None:
    backend = attention_backend_for(CPU)
    assert isinstance(backend, InPlaceAttentionBackend)

    assert attention_is_batch_invariant(backend, 9, 3, 64, torch.bfloat16, CPU)


def test_attention_whose_rows_change_with_the_row_count_fails() -> None:
    assert not attention_is_batch_invariant(_RoundsWithTheRowCount(), 9, 3, 64, torch.float32, CPU)
