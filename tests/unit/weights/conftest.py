"""Fixtures for sluice.weights: a tiny Llama model directory in Hugging Face layout, a copy of it
laid out as a Hugging Face Hub cache, and a tiny F32 Llama GGUF written the way llama.cpp does."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

TINY_VOCAB = ["<unk>", "<s>", "</s>", "hello", "world", "sluice"]


def _write_tiny_tokenizer(out_dir: Path) -> None:
    """A WordLevel tokenizer over TINY_VOCAB, saved as tokenizer.json + tokenizer_config.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(TINY_VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.save_pretrained(out_dir)


@pytest.fixture(scope="session")
def tiny_model_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session: 2-layer Llama, hidden 64, fp32 safetensors, tiny tokenizer."""
    out_dir = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(TINY_VOCAB),
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out_dir, safe_serialization=True)
    _write_tiny_tokenizer(out_dir)
    return out_dir


@pytest.fixture
def tiny_model_dir(tiny_model_template: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model directory that a test may damage."""
    return Path(shutil.copytree(tiny_model_template, tmp_path / "tiny-llama"))


@pytest.fixture
def make_hub_cache(tiny_model_template: Path, tmp_path: Path) -> Callable[[str, str], Path]:
    """Lay the tiny model out as huggingface_hub's cache: make(repo_id, sha) -> snapshot dir.

    Layout: <cache>/models--org--name/{blobs/, refs/main, snapshots/<sha>/<files>}; snapshot
    files are normally symlinks into blobs/, plain copies are accepted just the same.
    """
    cache = tmp_path / "hf-cache"

    def make(repo_id: str, sha: str, *, is_main: bool = True) -> Path:
        repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo_dir / "snapshots" / sha
        shutil.copytree(tiny_model_template, snapshot)
        if is_main:
            (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
            (repo_dir / "refs" / "main").write_text(sha)
        return snapshot

    return make


@pytest.fixture
def hub_cache_dir(tmp_path: Path) -> Path:
    """The directory make_hub_cache fills."""
    return tmp_path / "hf-cache"


GGUF_TOKENS = ["<unk>", "<s>", "</s>", "h", "e", "l", "o", "he", "ll", "hell", "hello", "Ġ"]
GGUF_MERGES = ["h e", "l l", "he ll", "hell o"]
_GGUF_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_GGUF_LAYER_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _llama_cpp_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf.py), which transformers undoes on load."""
    shape = weight.shape
    halves = weight.reshape(num_heads, 2, shape[0] // num_heads // 2, *shape[1:])
    return np.ascontiguousarray(halves.swapaxes(1, 2).reshape(shape))


def _gguf_tensor(name: str, weight: np.ndarray) -> tuple[str, np.ndarray]:
    """GGUF name and row order of one HF Llama tensor (4 query heads, 2 kv heads)."""
    if name in _GGUF_GLOBAL_NAMES:
        return _GGUF_GLOBAL_NAMES[name], weight
    _, _, layer, *rest = name.split(".")
    module = ".".join(rest[:-1])
    if module == "self_attn.q_proj":
        weight = _llama_cpp_permute(weight, 4)
    elif module == "self_attn.k_proj":
        weight = _llama_cpp_permute(weight, 2)
    return f"blk.{layer}.{_GGUF_LAYER_NAMES[module]}.weight", weight


def _write_gguf_metadata(writer: gguf.GGUFWriter) -> None:
    """Llama hyper-parameters, a byte-level BPE tokenizer and a chat template."""
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(16)
    writer.add_vocab_size(len(GGUF_TOKENS))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(GGUF_TOKENS)
    writer.add_token_types([3, 3, 3] + [1] * (len(GGUF_TOKENS) - 3))
    writer.add_token_merges(GGUF_MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_chat_template("{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}")


def write_tiny_gguf(
    path: Path, *, is_tied: bool, linear_types: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """Write a 2-layer Llama GGUF to path; return the HF state dict it should convert to.

    Tensors are F32, except that the decoder linears take ggml block types from linear_types
    in turn (`Q4_1`, ...), as llama.cpp quantizes them; their state is then the dequantized one."""
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(GGUF_TOKENS),
        max_position_embeddings=128,
        tie_word_embeddings=is_tied,
    )
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in LlamaForCausalLM(config).state_dict().items()}
    if is_tied:
        state.pop("lm_head.weight")
    writer = gguf.GGUFWriter(str(path), "llama")
    _write_gguf_metadata(writer)
    linears = [name for name in state if name.endswith("_proj.weight")]
    for name, tensor in state.items():
        gguf_name, data = _gguf_tensor(name, tensor.numpy())
        if linear_types and name in linears:
            kind = gguf.GGMLQuantizationType[linear_types[linears.index(name) % len(linear_types)]]
            blocks = gguf.quants.quantize(data, kind)
            writer.add_tensor(gguf_name, blocks, raw_dtype=kind)
            # Quantizing is row by row, so the HF row order dequantizes alike.
            dequantized = gguf.quants.dequantize(gguf.quants.quantize(tensor.numpy(), kind), kind)
            state[name] = torch.from_numpy(dequantized)
        else:
            writer.add_tensor(gguf_name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return state


@dataclass(frozen=True, slots=True)
class TinyGguf:
    """A tiny GGUF on disk and the HF state dict its conversion must reproduce exactly."""

    path: Path
    state: dict[str, torch.Tensor]


@pytest.fixture
def make_tiny_gguf(tmp_path: Path) -> Callable[..., TinyGguf]:
    """make(name="tiny.gguf", is_tied=False, linear_types=()) -> TinyGguf."""

    def make(
        name: str = "tiny.gguf", *, is_tied: bool = False, linear_types: tuple[str, ...] = ()
    ) -> TinyGguf:
        path = tmp_path / name
        state = write_tiny_gguf(path, is_tied=is_tied, linear_types=linear_types)
        return TinyGguf(path=path, state=state)

    return make
