"""The exception hierarchy. Each class knows its TGI `error_type`; api/error_mapping.py maps
classes to HTTP status codes in one table."""


class SluiceError(Exception):
    """Base of every error sluice raises on purpose."""

    error_type = "internal"


class ConfigError(SluiceError):
    """Inconsistent or invalid launcher flags; the server refuses to start."""

    error_type = "config"


class ModelLoadError(SluiceError):
    """A model that cannot be found, fetched or read. The message is one line for the user."""

    error_type = "model_load"


class ValidationError(SluiceError):
    """A request that breaks a rule (HTTP 422). The message is TGI's rule text."""

    error_type = "validation"

    def __str__(self) -> str:
        return f"Input validation error: {super().__str__()}"


class OverloadedError(SluiceError):
    """No concurrency permit left (HTTP 429)."""

    error_type = "overloaded"

    def __init__(self) -> None:
        super().__init__("Model is overloaded")


class GenerationError(SluiceError):
    """Generation failed after the request was accepted (HTTP 424)."""

    error_type = "generation"

    def __str__(self) -> str:
        return f"Request failed during generation: Server error: {super().__str__()}"


class IncompleteGenerationError(SluiceError):
    """The engine stopped answering a request before its final token (HTTP 500)."""

    error_type = "incomplete_generation"

    def __init__(self) -> None:
        super().__init__("Incomplete generation")


class NotReadyError(SluiceError):
    """The model is still loading, or the engine cannot serve (HTTP 503)."""

    error_type = "unhealthy"


class EngineDeadError(SluiceError):
    """The engine process is gone; /health fails and the server exits."""

    error_type = "generation"

    def __str__(self) -> str:
        return f"Request failed during generation: Server error: {super().__str__()}"
