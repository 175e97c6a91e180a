"""The flags of the `guarded` server (tests/e2e/conftest.py): an API key, and every limit of
the HTTP edge set low enough to reach in a test."""

from tests.e2e.server import SHORT_PROMPTS_FLAGS

API_KEY = "Sesame-42"
MAX_CONNECTIONS = 32
READ_TIMEOUT_S = 2
GUARDED_FLAGS = (
    "--api-key",
    API_KEY,
    "--payload-limit",
    "5000",
    "--cors-allow-origin",
    "http://allowed.example",
    "--max-concurrent-requests",
    "2",
    "--json-output",
    *("--max-connections", str(MAX_CONNECTIONS)),
    *("--max-header-bytes", "16384", "--request-read-timeout", str(READ_TIMEOUT_S)),
    *SHORT_PROMPTS_FLAGS,
)
