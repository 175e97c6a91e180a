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


class DroppedError(SluiceError):
    """A generation abandoned before its end: its client went away, or another generation of
    the same request failed. Counted as TGI's `dropped`; the 499 reaches nobody."""

    error_type = "dropped"

    def __init__(self) -> None:
        super().__init__("Request dropped before it finished")


class NotReadyError(SluiceError):
    """The model is still loading, or the engine cannot serve (HTTP 503)."""

    error_type = "unhealthy"


class ShuttingDownError(SluiceError):
    """The server stopped before the request finished: it ran past the graceful-termination
    timeout (HTTP 503)."""

    error_type = "unhealthy"


class EngineDeadError(SluiceError):
    """The engine process is gone; /health fails and the server exits."""

    error_type = "generation"

    def __str__(self) -> str:
        return f"Request failed during generation: Server error: {super().__str__()}"


class TemplateError(SluiceError):
    """The chat template is missing or failed to render (HTTP 422)."""

    error_type = "template_error"

    def __str__(self) -> str:
        return f"Template error: {super().__str__()}"


class ToolError(SluiceError):
    """Tools that cannot be used as asked, or a tool call that cannot be parsed (HTTP 422)."""

    error_type = "tool_error"

    def __str__(self) -> str:
        return f"Tool error: {super().__str__()}"


class SuffixNotSupportedError(SluiceError):
    """/v1/completions with a `suffix` (HTTP 422)."""

    error_type = "suffix not supported"

    def __init__(self) -> None:
        super().__init__("Suffix is not supported and can be achieved by preprocessing the prompt.")


class ClientBatchSizeError(SluiceError):
    """/v1/completions with more prompts than --max-client-batch-size (HTTP 422)."""

    error_type = "batch size exceeded"

    def __init__(self, max_client_batch_size: int) -> None:
        super().__init__(
            f"Number of prompts exceeds the maximum allowed batch size of {max_client_batch_size}"
        )
