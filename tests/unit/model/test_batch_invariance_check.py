"""The start-up check of batch invariance tells a linear whose rows depend on the other rows
of the call from one whose rows do not."""

import torch

from sluice.model.batch_invariance import PROBE_ROWS, linear_is_batch_invariant

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
