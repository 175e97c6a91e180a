from sluice.speculative.draft_slots import DraftSlots

BLOCK_SIZE = 4


def test_nothing_is_valid_at_first() -> None:
    assert DraftSlots(BLOCK_SIZE).valid_prefix([0, 1, 2], 10) == 0


def test_recorded_positions_are_valid_up_to_the_asked_end() -> None:
    slots = DraftSlots(BLOCK_SIZE)
    slots.record([5, 6, 7], 0, 10)

    assert slots.valid_prefix([5, 6, 7], 12) == 10
    assert slots.valid_prefix([5, 6, 7], 7) == 7


def test_a_shared_block_stays_valid_for_another_request() -> None:
    slots = DraftSlots(BLOCK_SIZE)
    slots.record([5, 6], 0, 8)

    assert slots.valid_prefix([5, 9], 8) == 4  # block 5 shared, block 9 its own


def test_a_cut_invalidates_the_rest_of_the_request() -> None:
    slots = DraftSlots(BLOCK_SIZE)
    slots.record([5, 6, 7], 0, 12)

    slots.cut([5, 6, 7], 6)

    assert slots.valid_prefix([5, 6, 7], 12) == 6
    slots.record([5, 6, 7], 6, 9)
    assert slots.valid_prefix([5, 6, 7], 12) == 9


def test_a_block_handed_to_another_request_is_cut_when_it_is_written() -> None:
    slots = DraftSlots(BLOCK_SIZE)
    slots.record([5, 6], 0, 8)

    slots.cut([3, 6], 4)  # the new owner's target writes block 6 without the draft

    assert slots.valid_prefix([5, 6], 8) == 4


def test_a_cut_at_a_block_boundary_keeps_the_block_before() -> None:
    slots = DraftSlots(BLOCK_SIZE)
    slots.record([5, 6], 0, 8)

    slots.cut([5, 6], 4)

    assert slots.valid_prefix([5, 6], 8) == 4


def test_recording_from_a_later_position_needs_the_slots_before_it() -> None:
    slots = DraftSlots(BLOCK_SIZE)
    slots.record([5, 6], 4, 8)  # block 5 was never computed

    assert slots.valid_prefix([5, 6], 8) == 0
