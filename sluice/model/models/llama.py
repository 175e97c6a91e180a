"""The Llama family: Llama 2/3, SmolLM2, Mistral and Qwen2 (GQA, RoPE with scaling, tied
embeddings, optional attention bias), over a paged KV cache.

Checkpoint names follow Hugging Face; `load_weights` folds q/k/v and gate/up into the fused
layers through each parameter's weight loader."""

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from transformers import PretrainedConfig

from sluice.distributed.parallel_context import ParallelContext
from sluice.distributed.sharding import even_split, head_dim_of
from sluice.model.attention.backend import AttentionBackend, AttentionMetadata
from sluice.model.layers.activation import SiluAndMul
from sluice.model.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from sluice.model.layers.linear import (
    ColumnParallelLinear,
    LinearMethod,
    QKVParallelLinear,
    RowParallelLinear,
    expect_shape,
)
from sluice.model.layers.norm import RMSNorm
from sluice.model.layers.rotary import RotaryEmbedding
from sluice.model.quantized_loading import QuantizedLinearLoader
from sluice.quantization.scheme import QuantizationScheme

MethodFactory = Callable[[], LinearMethod | None]
"""Makes the linear method of each projection (None: dense)."""


class LlamaAttention(nn.Module):
    def __init__(
        self,
        config: PretrainedConfig,
        parallel: ParallelContext,
        backend: AttentionBackend,
        rotary: RotaryEmbedding,
        dtype: torch.dtype,
        method: MethodFactory,
    ) -> None:
        super().__init__()
        self.head_dim = head_dim_of(config)
        # Qwen2 has biases on q/k/v but not on o; Llama's `attention_bias` covers both.
        attention_bias = bool(getattr(config, "attention_bias", False))
        qkv_bias = attention_bias or config.model_type == "qwen2"
        self.qkv_proj = QKVParallelLinear(
            config.hidden_size,
            self.head_dim,
            config.num_attention_heads,
            config.num_key_value_heads,
            bias=qkv_bias,
            parallel=parallel,
            dtype=dtype,
            method=method(),
        )
        self.num_heads = self.qkv_proj.num_heads
        self.num_kv_heads = self.qkv_proj.num_kv_heads
        self.o_proj = RowParallelLinear(
            config.num_attention_heads * self.head_dim,
            config.hidden_size,
            bias=attention_bias,
            parallel=parallel,
            dtype=dtype,
            method=method(),
            pieces=self.qkv_proj.heads.query_pieces(),
        )
        self.rotary = rotary
        self.backend = backend
        self.scale = self.head_dim**-0.5

    def forward(
        self,
        positions: torch.Tensor,
        hidden: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        qkv = self.qkv_proj(hidden)  # [num_tokens, (heads + 2 * kv_heads) * head_dim]
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        q, k = self.rotary(positions, q, k)
        out = self.backend.forward(q, k, v, kv_cache, metadata, self.scale)
        return self.o_proj(out.reshape(-1, q_size))


class LlamaMLP(nn.Module):
    def __init__(
        self,
        config: PretrainedConfig,
        parallel: ParallelContext,
        dtype: torch.dtype,
        method: MethodFactory,
        split_unit: int,
    ) -> None:
        """`split_unit`: intermediate features a shard's part keeps together (a
        quantization group)."""
        super().__init__()
        if config.hidden_act != "silu":
            raise ValueError(f"unsupported activation {config.hidden_act!r}")
        size = config.intermediate_size
        bias = bool(getattr(config, "mlp_bias", False))
        mine = even_split(size, parallel.tp_size, parallel.tp_rank, split_unit)
        self.gate_up_proj = ColumnParallelLinear(
            config.hidden_size,
            [size, size],
            bias=bias,
            parallel=parallel,
            dtype=dtype,
            method=method(),
            pieces=[[mine], [mine]],
        )
        self.down_proj = RowParallelLinear(
            size,
            config.hidden_size,
            bias=bias,
            parallel=parallel,
            dtype=dtype,
            method=method(),
            pieces=[mine],
        )
        self.act = SiluAndMul()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(hidden)))


class LlamaDecoderLayer(nn.Module):
    def __init__(
        self,
        config: PretrainedConfig,
        parallel: ParallelContext,
        backend: AttentionBackend,
        rotary: RotaryEmbedding,
        dtype: torch.dtype,
        method: MethodFactory,
        split_unit: int,
    ) -> None:
        super().__init__()
        eps = config.rms_norm_eps
        self.input_layernorm = RMSNorm(config.hidden_size, eps, dtype=dtype)
        self.self_attn = LlamaAttention(config, parallel, backend, rotary, dtype, method)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, dtype=dtype)
        self.mlp = LlamaMLP(config, parallel, dtype, method, split_unit)

    def forward(
        self,
        positions: torch.Tensor,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        normed, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, normed, kv_cache, metadata)
        normed, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(normed), residual


