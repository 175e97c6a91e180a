"""POST /tokenize and POST /chat_tokenize (contract 1.12): the tokens of a native request's
`inputs` (special tokens added), or of a chat request's rendered template (none added, as for
generation), each with the bytes it covers."""

from collections.abc import Sequence

from fastapi import APIRouter, Request

from sluice.api.error_mapping import ERROR_RESPONSES
from sluice.api.openai_inputs import chat_inputs
from sluice.api.openai_schemas import (
    ChatRequest,
    ChatTokenizeResponse,
    SimpleToken,
    TokenizeResponse,
)
from sluice.api.schemas import GenerateRequest
from sluice.api.state import serving_state
from sluice.errors import SluiceError
from sluice.frontend.chat_prompt import prepare_chat_prompt
from sluice.frontend.chat_template import ChatTemplate
from sluice.frontend.token_spans import TokenSpan, token_spans

router = APIRouter()


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERROR_RESPONSES)
async def tokenize(request: Request, body: GenerateRequest) -> TokenizeResponse:
    spans = token_spans(
        serving_state(request).tokenizer,
        body.inputs,
        add_special_tokens=True,
        truncate=body.parameters.truncate,
    )
    return TokenizeResponse(_simple_tokens(spans))


@router.post("/chat_tokenize", response_model=ChatTokenizeResponse, responses=ERROR_RESPONSES)
async def chat_tokenize(request: Request, body: ChatRequest) -> ChatTokenizeResponse:
    state = serving_state(request)
    state.metrics.request_count.inc()
    try:
        template = ChatTemplate.from_tokenizer(state.tokenizer)
        text = prepare_chat_prompt(template, chat_inputs(body)).text
        spans = token_spans(state.tokenizer, text, add_special_tokens=False)
    except SluiceError as error:
        state.metrics.observe_failure(error)
        raise
    return ChatTokenizeResponse(tokenize_response=_simple_tokens(spans), templated_text=text)


def _simple_tokens(spans: Sequence[TokenSpan]) -> list[SimpleToken]:
    return [
        SimpleToken(id=span.token_id, text=span.text, start=span.start, stop=span.stop)
        for span in spans
    ]
