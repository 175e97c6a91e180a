"""/generate and /generate_stream against a real server, as a TGI client sees them."""

import concurrent.futures

import httpx
import pytest

from tests.e2e.server import SluiceServer, metric_samples, stream_events

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
PROMPTS = [
    CHAT.format(question)
    for question in (
        "What is a sluice?",
        "Name three rivers in Europe.",
        "Write a haiku about the sea.",
        "How do locks on a canal work?",
        "Explain photosynthesis briefly.",
        "What is 12 times 7?",
        "Give me a tip for learning Python.",
        "Why is the sky blue?",
        "Describe a cat in one sentence.",
        "What is the capital of Japan?",
        "Translate 'good morning' into French.",
        "Suggest a name for a sailboat.",
        "What does a lighthouse keeper do?",
        "List two uses of copper.",
        "What is a prime number?",
        "Tell me a fun fact about octopuses.",
    )
]


def test_health_and_info(server: SluiceServer) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200
    info = httpx.get(f"{server.url}/info").json()
    assert info["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert info["max_input_tokens"] < info["max_total_tokens"]
    assert info["router"] == "text-generation-router"


def test_generate_greedy_with_details(server: SluiceServer) -> None:
    body = {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 20, "details": True}}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=60)
    assert response.status_code == 200
    payload = response.json()
    details = payload["details"]
    assert details["seed"] is None  # greedy
    assert details["finish_reason"] in ("length", "eos_token")
    assert details["generated_tokens"] == len(details["tokens"]) <= 20
    assert details["prefill"] == []
    texts = [t["text"] for t in details["tokens"] if not t["special"]]
    assert payload["generated_text"] == "".join(texts)
    assert "sluice" in payload["generated_text"].lower()
    assert all(t["logprob"] <= 0 for t in details["tokens"])


def test_generate_without_details_omits_them(server: SluiceServer) -> None:
    body = {"inputs": PROMPTS[1], "parameters": {"max_new_tokens": 5}}
    payload = httpx.post(f"{server.url}/generate", json=body, timeout=60).json()
    assert set(payload) == {"generated_text"}


def test_stream_tokens_concatenate_to_generated_text(fp32_server: SluiceServer) -> None:
    # float32: the repeat finds the prompt cached; bfloat16 may round its tail differently.
    body = {"inputs": PROMPTS[2], "parameters": {"max_new_tokens": 40, "details": True}}
    with httpx.Client() as client:
        events = stream_events(client, fp32_server.url, body)
    final = events[-1]
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    texts = [e["token"]["text"] for e in events if not e["token"]["special"]]
    assert final["generated_text"] == "".join(texts)
    assert final["details"]["generated_tokens"] == len(events)
    assert final["details"]["input_length"] > 0
    alone = httpx.post(f"{fp32_server.url}/generate", json=body, timeout=60).json()
    assert alone["generated_text"] == final["generated_text"]


def test_stream_multibyte_characters_survive(server: SluiceServer) -> None:
    prompt = CHAT.format("Reply with three emoji and the word café, nothing else.")
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 30}}
    with httpx.Client() as client:
        events = stream_events(client, server.url, body)
    text = "".join(e["token"]["text"] for e in events if not e["token"]["special"])
    assert text == events[-1]["generated_text"]
    assert "\ufffd" not in text


def test_sampling_with_seed_is_reproducible(fp32_server: SluiceServer) -> None:
    # float32: the repeat reuses the first request's cached prompt blocks and computes only the
    # rest, a step of another shape, whose bfloat16 rounding could tip a sampled token.
    params = {"max_new_tokens": 15, "do_sample": True, "seed": 42, "top_k": 20, "details": True}
    body = {"inputs": PROMPTS[3], "parameters": params}
    first = httpx.post(f"{fp32_server.url}/generate", json=body, timeout=60).json()
    second = httpx.post(f"{fp32_server.url}/generate", json=body, timeout=60).json()
    assert first["generated_text"] == second["generated_text"]
    assert first["details"]["seed"] == 42


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"temperature": 0}, "`temperature` must be strictly positive"),
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ],
)
def test_generate_rejects_bad_parameters(server: SluiceServer, parameters, message) -> None:
    body = {"inputs": "Hello", "parameters": parameters}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=60)
    assert response.status_code == 422
    assert response.json() == {
        "error": f"Input validation error: {message}",
        "error_type": "validation",
    }


