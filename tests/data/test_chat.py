"""Tool calling, ShareGPT and Alpaca-with-history records: validation at file:line, rendering through the chat
template with tools=, and loss masks that train the assistant's calls and answers, never the tool results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import run_main, write_jsonl

from lmtune.config import ModelConfig
from lmtune.data.chat import ToolCall
from lmtune.data.formats import ChatExample, detect_format, normalize
from lmtune.data.load import load_records
from lmtune.data.tokenize import (
    encode,
    render,
    setup_chat_template,
    special_affixes,
    tokenize_examples,
    trained_segments,
)
from lmtune.data.types import Record
from lmtune.errors import DataError, LmtuneError
from lmtune.model import load_tokenizer

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def tool_record(arguments: object = '{"city": "Paris"}', name: str = "get_weather", answers: str = "c1") -> dict:
    call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}
    return {
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": answers, "content": "21 C and sunny"},
            {"role": "assistant", "content": "It is 21 degrees and sunny."},
        ],
    }


def problems(*rows: dict, **kwargs: object) -> str:
    with pytest.raises(LmtuneError) as info:
        normalize([Record(row, "t.jsonl", i + 1) for i, row in enumerate(rows)], **kwargs)
    return str(info.value)


@pytest.fixture(scope="module")
def tokenizer():
    tok = load_tokenizer(ModelConfig())
    setup_chat_template(tok, "chatml-tools")
    return tok


def test_tool_records_normalize_with_arguments_as_text_or_object():
    (a,) = normalize([Record(tool_record(), "t.jsonl", 1)])
    (b,) = normalize([Record(tool_record({"city": "Paris"}), "t.jsonl", 1)])
    assert isinstance(a, ChatExample) and a.tools == (WEATHER,)
    assert a.messages[1].tool_calls == (ToolCall("c1", "get_weather", '{"city": "Paris"}'),) == b.messages[1].tool_calls
    assert a.messages[1].content == "" and a.messages[2].tool_call_id == "c1"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (tool_record(name="get_time"), "t.jsonl:1: field 'messages[1].tool_calls[0].function.name': calls unknown "
         "tool 'get_time' (the record's tools: get_weather)"),
        (tool_record("{city: Paris"), "t.jsonl:1: field 'messages[1].tool_calls[0].function.arguments': are not "
         "valid JSON"),
        (tool_record("[1, 2]"), "arguments': must be a JSON object of argument values, got an array"),
        (tool_record(answers="c9"), "field 'messages[2].tool_call_id': 'c9' matches no pending tool call"),
        ({**tool_record(), "tools": "not json"}, "field 'tools': is a string but not valid JSON"),
        ({**tool_record(), "tools": [{"function": {"parameters": {}}}]}, "field 'tools[0].name': missing"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"},
                       {"role": "assistant", "content": "a"}]}, "field 'messages[1]': a tool message with no "
         "matching tool call"),
        ({"messages": [{"role": "user", "content": "q", "tool_calls": [{}]}, {"role": "assistant", "content": "a"}]},
         "field 'messages[0].tool_calls': tool_calls are allowed on assistant messages only"),
    ],
)  # fmt: skip
def test_tool_problems_name_the_line_and_field(row, expected):
    message = problems(row)
    assert expected in message
    assert message.count("t.jsonl:1") == 1  # one problem, no follow-on errors


def test_tools_as_json_text_and_bare_functions_are_read():
    row = {**tool_record(), "tools": json.dumps([WEATHER["function"]])}
    (example,) = normalize([Record(row, "t.jsonl", 1)])
    assert example.tools == (WEATHER,)


def test_tool_turns_train_the_calls_and_answers_never_the_results(tokenizer):
    (example,) = normalize([Record(tool_record(), "t.jsonl", 1)])
    tok = encode(render(example, tokenizer), tokenizer, special_affixes(tokenizer)[0])
    segments = trained_segments(tok, tokenizer)
    trained = "".join(text for text, on in segments if on)
    context = "".join(text for text, on in segments if not on)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>' in trained
    assert "It is 21 degrees and sunny.<|im_end|>" in trained
    assert "21 C and sunny" in context and "21 C" not in trained  # the tool result is context only
    assert '"name": "get_weather"' in context  # the tool list in the system turn


def test_a_conversation_without_tools_renders_as_chatml(tokenizer):
    (example,) = normalize([Record({"messages": [{"role": "user", "content": "hi"},
                                                 {"role": "assistant", "content": "yo"}]}, "t.jsonl", 1)])  # fmt: skip
    plain = load_tokenizer(ModelConfig())
    setup_chat_template(plain, "chatml")
    assert render(example, tokenizer).text == render(example, plain).text


@pytest.mark.parametrize(("template", "name"), [(None, "of tiny-chat"), ("chatml", "'chatml'")])
def test_a_template_that_cannot_render_tools_is_refused_by_name(template, name):
    tok = load_tokenizer(ModelConfig())
    setup_chat_template(tok, template)
    examples = normalize([Record(tool_record(), "t.jsonl", 1)])
    with pytest.raises(DataError, match=f"t.jsonl: the data calls tools, but the chat template {name} cannot render"):
        tokenize_examples(examples, tok, max_length=512)


SHAREGPT = {
    "system": "You answer weather questions.",
    "tools": json.dumps([WEATHER["function"]]),
    "conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
        {"from": "observation", "value": "21 C"},
        {"from": "gpt", "value": "It is 21 degrees."},
    ],
}


def test_sharegpt_is_detected_and_read_as_messages_with_tool_calls():
    record = Record(SHAREGPT, "s.jsonl", 1)
    assert detect_format(record, {}) == "sharegpt"
    (example,) = normalize([record])
    assert [m.role for m in example.messages] == ["system", "user", "assistant", "tool", "assistant"]
    call = example.messages[2].tool_calls[0]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert example.messages[3].tool_call_id == call.id and example.tools == (WEATHER,)


@pytest.mark.parametrize(
    ("turn", "expected"),
    [
        ({"from": "bot", "value": "x"}, "field 'conversations[1].from': unknown speaker 'bot'"),
        ({"from": "function_call", "value": "get_weather(Paris)"}, "field 'conversations[1].value': a function_call"),
        (
            {"from": "function_call", "value": '{"name": "nope"}'},
            "field 'conversations[1].tool_calls[0].function.name'",
        ),
        ({"from": "gpt", "value": 3}, "field 'conversations[1].content': must be a string, got a number"),
    ],
)
def test_sharegpt_problems_use_the_files_own_paths(turn, expected):
    row = {"conversations": [{"from": "human", "value": "q"}, turn, {"from": "gpt", "value": "a"}]}
    assert expected in problems(row, format="sharegpt")


def test_alpaca_history_becomes_earlier_turns_and_every_record_a_conversation():
    rows = [
        {"instruction": "Add them", "input": "2 3", "output": "5", "history": [["Hi", "Hello!"]]},
        {"instruction": "Say hi", "input": "", "output": "Hi"},  # no history: one exchange, still a conversation
    ]
    first, second = normalize([Record(r, "a.jsonl", i) for i, r in enumerate(rows, 1)])
    assert [(m.role, m.content) for m in first.messages] == [
        ("user", "Hi"), ("assistant", "Hello!"), ("user", "Add them\n\n2 3"), ("assistant", "5")
    ]  # fmt: skip
    assert [(m.role, m.content) for m in second.messages] == [("user", "Say hi"), ("assistant", "Hi")]
    bad = {"instruction": "x", "output": "y", "history": [["only one"]]}
    assert "a.jsonl:1: field 'history[0]': must be an [instruction, response] pair" in problems(bad).replace("t.", "a.")


def test_real_dialogsum_as_sharegpt_trains_only_the_second_speaker(tmp_path, tokenizer):
    """DialogSum's real dialogues written in ShareGPT's layout (#Person1# human, #Person2# gpt)."""
    source = SHARED / "dialogsum" / "dialogsum.dev.jsonl"
    if not source.is_file():
        pytest.skip("../shared/data is not beside this checkout")
    rows = []
    for line in source.read_text(encoding="utf-8").splitlines()[:20]:
        turns = [t.split(": ", 1) for t in json.loads(line)["dialogue"].split("\n") if ": " in t]
        conv = [{"from": "human" if who == "#Person1#" else "gpt", "value": text} for who, text in turns]
        rows.append({"conversations": conv})
    path = write_jsonl(tmp_path / "dialogsum_sharegpt.jsonl", rows)
    examples = normalize(load_records(str(path)))
    tokenized, stats = tokenize_examples(examples, tokenizer, max_length=2048)
    assert stats.kept == 20 and stats.trained_tokens > 0
    trained = "".join(t for t, on in trained_segments(tokenized[0], tokenizer) if on)
    person2 = [m.content for m in examples[0].messages if m.role == "assistant"]
    person1 = [m.content for m in examples[0].messages if m.role == "user"]
    assert all(text in trained for text in person2) and not any(text in trained for text in person1)


def test_cli_preview_and_check_on_tool_data(tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "tools.jsonl", [tool_record()] * 3 + [tool_record(name="get_time")])
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{train: {data}, val_fraction: 0, chat_template: chatml-tools}}\n")
    code, out, err = run_main(monkeypatch, capsys, "data", "check", data, "--set", "data.chat_template=chatml-tools")
    assert code == 2 and f"{data}:4" in out + err and "calls unknown tool 'get_time'" in out + err
    write_jsonl(data, [tool_record()] * 3)
    code, out, err = run_main(monkeypatch, capsys, "data", "preview", config, "-n", "1")
    assert code == 0, out + err
    assert '⟦<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>⟧' in out
    assert "<tool_response>\n21 C and sunny\n</tool_response>" in out and "⟦21 C" not in out
