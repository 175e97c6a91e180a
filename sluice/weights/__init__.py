"""Model weights on disk: resolve a --model-id (embedded default, local directory, local GGUF or
Hub repo) into a local Hugging Face layout directory, and read its safetensors tensors."""

from sluice.weights.safetensors_reader import iter_checkpoint_tensors
from sluice.weights.sources import DEFAULT_MODEL_ID, ResolvedModel, resolve_model

__all__ = ["DEFAULT_MODEL_ID", "ResolvedModel", "iter_checkpoint_tensors", "resolve_model"]
