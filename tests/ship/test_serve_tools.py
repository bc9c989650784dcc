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


# --- tool calls in the reply ---------------------------------------------------------------------------------

CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": CITY}}]


def test_chatml_tools_saves_the_response_template_that_reads_its_calls_back(tmp_path):
    from transformers import AutoTokenizer

    tokenizer("chatml-tools").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert saved["response_template"]["fields"]["tool_calls"]["open"] == "<tool_call>"
    assert AutoTokenizer.from_pretrained(tmp_path).response_template == saved["response_template"]
    assert getattr(tokenizer("chatml"), "response_template", None) is None


def test_a_reply_with_calls_becomes_openai_tool_calls_and_anything_else_stays_text():
    from lmtune.serve.tools import tool_reader

    tok = tokenizer("chatml-tools")
    prompt = chat_prompt(
        tok, ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "?"}]})
    )
    reader = tool_reader(tok, prompt, TOOLS)
    assert reader.tag == "<tool_call>"
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    message = reader.parse("Let me look.\n" + call + "\n" + call.replace("Oslo", "Rome"))
    assert message["content"] == "Let me look." and [c["function"] for c in message["tool_calls"]] == [
        {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"name": "get_weather", "arguments": '{"city": "Rome"}'},
    ]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in message["tool_calls"])
    assert reader.parse("It is sunny.") is None
    assert reader.parse('<tool_call>\n{"name": "get_weather", "argu') is None  # cut off by max_tokens: text stands
    assert tool_reader(tok, prompt, None) is None and tool_reader(tokenizer("chatml"), prompt, TOOLS) is None


def test_a_stream_sends_the_text_before_a_call_as_it_comes_and_holds_the_call():
    from lmtune.serve.tools import Holdback

    held = Holdback("<tool_call>")
    sent = [held.feed(chunk) for chunk in ["Let me ", "look.\n<to", "ol_call>\n{", '"name": 1}', "</tool_call>"]]
    assert sent == ["Let me ", "look.\n", "", "", ""]  # "<to" could open a call: held until it is clear
    assert held.text[held.sent :].startswith("<tool_call>")
    plain = Holdback("<tool_call>")
    assert [plain.feed(c) for c in ["a <", "b and <t", "c"]] == ["a ", "<b and ", "<tc"]
    assert [Holdback(None).feed(c) for c in ["x", "y"]] == ["", ""]  # a pattern opens calls: all is held


def test_a_model_tuned_to_call_a_tool_answers_the_openai_client_with_tool_calls(tmp_path, serving):
    """A tiny model tuned on chatml-tools calls to get_weather, served: the official client gets `tool_calls` (the
    city copied from the question) with finish_reason tool_calls, whole and streamed."""
    from openai import OpenAI
    from support import write_jsonl

    from lmtune.api import finetune

    def record(city: str) -> dict:
        call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}
        question = {"role": "user", "content": f"Weather in {city}?"}
        return {"tools": TOOLS, "messages": [question, {"role": "assistant", "content": None, "tool_calls": [call]}]}

    data = write_jsonl(tmp_path / "calls.jsonl", [record(c) for c in ["Paris", "Oslo", "Rome", "Lima"] * 6])
    run = tmp_path / "caller"
    finetune({
        "task": "sft", "model": {"name": "preset:tiny-chat"}, "output_dir": str(run), "method": {"name": "full"},
        "data": {"train": str(data), "validation": str(data), "max_length": 1024, "chat_template": "chatml-tools",
                 "packing": False},
        "forgetting": {"measure": False},
        "train": {"lr": 1e-2, "batch_size": 8, "max_steps": 160, "mixed_precision": "no", "warmup_steps": 0},
    })  # fmt: skip
    with serving([run]) as (_, url):
        client = OpenAI(base_url=url, api_key="unused")
        ask = {"model": "caller", "tools": TOOLS, "temperature": 0, "max_tokens": 80}
        reply = client.chat.completions.create(messages=[{"role": "user", "content": "Weather in Oslo?"}], **ask)
        (choice,) = reply.choices
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
        chunks = list(
            client.chat.completions.create(
                messages=[{"role": "user", "content": "Weather in Rome?"}], stream=True, **ask
            )
        )
        calls = [c for chunk in chunks for c in chunk.choices[0].delta.tool_calls or []]
        assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Rome"}]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
