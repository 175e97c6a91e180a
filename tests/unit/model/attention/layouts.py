"""Hand-made step layouts shared by the attention backend tests: a tiny paged cache with
block size 4, GQA 4 query heads over 2 KV heads."""

from sluice.model.attention.backend import BatchLayout

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM = 4, 2, 8
BLOCK_SIZE, NUM_BLOCKS = 4, 200

MIXED = BatchLayout(  # a prompt, a decode, a prompt chunk after 4 computed tokens
    query_lens=[5, 1, 3],
    num_computed_tokens=[0, 6, 4],
    block_tables=[[3, 9], [0, 5], [12, 2]],
    block_size=BLOCK_SIZE,
)
DECODES = BatchLayout(  # equal query lengths: no padding
    query_lens=[1, 1],
    num_computed_tokens=[3, 8],
    block_tables=[[7], [1, 4, 11]],
    block_size=BLOCK_SIZE,
)
PROMPT = BatchLayout(
    query_lens=[6], num_computed_tokens=[0], block_tables=[[5, 6]], block_size=BLOCK_SIZE
)
DECODES_AROUND_A_CHUNK = BatchLayout(  # decodes before and after a chunk: scattered rows
    query_lens=[1, 10, 1, 1],
    num_computed_tokens=[9, 2, 0, 4],
    block_tables=[[1, 2, 3], [4, 5, 16], [6], [7, 8]],
    block_size=BLOCK_SIZE,
)
A_VERIFY_BESIDE_DECODES = BatchLayout(  # 3 drafts + 1 verified after 6 tokens, and a decode
    query_lens=[4, 1],
    num_computed_tokens=[6, 2],
    block_tables=[[20, 21, 22], [23]],
    block_size=BLOCK_SIZE,
)
DECODES_OF_MIXED_LENGTHS = BatchLayout(  # contexts 2, 259 and 3: two groups, rows out of order
    query_lens=[1, 1, 1],
    num_computed_tokens=[1, 258, 2],
    block_tables=[[10], [*range(100, 165)], [15]],
    block_size=BLOCK_SIZE,
)
ALL_LAYOUTS = {
    "mixed": MIXED,
    "decodes": DECODES,
    "prompt": PROMPT,
    "decodes_around_a_chunk": DECODES_AROUND_A_CHUNK,
    "decodes_of_mixed_lengths": DECODES_OF_MIXED_LENGTHS,
    "a_verify_beside_decodes": A_VERIFY_BESIDE_DECODES,
}


def slot(table: list[int], position: int) -> int:
    return table[position // BLOCK_SIZE] * BLOCK_SIZE + position % BLOCK_SIZE
