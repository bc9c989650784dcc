from __future__ import annotations

import re

import pytest

from lmtune.data.formats import (
    ALPACA_TEMPLATE,
    ChatExample,
    Message,
    PromptCompletionExample,
    TextExample,
    detect_format,
    normalize,
)
from lmtune.data.types import Record
from lmtune.errors import LmtuneError

SRC = "data/train.jsonl"


def recs(*rows: dict) -> list[Record]:
    """Records on lines 1, 2, 3, ... of SRC."""
    return [Record(row, SRC, index + 1) for index, row in enumerate(rows)]


def problems_of(records: list[Record], **kwargs) -> str:
    with pytest.raises(LmtuneError) as caught:
        normalize(records, **kwargs)
    return str(caught.value)


CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


# --- detection ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "columns", "shape"),
    [
        ({"messages": CHAT, "text": "also here"}, {}, "messages"),
        ({"prompt": "p", "completion": "c"}, {}, "prompt_completion"),
        ({"instruction": "i", "input": "", "output": "o"}, {}, "instruction"),
        ({"text": "t", "label": 1}, {}, "text"),
        ({"dialogue": "d", "summary": "s"}, {"prompt": "dialogue", "completion": "summary"}, "prompt_completion"),
        ({"body": "b"}, {"text": "body"}, "text"),
        ({"conversation": CHAT}, {"messages": "conversation"}, "messages"),
        ({"question": "q", "answer": "a"}, {"instruction": "question", "output": "answer"}, "instruction"),
    ],
)
def test_detect_every_shape(data, columns, shape):
    assert detect_format(Record(data, SRC, 1), columns) == shape


def test_detection_failure_names_file_keys_shapes_and_the_fix():
    with pytest.raises(LmtuneError) as caught:
        detect_format(Record({"question": "q", "answer": "a"}, SRC, 1), {})
    message = str(caught.value)
    assert SRC in message and "['answer', 'question']" in message
    assert "prompt + completion" in message and "instruction + output" in message
    assert "data.format" in caught.value.hint and "data.columns" in caught.value.hint


def test_mapping_to_a_missing_column_is_shown_when_detection_fails():
    with pytest.raises(LmtuneError, match=re.escape("data.columns maps {'text': 'body'}")):
        normalize(recs({"text": "t"}), columns={"text": "body"})


# --- each shape ----------------------------------------------------------------------------------


def test_text_examples_keep_source_and_line():
    assert normalize(recs({"text": "a"}, {"text": "b"})) == [TextExample("a", SRC, 1), TextExample("b", SRC, 2)]


def test_prompt_completion_without_template_uses_the_prompt_as_is_and_allows_an_empty_prompt():
    examples = normalize(recs({"prompt": "Q: 2+2?\nA:", "completion": " 4"}, {"prompt": "", "completion": "x"}))
    assert examples == [PromptCompletionExample("Q: 2+2?\nA:", " 4", SRC, 1), PromptCompletionExample("", "x", SRC, 2)]


def test_dialogsum_columns_with_a_template_naming_a_raw_column():
    rows = recs(
        {"fname": "train_0", "dialogue": "#Person1#: Hi.\n#Person2#: Hello.", "summary": "They greet.", "topic": "t"},
        {"fname": "train_1", "dialogue": "#Person1#: Bye.", "summary": "One leaves.", "topic": "t"},
    )
    columns = {"prompt": "dialogue", "completion": "summary"}
    examples = normalize(rows, columns=columns, prompt_template="Summarize the dialogue:\n{dialogue}\nSummary:\n")
    assert examples[0] == PromptCompletionExample(
        "Summarize the dialogue:\n#Person1#: Hi.\n#Person2#: Hello.\nSummary:\n", "They greet.", SRC, 1
    )
    # The canonical name reaches the same column.
    canonical = normalize(rows, columns=columns, prompt_template="[{fname}] {prompt} =>")
    assert [e.prompt for e in canonical] == [
        "[train_0] #Person1#: Hi.\n#Person2#: Hello. =>",
        "[train_1] #Person1#: Bye. =>",
    ]


