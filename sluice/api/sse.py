"""Server-sent-event framing: one `data: <json>` line and a blank line per event."""

import json
from collections.abc import Mapping
from typing import Any


def sse_event(payload: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


DONE_EVENT = b"data: [DONE]\n\n"
"""The last event of the OpenAI-compatible streams (never of /generate_stream)."""


def openai_error_event(message: str) -> bytes:
    """An error inside an OpenAI-compatible stream; TGI sends 422 whatever the cause."""
    return sse_event({"error": {"message": message, "http_status_code": 422}})