class LlamaForCausalLM(nn.Module):
    # Checkpoint projection name -> (fused parameter name, shard id).
    FUSED_PROJECTIONS = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }
    # Fused layer -> its projections' shard ids in output order.
    SHARD_ORDER: dict[str, tuple[str | int | None, ...]] = {
        "qkv_proj": ("q", "k", "v"),
        "gate_up_proj": (0, 1),
    }

    def __init__(
        self,
        config: PretrainedConfig,
        *,
        parallel: ParallelContext,
        backend: AttentionBackend,
        dtype: torch.dtype,
        quantization: QuantizationScheme | None = None,
    ) -> None:
        """`quantization`: the decoder layers' projections run quantized (embeddings and the
        LM head stay in `dtype`)."""
        super().__init__()
        self.config = config
        self.quantization = quantization
        method: MethodFactory = (
            (lambda: None) if quantization is None else quantization.linear_method
        )
        head_dim = head_dim_of(config)
        rotary = RotaryEmbedding(config, head_dim, config.max_position_embeddings)
        self.embed_tokens = VocabParallelEmbedding(
            config.vocab_size, config.hidden_size, parallel=parallel, dtype=dtype
        )
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(
                config,
                parallel,
                backend,
                rotary,
                dtype,
                method,
                split_unit=1 if quantization is None else quantization.split_unit,
            )
            for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.lm_head = ParallelLMHead(
            config.vocab_size, config.hidden_size, parallel=parallel, dtype=dtype
        )
        if getattr(config, "tie_word_embeddings", False):
            self.lm_head.weight = self.embed_tokens.weight

    def forward(
        self,
        token_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: Sequence[torch.Tensor],
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        """token_ids, positions: [num_tokens]. Returns final hidden states [num_tokens, hidden]."""
        hidden = self.embed_tokens(token_ids)
        residual = None
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            hidden, residual = layer(positions, hidden, residual, kv_cache, metadata)
        hidden, _ = self.norm(hidden, residual)
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [num_rows, hidden]. Returns float32 logits [num_rows, vocab_size]."""
        return self.lm_head.compute_logits(hidden).float()

    def load_weights(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy checkpoint tensors (Hugging Face names) into this model's shard."""
        params = dict(self.named_parameters(remove_duplicate=False))
        loaded: set[str] = set()
        quantized = self._quantized_loader()
        for name, tensor in tensors:
            target, shard_id = self._parameter_for(name)
            if target is None:
                continue
            module_name, _, part = target.rpartition(".")
            if quantized is not None and quantized.claims(module_name, part):
                fused = module_name.rpartition(".")[2]
                order = self.SHARD_ORDER.get(fused, (None,))
                quantized.add(module_name, shard_id, part, tensor, order)
                continue
            if target not in params:
                raise ValueError(f"checkpoint tensor {name} has no place in the model")
            param = params[target]
            loader = getattr(param, "weight_loader", None)
            try:
                if loader is None:
                    expect_shape(tensor, param.shape)
                    param.data.copy_(tensor)
                else:
                    loader(param, tensor, shard_id)  # converts only this shard's part
            except ValueError as error:
                raise ValueError(f"checkpoint tensor {name} {error}") from error
            loaded.add(target)
        if quantized is not None:
            quantized.check_complete()
            loaded |= {
                f"{module}.{name}"
                for module in quantized.loaded
                for name, _ in quantized.layers[module].named_parameters(recurse=False)
                if name != "bias"
            }
        tied = self.lm_head.weight is self.embed_tokens.weight
        missing = {n for n in params if n not in loaded and not (tied and n == "lm_head.weight")}
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[0]}")

    def _quantized_loader(self) -> QuantizedLinearLoader | None:
        scheme = self.quantization
        if scheme is None:
            return None
        layers = {
            name: module
            for name, module in self.layers.named_modules(prefix="layers")
            if name.rpartition(".")[2] in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
        }
        return QuantizedLinearLoader(scheme, layers)

    def _parameter_for(self, name: str) -> tuple[str | None, str | int | None]:
        if "rotary_emb" in name:
            return None, None
        if name.startswith("model."):
            name = name.removeprefix("model.")
        if name == "lm_head.weight" and self.lm_head.weight is self.embed_tokens.weight:
            return None, None
        for checkpoint_name, (fused_name, shard_id) in self.FUSED_PROJECTIONS.items():
            if f".{checkpoint_name}." in name:
                return name.replace(checkpoint_name, fused_name), shard_id
        return name, None
