"""A JavaScript client reads /generate_stream with fetch + getReader (Node.js 18+)."""

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import SluiceServer
from tests.e2e.test_generate import CHAT

SCRIPT = Path(__file__).parent / "js" / "stream_client.mjs"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_fetch_stream_concatenates_to_the_greedy_text(server: SluiceServer) -> None:
    prompt = CHAT.format("Name a famous bridge and say one thing about it. Use an emoji.")
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 40}}
    result = subprocess.run(
        ["node", str(SCRIPT), server.url, json.dumps(body)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    streamed = json.loads(result.stdout)
    greedy = httpx.post(f"{server.url}/generate", json=body, timeout=60).json()
    assert streamed["concatenated"] == streamed["generatedText"] == greedy["generated_text"]
    assert streamed["tokens"] >= 1
