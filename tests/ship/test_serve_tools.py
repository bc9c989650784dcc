"""`lmtune serve` passes a chat request's `tools` (and its tool calls and results) through the model's chat template."""

from __future__ import annotations

import json

import pytest

from lmtune.config import ModelConfig
from lmtune.data.tokenize import setup_chat_template
from lmtune.model import load_tokenizer
from lmtune.serve.app import chat_prompt
from lmtune.serve.protocol import ApiError, ChatRequest

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": "Oslo"})}}


def request(**extra: object) -> ChatRequest:
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "3 C"},
    ]
    return ChatRequest.model_validate({"model": "m", "messages": messages, "tools": [WEATHER], **extra})


def tokenizer(template: str | None):
    tok = load_tokenizer(ModelConfig())
    setup_chat_template(tok, template)
    return tok


def test_tools_calls_and_results_reach_the_template():
    text = chat_prompt(tokenizer("chatml-tools"), request())
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in text
    assert "<tool_response>\n3 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n" in text


def test_a_template_without_tools_is_a_400_naming_it():
    with pytest.raises(ApiError) as info:
        chat_prompt(tokenizer(None), request())
    assert info.value.status == 400 and info.value.code == "template_cannot_render_tools"
    assert "the chat template of tiny-chat cannot render tool calling" in info.value.message


def test_arguments_that_are_not_json_are_a_400():
    bad = {**CALL, "function": {"name": "get_weather", "arguments": "{city"}}
    req = ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": [bad]}]}
    )
    with pytest.raises(ApiError, match="not valid JSON"):
        chat_prompt(tokenizer("chatml-tools"), req)
