"""Prefix caching in a real server: a request sharing a long prefix with an earlier one reuses
its blocks (the hit counter grows) and its greedy output is the one a cold run gives."""

import uuid

import httpx

from tests.e2e.server import SluiceServer, metric_samples

MANUAL = (
    "Operating manual for the lock keepers of the northern canal. Every gate is inspected "
    "before the spring floods, the hinges are greased each month, and each opening is logged "
    "with the time, the operator and the reason. Two operators must agree before a gate opens "
    "during a storm warning. Cracks wider than two millimetres are reported the same day. "
) * 4


def _generate(server: SluiceServer, inputs: str) -> httpx.Response:
    body = {"inputs": inputs, "parameters": {"max_new_tokens": 12, "ignore_eos": True}}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response


def _hit_tokens(server: SluiceServer) -> float:
    page = httpx.get(f"{server.url}/metrics").text
    return metric_samples(page, "sluice_prefix_cache_hit_tokens")["sluice_prefix_cache_hit_tokens"]


def test_prefix_cache_reuses_a_shared_prefix_and_keeps_outputs(fp32_server: SluiceServer) -> None:
    prefix = f"Manual copy {uuid.uuid4().hex}. {MANUAL}"  # cold: no earlier request shares it
    first = prefix + "Question: when may a gate open during a storm warning?"
    second = prefix + "Question: how often are the hinges greased?"

    hits_before = _hit_tokens(fp32_server)
    cold = _generate(fp32_server, first)
    hits_after_cold = _hit_tokens(fp32_server)
    assert int(cold.headers["x-prompt-tokens"]) > 200
    _generate(fp32_server, second)
    hits_after_second = _hit_tokens(fp32_server)
    warm = _generate(fp32_server, first)
    hits_after_warm = _hit_tokens(fp32_server)

    assert hits_after_cold == hits_before
    assert hits_after_second - hits_after_cold >= 192  # at least 12 of the shared blocks
    assert hits_after_warm - hits_after_second >= 192
    assert warm.json()["generated_text"] == cold.json()["generated_text"]
