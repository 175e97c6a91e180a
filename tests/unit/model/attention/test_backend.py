"""slot_mapping_for and BatchLayout on hand-made layouts: block tables, mixed query lengths."""

from sluice.model.attention.backend import BatchLayout, slot_mapping_for


def test_slot_mapping_for_follows_each_block_table() -> None:
    layout = BatchLayout(
        query_lens=[4, 1, 3],
        num_computed_tokens=[2, 6, 0],
        block_tables=[[3, 7], [0, 5], [9]],
        block_size=4,
    )

    assert slot_mapping_for(layout) == [
        14, 15, 28, 29,  # positions 2..5: block 3 offsets 2-3, then block 7 offsets 0-1
        22,  # position 6: block 5 offset 2
        36, 37, 38,  # positions 0..2 of block 9
    ]  # fmt: skip


def test_slot_mapping_for_block_size_one_is_the_block_table() -> None:
    layout = BatchLayout(
        query_lens=[2], num_computed_tokens=[1], block_tables=[[8, 4, 2]], block_size=1
    )

    assert slot_mapping_for(layout) == [4, 2]


def test_slot_mapping_for_an_empty_step_is_empty() -> None:
    assert slot_mapping_for(BatchLayout([], [], [], block_size=16)) == []


def test_batch_layout_context_lens_add_computed_and_new_tokens() -> None:
    layout = BatchLayout(
        query_lens=[4, 1], num_computed_tokens=[2, 6], block_tables=[[0, 1], [2, 3]], block_size=4
    )

    assert layout.context_lens == [6, 7]
