"""SluiceError class -> HTTP status, in one table (TGI's router does the same)."""

from typing import Final

from sluice.api.schemas import ErrorResponse
from sluice.errors import (
    ClientBatchSizeError,
    DroppedError,
    EngineDeadError,
    GenerationError,
    IncompleteGenerationError,
    NotReadyError,
    OverloadedError,
    ShuttingDownError,
    SluiceError,
    SuffixNotSupportedError,
    TemplateError,
    ToolError,
    ValidationError,
)

STATUS_BY_ERROR: Final[dict[type[SluiceError], int]] = {
    ValidationError: 422,
    OverloadedError: 429,
    GenerationError: 424,
    EngineDeadError: 424,
    IncompleteGenerationError: 500,
    NotReadyError: 503,
    ShuttingDownError: 503,
    TemplateError: 422,
    ToolError: 422,
    SuffixNotSupportedError: 422,
    ClientBatchSizeError: 422,
    DroppedError: 499,  # nginx's "client closed request"
}


def status_for(error: SluiceError) -> int:
    for error_class in type(error).__mro__:
        if error_class in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[error_class]
    return 500


def error_body(error: SluiceError) -> dict[str, str]:
    return {"error": str(error), "error_type": error.error_type}


ERROR_RESPONSES: Final[dict[int | str, dict[str, object]]] = {
    code: {"model": ErrorResponse} for code in (422, 424, 429, 500)
}
"""The error statuses of the generation routes, for the OpenAPI document."""
