"""TorchSdpaBackend's metadata on hand-made layouts: context slots, causal masks, padding rows.
Its forward pass is checked beside the paged backend's in test_forward.py."""

import torch

from sluice.model.attention.backend import slot_mapping_for
from sluice.model.attention.torch_sdpa import TorchSdpaBackend
from tests.unit.model.attention.layouts import DECODES, MIXED, slot

CPU = torch.device("cpu")


def test_torch_sdpa_metadata_slot_mapping_and_context_slots() -> None:
    metadata = TorchSdpaBackend().build_metadata(MIXED, CPU)

    assert metadata.slot_mapping.tolist() == slot_mapping_for(MIXED)
    assert metadata.slot_mapping.dtype == torch.long
    assert metadata.context_slots.shape == (3, 7)
    for row, (table, context_len) in enumerate(
        zip(MIXED.block_tables, MIXED.context_lens, strict=True)
    ):
        expected = [slot(table, p) for p in range(context_len)]
        assert metadata.context_slots[row, :context_len].tolist() == expected


def test_torch_sdpa_metadata_mask_is_causal_from_each_request_offset() -> None:
    metadata = TorchSdpaBackend().build_metadata(MIXED, CPU)

    assert metadata.max_query_len == 5
    assert metadata.attn_mask.shape == (3, 1, 5, 7)
    for row, (start, count) in enumerate(
        zip(MIXED.num_computed_tokens, MIXED.query_lens, strict=True)
    ):
        for query in range(count):
            visible = metadata.attn_mask[row, 0, query].nonzero().flatten().tolist()
            assert visible == list(range(start + query + 1))


def test_torch_sdpa_metadata_query_rows_only_when_lengths_differ() -> None:
    backend = TorchSdpaBackend()

    mixed = backend.build_metadata(MIXED, CPU).query_rows
    assert mixed is not None
    assert mixed.tolist() == [0, 1, 2, 3, 4, 5, 10, 11, 12]
    assert backend.build_metadata(DECODES, CPU).query_rows is None
