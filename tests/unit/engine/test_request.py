"""Request: token bookkeeping across prompt and output, and TGI's order of stop reasons."""

import pytest

from sluice.engine.request import Request, RequestStatus
from sluice.ipc.messages import FinishReason
from sluice.sampling_params import SamplingParams

EOS = 2


def _request(**sampling: object) -> Request:
    params = SamplingParams(**{"max_new_tokens": 4, **sampling})  # type: ignore[arg-type]
    return Request("r", [10, 11, 12], params)


def test_request_starts_waiting_with_every_token_uncomputed() -> None:
    request = _request()

    assert request.status is RequestStatus.WAITING
    assert (request.num_tokens, request.num_uncomputed_tokens) == (3, 3)


def test_request_counts_output_tokens_as_known_tokens() -> None:
    request = _request()
    request.output_token_ids += [20, 21]
    request.num_computed_tokens = 4

    assert (request.num_tokens, request.num_uncomputed_tokens) == (5, 1)


@pytest.mark.parametrize(
    ("start", "count", "expected"),
    [
        (0, 3, (10, 11, 12)),
        (1, 2, (11, 12)),
        (2, 3, (12, 20, 21)),  # across the prompt/output boundary
        (3, 2, (20, 21)),
        (4, 1, (21,)),
        (0, 5, (10, 11, 12, 20, 21)),
    ],
)
def test_request_token_ids_from_reads_prompt_then_output(
    start: int, count: int, expected: tuple[int, ...]
) -> None:
    request = _request()
    request.output_token_ids += [20, 21]

    assert request.token_ids_from(start, count) == expected


@pytest.mark.parametrize(
    ("sampling", "outputs", "reason"),
    [
        ({}, [5], None),
        ({}, [5, 6, 7, 8], FinishReason.LENGTH),
        ({"stop_token_ids": (EOS,)}, [5, EOS], FinishReason.EOS_TOKEN),
        ({"stop_token_ids": (EOS, 9)}, [9], FinishReason.EOS_TOKEN),
        ({}, [EOS], None),  # EOS only stops when it is a stop token
        ({"stop_token_ids": (EOS,), "ignore_eos": True}, [EOS], None),
        ({"stop_token_ids": (EOS,)}, [5, 6, 7, EOS], FinishReason.LENGTH),  # length wins
        ({"stop_token_ids": (EOS,), "max_new_tokens": 1}, [EOS], FinishReason.LENGTH),
    ],
)
def test_request_check_finished(
    sampling: dict[str, object], outputs: list[int], reason: FinishReason | None
) -> None:
    request = _request(**sampling)
    request.output_token_ids += outputs

    assert request.check_finished() is reason