def test_instruction_uses_the_alpaca_template_with_and_without_input():
    examples = normalize(
        recs(
            {"instruction": "Add the numbers.", "input": "2, 3", "output": "5"},
            {"instruction": "Name a colour.", "input": "  ", "output": "Blue"},
            {"instruction": "Say hi.", "output": "Hi"},  # no input column at all
            {"instruction": "Say bye.", "input": None, "output": "Bye"},  # Parquet-style null
        )
    )
    assert examples[0].prompt == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2, 3\n\n### Response:\n"
    )
    assert examples[1].prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nName a colour.\n\n### Response:\n"
    )
    assert examples[2].prompt == ALPACA_TEMPLATE["without_input"].format(instruction="Say hi.")
    assert examples[3].prompt == ALPACA_TEMPLATE["without_input"].format(instruction="Say bye.")
    assert [(e.completion, e.line) for e in examples] == [("5", 1), ("Blue", 2), ("Hi", 3), ("Bye", 4)]


def test_instruction_with_mapped_columns_and_a_custom_template():
    examples = normalize(
        recs({"question": "Why?", "answer": "Because."}),
        columns={"instruction": "question", "output": "answer"},
        prompt_template="Q: {instruction}\nA:",
    )
    assert examples == [PromptCompletionExample("Q: Why?\nA:", "Because.", SRC, 1)]


def test_messages_become_chat_examples_with_weights():
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "draft", "weight": 0},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "hello", "weight": None, "name": None},
    ]
    [example] = normalize(recs({"messages": conversation}))
    assert example == ChatExample(
        (
            Message("system", "Be brief."),
            Message("user", "hi"),
            Message("assistant", "draft", 0.0),
            Message("user", "again"),
            Message("assistant", "hello", 1.0),
        ),
        SRC,
        1,
    )


def test_explicit_format_overrides_detection():
    examples = normalize(recs({"text": "t", "prompt": "p", "completion": "c"}), format="text")
    assert examples == [TextExample("t", SRC, 1)]


# --- problems: file, line, field, why ----------------------------------------------------------


def test_every_record_must_have_the_detected_shape():
    message = problems_of(recs({"prompt": "p", "completion": "c"}, {"prompt": "p"}, {"completion": "c"}))
    assert message.startswith(f"2 problems in {SRC}:")
    assert f"{SRC}:2: field 'completion': missing (the record has keys ['prompt'])" in message
    assert f"{SRC}:3: field 'prompt': missing" in message


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"text": 3}, "field 'text': must be a string, got a number"),
        ({"text": None}, "field 'text': must be a string, got null"),
        ({"text": "  \n"}, "field 'text': is empty"),
        ({"text": ["a"]}, "field 'text': must be a string, got an array"),
    ],
)
def test_text_field_type_and_emptiness(row, expected):
    message = problems_of(recs({"text": "fine"}, row))
    assert message.startswith(f"1 problem in {SRC}:")
    assert f"{SRC}:2: {expected}" in message


def test_problems_use_the_users_column_names():
    rows = recs({"dialogue": "d", "summary": "s"}, {"dialogue": "d", "summary": ""}, {"dialogue": 1, "summary": "s"})
    message = problems_of(rows, columns={"prompt": "dialogue", "completion": "summary"})
    assert f"{SRC}:2: field 'summary': is empty" in message
    assert f"{SRC}:3: field 'dialogue': must be a string, got a number" in message


def test_instruction_problems():
    rows = recs(
        {"instruction": "i", "output": "o"},
        {"instruction": "", "output": "o"},
        {"instruction": "i", "output": "o", "input": 5},
    )
    message = problems_of(rows)
    assert f"{SRC}:2: field 'instruction': is empty" in message
    assert f"{SRC}:3: field 'input': must be a string, got a number" in message


