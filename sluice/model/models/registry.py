"""Architecture name (config.json `architectures`) -> model class."""

from typing import Final

from torch import nn

from sluice.model.models.llama import LlamaForCausalLM

MODEL_CLASSES: Final[dict[str, type[nn.Module]]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
}


def model_class_for(architectures: list[str] | None) -> type[nn.Module]:
    for name in architectures or []:
        if name in MODEL_CLASSES:
            return MODEL_CLASSES[name]
    supported = ", ".join(sorted(MODEL_CLASSES))
    raise ValueError(f"unsupported architecture {architectures}; sluice serves {supported}")
