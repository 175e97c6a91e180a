"""OpenAI bodies → native parameters and chat inputs (contract 6.10), and reply shapes."""

from sluice.api.chat_responses import ChatReplyShape, chat_finish_reason
from sluice.api.openai_inputs import (
    chat_inputs,
    chat_parameters,
    completion_parameters,
    served_model_name,
)
from sluice.api.openai_schemas import ChatRequest, CompletionRequest
from sluice.frontend.chat_template import ImagePart, TextPart
from sluice.frontend.generation import GeneratedToken
from sluice.frontend.tools import ToolChoice, ToolChoiceKind
from sluice.ipc.messages import FinishReason

USER = {"role": "user", "content": "hi"}


def _chat(**fields: object) -> ChatRequest:
    return ChatRequest.model_validate({"messages": [USER], **fields})


def test_chat_parameters_map_as_tgi() -> None:
    params = chat_parameters(
        _chat(
            temperature=0,
            presence_penalty=0.5,
            top_logprobs=3,
            max_completion_tokens=7,
            stop=["."],
            seed=4,
        )
    )
    assert (params.do_sample, params.temperature) == (False, None)
    assert params.repetition_penalty == 2.5
    assert (params.top_n_tokens, params.max_new_tokens, params.stop, params.seed) == (
        3,
        7,
        (".",),
        4,
    )
    assert params.details and not params.add_special_tokens


def test_chat_parameters_sample_unless_temperature_is_zero() -> None:
    assert chat_parameters(_chat()).do_sample
    sampled = chat_parameters(_chat(temperature=0.7))
    assert (sampled.do_sample, sampled.temperature) == (True, 0.7)


def test_completion_parameters_add_special_tokens() -> None:
    params = completion_parameters(
        CompletionRequest(prompt="a", repetition_penalty=1.2, temperature=0)
    )
    assert params.add_special_tokens and not params.do_sample
    assert params.repetition_penalty == 1.2


def test_chat_inputs_tool_choice_forms() -> None:
    assert chat_inputs(_chat()).tool_choice == ToolChoice()
    assert chat_inputs(_chat(tool_choice="none")).tool_choice.kind is ToolChoiceKind.NONE
    assert chat_inputs(_chat(tool_choice="required")).tool_choice.kind is ToolChoiceKind.REQUIRED
    named = {"type": "function", "function": {"name": "f"}}
    assert chat_inputs(_chat(tool_choice=named)).tool_choice == ToolChoice(
        ToolChoiceKind.FUNCTION, "f"
    )
    assert chat_inputs(_chat(tool_choice="f")).tool_choice.function_name == "f"


def test_chat_inputs_content_parts_and_tools() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "http://x/a.png"}},
    ]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    chat = chat_inputs(
        ChatRequest.model_validate(
            {"messages": [{"role": "user", "content": content}], "tools": [tool]}
        )
    )
    assert chat.messages[0].content == (TextPart("What is this?"), ImagePart("http://x/a.png"))
    assert chat.tools is not None and chat.tools[0].parameters == {"type": "object"}


def test_served_model_name_echoes_all_but_tgi() -> None:
    assert served_model_name(None, "m") == served_model_name("tgi", "m") == "m"
    assert served_model_name("gpt-4o", "m") == "gpt-4o"


def test_chat_reply_special_token_streams_as_empty_content() -> None:
    eos = GeneratedToken(
        index=3,
        token_id=2,
        text="<|im_end|>",
        logprob=-0.1,
        is_special=True,
        finish_reason=FinishReason.EOS_TOKEN,
        generated_text="ab",
    )
    chunk = ChatReplyShape(model="m", with_logprobs=False).text_chunk(eos).model_dump()
    assert chunk["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert chunk["usage"] is None
    assert chat_finish_reason(FinishReason.STOP_SEQUENCE) == "stop_sequence"