def test_errors_are_capped_at_max_errors_and_counted():
    rows = recs(*[{"text": ""} for _ in range(30)])
    message = problems_of(rows, max_errors=5)
    assert message.startswith(f"30 problems in {SRC}:")
    assert message.count("field 'text': is empty") == 5
    assert "... and 25 more" in message
    assert "fix or remove these records" in message


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ("hello", "field 'messages': must be a list of {role, content} objects, got a string"),
        ([], "field 'messages': is an empty list"),
        (["hi", CHAT[1]], "field 'messages[0]': must be an object with 'role' and 'content', got a string"),
        (
            [{"role": "bot", "content": "x"}, CHAT[1]],
            "field 'messages[0].role': unknown role 'bot' (allowed: system, user, assistant, tool)",
        ),
        ([{"content": "x"}, CHAT[1]], "field 'messages[0].role': missing (allowed: system, user, assistant, tool)"),
        ([CHAT[0], {"role": "assistant", "content": 7}], "field 'messages[1].content': must be a string, got a number"),
        ([CHAT[0], {"role": "assistant"}], "field 'messages[1].content': missing"),
        ([CHAT[0], {"role": "assistant", "content": " \n"}], "field 'messages[1].content': is empty"),
        (
            [*CHAT, {"role": "system", "content": "late"}],
            "field 'messages[2].role': a system message must be the first message",
        ),
        (
            [{"role": "system", "content": "s"}, CHAT[0]],
            "field 'messages': has no assistant message (nothing to train on)",
        ),
        (
            [CHAT[0], {**CHAT[1], "weight": 0}],
            "field 'messages': every assistant message has weight 0 (nothing to train on)",
        ),
        ([CHAT[0], {**CHAT[1], "weight": 0.5}], "field 'messages[1].weight': must be 0 or 1, got 0.5"),
        ([CHAT[0], {**CHAT[1], "weight": "1"}], "field 'messages[1].weight': must be 0 or 1, got '1'"),
        (
            [{**CHAT[0], "weight": 1}, CHAT[1]],
            "field 'messages[0].weight': weight is allowed on assistant messages only",
        ),
    ],
)
def test_message_validation(messages, expected):
    message = problems_of(recs({"messages": CHAT}, {"messages": messages}))
    assert f"{SRC}:2: {expected}" in message


def test_message_problems_use_the_mapped_column_name():
    message = problems_of(recs({"conversation": [CHAT[0]]}), columns={"messages": "conversation"})
    assert f"{SRC}:1: field 'conversation': has no assistant message" in message


# --- templates and arguments ---------------------------------------------------------------------


def test_unknown_template_placeholder_names_it_and_the_available_fields():
    with pytest.raises(LmtuneError) as caught:
        normalize(
            recs({"dialogue": "d", "summary": "s"}),
            columns={"prompt": "dialogue", "completion": "summary"},
            prompt_template="{dialog}:",
        )
    assert "unknown field '{dialog}'" in str(caught.value)
    assert "available fields: dialogue, prompt" in str(caught.value)


@pytest.mark.parametrize(
    ("row", "columns", "template"),
    [
        ({"prompt": "p", "completion": "c"}, {}, "{completion}"),
        ({"dialogue": "d", "summary": "s"}, {"prompt": "dialogue", "completion": "summary"}, "{dialogue} {summary}"),
        ({"instruction": "i", "output": "o"}, {}, "{instruction} {output}"),
    ],
)
def test_template_may_not_contain_the_answer(row, columns, template):
    with pytest.raises(LmtuneError, match="the field the model is trained to produce"):
        normalize(recs(row), columns=columns, prompt_template=template)


@pytest.mark.parametrize(
    ("template", "match"),
    [("{} and {prompt}", "positional placeholder"), ("{prompt", "not a valid str.format template")],
)
def test_malformed_templates(template, match):
    with pytest.raises(LmtuneError, match=match):
        normalize(recs({"prompt": "p", "completion": "c"}), prompt_template=template)


def test_template_column_missing_from_a_later_record():
    rows = recs({"prompt": "p", "completion": "c", "topic": "t"}, {"prompt": "p", "completion": "c"})
    message = problems_of(rows, prompt_template="{topic}: {prompt}")
    assert f"{SRC}:2: field 'topic': missing (the prompt template uses it)" in message


def test_template_on_text_data_is_refused():
    with pytest.raises(LmtuneError, match="not to text data"):
        normalize(recs({"text": "t"}), prompt_template="{text}")


def test_unknown_format_and_column_names_are_refused():
    with pytest.raises(LmtuneError, match="unknown data format 'chat'"):
        normalize(recs({"text": "t"}), format="chat")
    with pytest.raises(LmtuneError, match=r"unknown field names \['question'\]"):
        normalize(recs({"text": "t"}), columns={"question": "q"})


def test_no_records_give_no_examples():
    assert normalize([]) == []
