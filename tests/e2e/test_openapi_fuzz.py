"""schemathesis generates requests from /openapi.json for every operation; none may get a 5xx.

The server under fuzz has tiny token limits, so that any generation the fuzzer asks for is a
few steps: the fuzzer's requests then take about 30 s in all on a 2-core CPU, not 2 minutes.
The fuzzer runs as its CLI, in a subprocess."""

import subprocess
import sys
from pathlib import Path

from tests.e2e.server import SluiceServer

FLAGS = ("--max-total-tokens", "12", "--max-input-tokens", "8", "--max-batch-prefill-tokens", "16")
SCHEMATHESIS = Path(sys.executable).parent / "st"


def test_openapi_fuzzing_finds_no_server_error(tmp_path: Path) -> None:
    server = SluiceServer(*FLAGS, log_path=tmp_path / "fuzzed.log")
    try:
        server.health_statuses_until_ready()
        command = [
            str(SCHEMATHESIS),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "15",
            "--workers",
            "1",  # two worker threads can trip CPython 3.11's AST recursion check in hypothesis
            "--request-timeout",
            "60",
            "--generation-deterministic",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=280, cwd=tmp_path)
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout[-4000:]
