"""Server-sent-event framing: one `data: <json>` line and a blank line per event."""

import json
from collections.abc import Mapping
from typing import Any


def sse_event(payload: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()
