"""Grammar matchers over the default model's real tokenizer, driven through EngineCore with a
fake runner that takes the lowest token id a mask allows: a regex and a JSON schema are
followed, the request ends with a stop token once the grammar is complete, unconstrained
rows are left alone, preemption and re-run steps keep the matchers right, and a grammar that
cannot compile ends its request alone."""

import itertools
import json
import re
from collections.abc import Iterator
from concurrent.futures import Future

import llguidance
import llguidance.hf
import numpy as np
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sluice.engine.core import EngineCore
from sluice.engine.executor import LocalExecutor
from sluice.engine.grammar import GrammarMatchers
from sluice.ipc.messages import AddRequest, FinishReason, RequestOutput
from sluice.model.sampling.sampler import TokenMasks
from sluice.model.step import RunnerOutput, SampledToken, ScheduledRequest, StepPlan
from sluice.sampling_params import GrammarSpec, JsonSchemaGrammar, RegexGrammar, SamplingParams
from sluice.weights import resolve_model
from tests.unit.engine.scheduler_driver import FakeRunner, make_scheduler

VOCAB = 49152
IM_END = 2
UNCONSTRAINED_TOKEN = 7
PHONE = "[0-9]{3}-[a-z]{4}"


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(resolve_model().path)


@pytest.fixture(scope="module")
def ll_tokenizer(tokenizer: PreTrainedTokenizerBase) -> llguidance.LLTokenizer:
    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=VOCAB)


@pytest.fixture
def grammars(ll_tokenizer: llguidance.LLTokenizer) -> Iterator[GrammarMatchers]:
    matchers = GrammarMatchers(ll_tokenizer, VOCAB)
    matchers.start()
    yield matchers


def _engine(
    grammars: GrammarMatchers | None, runner: FakeRunner | None = None, **scheduler: int
) -> EngineCore:
    return EngineCore(
        make_scheduler(**scheduler) if scheduler else make_scheduler(num_blocks=64),
        LocalExecutor(runner or FakeRunner(itertools.repeat(UNCONSTRAINED_TOKEN))),
        channel=None,  # type: ignore[arg-type]
        grammars=grammars,
    )


def _add(
    request_id: str,
    grammar: GrammarSpec | None,
    *,
    prompt_len: int = 5,
    max_new_tokens: int = 30,
    stop_token_ids: tuple[int, ...] = (IM_END,),
) -> AddRequest:
    sampling = SamplingParams(max_new_tokens, stop_token_ids=stop_token_ids, grammar=grammar)
    return AddRequest(request_id, list(range(1000, 1000 + prompt_len)), sampling)


def _run(engine: EngineCore, max_steps: int = 200) -> dict[str, list[RequestOutput]]:
    outputs: dict[str, list[RequestOutput]] = {}
    for _ in range(max_steps):
        if not engine.has_work:
            return outputs
        for output in engine.step().outputs:
            outputs.setdefault(output.request_id, []).append(output)
    raise AssertionError("the engine did not finish")


def _tokens(outputs: list[RequestOutput]) -> list[int]:
    return [token_id for output in outputs for token_id in output.token_ids]


def _allowed(words: np.ndarray) -> list[int]:
    return np.unpackbits(words.view(np.uint8), bitorder="little").nonzero()[0].tolist()


def test_grammar_regex_is_followed_and_ends_with_a_stop_token(
    grammars: GrammarMatchers, tokenizer: PreTrainedTokenizerBase
) -> None:
    engine = _engine(grammars)
    engine.handle(_add("free", None, max_new_tokens=4))
    engine.handle(_add("phone", RegexGrammar(PHONE)))

    outputs = _run(engine)

    *text_ids, last = _tokens(outputs["phone"])
    assert last == IM_END and outputs["phone"][-1].finish_reason == FinishReason.EOS_TOKEN
    assert re.fullmatch(PHONE, tokenizer.decode(text_ids))
    assert _tokens(outputs["free"]) == [UNCONSTRAINED_TOKEN] * 4
    assert "phone" not in grammars  # dropped once finished


def test_grammar_json_schema_is_followed(
    grammars: GrammarMatchers, tokenizer: PreTrainedTokenizerBase
) -> None:
    schema = {
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer"}},
        "required": ["ok", "n"],
    }
    engine = _engine(grammars)
    engine.handle(_add("json", JsonSchemaGrammar(json.dumps(schema))))

    outputs = _run(engine)

    *text_ids, last = _tokens(outputs["json"])
    assert last == IM_END
    parsed = json.loads(tokenizer.decode(text_ids))
    assert list(parsed) == ["ok", "n"]
    assert isinstance(parsed["ok"], bool) and isinstance(parsed["n"], int)


