"""sluice: an LLM inference server that speaks Text Generation Inference's API."""

__version__ = "0.1.0"
