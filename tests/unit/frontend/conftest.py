"""The default model's real tokenizer (byte-level BPE, `<|im_end|>` = 2), from the sluice cache."""

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sluice.weights import resolve_model


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerBase:
    # Converts the GGUF shipped with sluice on first use; no network.
    return AutoTokenizer.from_pretrained(resolve_model().path)