def test_generate_rejects_too_many_tokens(server: SluiceServer) -> None:
    info = httpx.get(f"{server.url}/info").json()
    max_total, max_input = info["max_total_tokens"], info["max_input_tokens"]
    # Over the total budget: reported first, even though the prompt is also too long.
    body = {"inputs": "hello " * max_total, "parameters": {"max_new_tokens": 20}}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=60)
    assert response.status_code == 422
    assert response.json()["error"].startswith(
        f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {max_total}. "
        "Given: "
    )
    # Within the total budget but over the input limit.
    body = {"inputs": "hello " * (max_input + 10), "parameters": {"max_new_tokens": 5}}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=60)
    assert response.status_code == 422
    assert response.json()["error"].startswith(
        f"Input validation error: `inputs` must have less than {max_input} tokens. Given: "
    )


def test_stream_validation_error_is_an_event(server: SluiceServer) -> None:
    body = {"inputs": "Hello", "parameters": {"temperature": -1}}
    with httpx.Client() as client:
        events = stream_events(client, server.url, body)
    assert events == [
        {
            "error": "Input validation error: `temperature` must be strictly positive",
            "error_type": "validation",
        }
    ]


def test_malformed_bodies(server: SluiceServer) -> None:
    bad_json = httpx.post(
        f"{server.url}/generate", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert bad_json.json()["error_type"] == "validation"
    wrong_shape = httpx.post(f"{server.url}/generate", json={"parameters": {}})
    assert wrong_shape.status_code == 422
    assert "inputs" in wrong_shape.json()["error"]


def _greedy_stream(server_url: str, prompt: str) -> str:
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 24}}
    with httpx.Client() as client:
        events = stream_events(client, server_url, body)
    return events[-1]["generated_text"]


def test_concurrent_streams_share_steps_and_match_solo_outputs(fp32_server: SluiceServer) -> None:
    url = fp32_server.url
    alone = [_greedy_stream(url, prompt) for prompt in PROMPTS]
    before = metric_samples(httpx.get(f"{url}/metrics").text, "sluice_step_batch_size")
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda p: _greedy_stream(url, p), PROMPTS))
    after = metric_samples(httpx.get(f"{url}/metrics").text, "sluice_step_batch_size")
    assert together == alone

    # The concurrent run computed more than 8 requests in some steps (counted as a difference:
    # the server may be shared with other tests).
    def big_steps(samples: dict[str, float]) -> float:
        return (
            samples["sluice_step_batch_size_count"]
            - samples['sluice_step_batch_size_bucket{le="8.0"}']
        )

    assert big_steps(after) > big_steps(before)


def test_stop_sequence_ends_generation_even_inside_a_token(server: SluiceServer) -> None:
    body = {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 30, "details": True}}
    full = httpx.post(f"{server.url}/generate", json=body, timeout=60).json()["generated_text"]
    # A stop string that ends inside the fourth word: TGI would never fire on it.
    words = full.split(" ")
    stop = " ".join(words[:4])[:-1]
    body["parameters"]["stop"] = [stop]
    stopped = httpx.post(f"{server.url}/generate", json=body, timeout=60).json()
    assert stopped["generated_text"] == full[: full.index(stop) + len(stop)]
    assert stopped["details"]["finish_reason"] == "stop_sequence"
    with httpx.Client() as client:
        events = stream_events(client, server.url, {**body, "parameters": body["parameters"]})
    assert events[-1]["generated_text"] == stopped["generated_text"]
    assert "".join(e["token"]["text"] for e in events) == stopped["generated_text"]
    assert events[-1]["details"]["finish_reason"] == "stop_sequence"


def test_too_many_stop_sequences(server: SluiceServer) -> None:
    body = {"inputs": "Hi", "parameters": {"stop": ["a", "b", "c", "d", "e"]}}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=60)
    assert response.status_code == 422
    assert response.json()["error"] == (
        "Input validation error: `stop` supports up to 4 stop sequences. Given: 5"
    )
