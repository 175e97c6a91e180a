"""Every message type survives a msgpack round trip through the decoders the transport uses."""

import msgspec
import pytest

from sluice.config import ServingLimits
from sluice.ipc.messages import (
    AbortRequests,
    AddRequest,
    EngineFailed,
    EngineInput,
    EngineOutput,
    EngineReady,
    FinishReason,
    RequestOutput,
    StepOutputs,
    StepStats,
)
from sluice.sampling_params import SamplingParams, Watermark

_STATS = StepStats(
    step_index=3,
    num_requests=2,
    num_prefill_tokens=17,
    num_decode_tokens=1,
    duration_s=0.0125,
    num_waiting=4,
    num_running=2,
    num_free_blocks=90,
    num_blocks=128,
    block_size=16,
    num_failed_requests=1,
)
_LIMITS = ServingLimits(
    max_input_tokens=4095,
    max_total_tokens=4096,
    max_batch_prefill_tokens=4096,
    max_batch_total_tokens=65536,
    block_size=16,
    num_kv_blocks=4096,
)

INPUTS = [
    AddRequest("greedy", [1, 2, 3], SamplingParams(max_new_tokens=5)),
    AddRequest(
        "sampled",
        [0],
        SamplingParams(
            max_new_tokens=1024,
            do_sample=True,
            temperature=0.7,
            top_k=40,
            top_p=0.95,
            seed=2**64 - 1,  # secrets.randbits(64) can draw it
            stop_token_ids=(2, 49152),
            ignore_eos=True,
        ),
    ),
    AddRequest(
        "every-feature",
        [1, 2],
        SamplingParams(
            max_new_tokens=3,
            typical_p=0.5,
            repetition_penalty=1.3,
            frequency_penalty=-0.5,
            watermark=Watermark(gamma=0.25, delta=3.0),
            top_n_tokens=5,
            prompt_logprobs=True,
        ),
    ),
    AbortRequests(["a", "b"]),
    AbortRequests([]),
]
OUTPUTS = [
    StepOutputs(
        outputs=[
            RequestOutput("a", [5], [-0.25]),
            RequestOutput("b", [7, 8], [-1.5, -0.0], FinishReason.EOS_TOKEN),
            RequestOutput("c", [9], [-2.0], FinishReason.LENGTH),
            RequestOutput("d", [], [], error="RuntimeError: device fell over"),
            RequestOutput(
                "e",
                [4],
                [-0.1],
                top_token_ids=[[4, 6]],
                top_logprobs=[[-0.1, -2.5]],
                prompt_logprobs=[-3.0, -0.75],
            ),
        ],
        stats=_STATS,
    ),
    StepOutputs(outputs=[], stats=_STATS),
    EngineReady(limits=_LIMITS, dtype="bfloat16", device="cuda:0"),
    EngineFailed(message="not enough memory for the KV cache"),
]


@pytest.mark.parametrize("message", INPUTS, ids=lambda m: type(m).__name__)
def test_messages_engine_input_round_trips(message: EngineInput) -> None:
    decoded = msgspec.msgpack.Decoder(EngineInput).decode(msgspec.msgpack.encode(message))

    assert type(decoded) is type(message)
    assert decoded == message


@pytest.mark.parametrize("message", OUTPUTS, ids=lambda m: type(m).__name__)
def test_messages_engine_output_round_trips(message: EngineOutput) -> None:
    decoded = msgspec.msgpack.Decoder(EngineOutput).decode(
        msgspec.msgpack.Encoder().encode(message)
    )

    assert type(decoded) is type(message)
    assert decoded == message


def test_messages_round_trip_keeps_value_types() -> None:
    add, step = INPUTS[1], OUTPUTS[0]

    decoded_add = msgspec.msgpack.Decoder(EngineInput).decode(msgspec.msgpack.encode(add))
    decoded_step = msgspec.msgpack.Decoder(EngineOutput).decode(msgspec.msgpack.encode(step))

    assert isinstance(decoded_add.sampling.stop_token_ids, tuple)
    assert decoded_step.outputs[1].finish_reason is FinishReason.EOS_TOKEN
    ready = msgspec.msgpack.Decoder(EngineOutput).decode(msgspec.msgpack.encode(OUTPUTS[2]))
    assert isinstance(ready.limits, ServingLimits)


def test_messages_an_input_decoder_rejects_outputs() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.Decoder(EngineInput).decode(msgspec.msgpack.encode(OUTPUTS[3]))