def test_grammar_masks_cover_only_constrained_sampling_rows(grammars: GrammarMatchers) -> None:
    runner = FakeRunner(itertools.repeat(UNCONSTRAINED_TOKEN))
    engine = _engine(grammars, runner)
    engine.handle(_add("free", None))
    engine.handle(_add("phone", RegexGrammar(PHONE)))

    engine.step()

    (masks,) = runner.masks
    assert masks is not None and masks.rows == (1,)
    digits = _allowed(masks.bitmask.numpy()[0])
    assert IM_END not in digits and UNCONSTRAINED_TOKEN not in digits


def test_grammar_complete_allows_only_the_requests_stop_tokens(
    grammars: GrammarMatchers, tokenizer: PreTrainedTokenizerBase
) -> None:
    """llguidance allows its tokenizer's EOS (2) at the end; the request's own stop tokens
    replace it there, and are never allowed before."""
    text = tokenizer('{"a":1}', add_special_tokens=False)["input_ids"]
    schema = JsonSchemaGrammar(json.dumps({"properties": {"a": {"type": "integer"}}}))
    sampling = SamplingParams(1, stop_token_ids=(0, 5), grammar=schema)
    assert grammars.add("r", sampling) is None
    plan = StepPlan((_scheduled("r", sampling),))

    before = grammars.masks(plan)
    assert grammars.advance([SampledToken("r", t, 0.0) for t in text]) == {}
    after = grammars.masks(plan)

    assert before is not None and after is not None
    assert not {0, 2, 5} & set(_allowed(before.bitmask.numpy()[0]))
    assert _allowed(after.bitmask.numpy()[0]) == [0, 5]


def test_grammar_preemption_keeps_matchers_right(
    grammars: GrammarMatchers, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Two requests that do not fit the cache together: one is preempted and recomputes its
    prompt and output, which must not feed its matcher a second time."""
    engine = _engine(grammars, num_blocks=8, block_size=4, max_step_tokens=16)
    for request_id in ("a", "b"):
        engine.handle(_add(request_id, RegexGrammar(PHONE), prompt_len=10))

    outputs = _run(engine)

    assert engine.scheduler.num_preemptions > 0
    for request_id in ("a", "b"):
        *text_ids, last = _tokens(outputs[request_id])
        assert last == IM_END
        assert re.fullmatch(PHONE, tokenizer.decode(text_ids))


class _FailsFirstCall(FakeRunner):
    def __init__(self) -> None:
        super().__init__(itertools.repeat(UNCONSTRAINED_TOKEN))
        self.calls = 0

    def execute(
        self, plan: StepPlan, token_masks: Future[TokenMasks] | None = None
    ) -> RunnerOutput:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("device fell over")
        return super().execute(plan, token_masks)


def test_grammar_survives_a_step_run_again_request_by_request(
    grammars: GrammarMatchers, tokenizer: PreTrainedTokenizerBase
) -> None:
    engine = _engine(grammars, _FailsFirstCall())
    engine.handle(_add("free", None, max_new_tokens=3))
    engine.handle(_add("phone", RegexGrammar(PHONE)))

    outputs = _run(engine)

    *text_ids, _ = _tokens(outputs["phone"])
    assert re.fullmatch(PHONE, tokenizer.decode(text_ids))
    assert _tokens(outputs["free"]) == [UNCONSTRAINED_TOKEN] * 3


def test_grammar_that_does_not_compile_ends_its_request_alone(grammars: GrammarMatchers) -> None:
    engine = _engine(grammars)
    engine.handle(_add("bad", RegexGrammar("((")))
    engine.handle(_add("good", None, max_new_tokens=2))

    outputs = _run(engine)

    ((refused,),) = [outputs["bad"]]
    assert refused.token_ids == [] and refused.error is not None
    assert refused.error.startswith("grammar is not valid: ")
    assert _tokens(outputs["good"]) == [UNCONSTRAINED_TOKEN] * 2


def test_grammar_without_matchers_is_refused() -> None:
    engine = _engine(None)
    engine.handle(_add("r", RegexGrammar("a")))

    outputs = _run(engine)

    assert [o.error for o in outputs["r"]] == ["grammar is not supported"]


def test_grammar_masks_in_background_match_masks_computed_here(
    grammars: GrammarMatchers,
) -> None:
    sampling = SamplingParams(1, stop_token_ids=(IM_END,), grammar=RegexGrammar(PHONE))
    assert grammars.add("r", sampling) is None
    plan = StepPlan((_scheduled("free", SamplingParams(1)), _scheduled("r", sampling)))

    future = grammars.masks_in_background(plan)
    assert future is not None
    background = future.result()  # matchers are the worker's until then
    here = grammars.masks(plan)

    assert here is not None and background.rows == here.rows == (1,)
    assert np.array_equal(background.bitmask.numpy(), here.bitmask.numpy())
    assert grammars.masks_in_background(StepPlan((_scheduled("free", SamplingParams(1)),))) is None


def _scheduled(request_id: str, sampling: SamplingParams) -> ScheduledRequest:
    """A one-token prompt step that samples."""
    return ScheduledRequest(request_id, (1000,), 0, 1, (0,), sampling)
