"""Record shapes: turn raw records into typed examples, or say exactly which records are wrong and why.

Every problem is collected (up to ``max_errors``) and reported in one error, so a user fixes a file in one
pass instead of one rerun per bad line. Field names in messages are the user's own column names.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# ROLES and Message are re-exported: chat turns are defined, with tool calling, in lmtune.data.chat.
from lmtune.data.chat import ROLES as ROLES
from lmtune.data.chat import Message, parse_messages, parse_tools
from lmtune.data.conll import TokensExample, convert_tokens
from lmtune.data.sharegpt import sharegpt_messages, with_history
from lmtune.data.types import Record, json_type
from lmtune.errors import DataError, LmtuneError


@dataclass(frozen=True)
class TextExample:
    text: str
    source: str
    line: int


@dataclass(frozen=True)
class PromptCompletionExample:
    prompt: str
    completion: str
    source: str
    line: int


@dataclass(frozen=True)
class ChatExample:
    messages: tuple[Message, ...]
    source: str
    line: int
    # Tool calling: the functions the conversation may call, in OpenAI's form (lmtune.data.chat); left out of the
    # hash as dicts have none.
    tools: tuple[dict[str, Any], ...] = field(default=(), hash=False)


@dataclass(frozen=True)
class LabelExample:
    """A text and its class (task classification). Labels are kept as strings: integer labels become "0", "1"."""

    text: str
    label: str
    source: str
    line: int


Example = TextExample | PromptCompletionExample | ChatExample | LabelExample | TokensExample

FORMATS = (
    "auto", "text", "prompt_completion", "messages", "sharegpt", "instruction", "classification",
    "token_classification",
)  # fmt: skip
CANONICAL_FIELDS = (
    "text", "prompt", "completion", "messages", "instruction", "input", "output", "label", "tokens", "tags",
    "conversations", "tools", "system", "history",
)  # fmt: skip
# Set by `lmtune data augment` on every copy it writes: {"strategy", "source", "line", "of": key of the original}.
AUGMENTATION_FIELD = "augmentation"

# Stanford Alpaca's prompt (tatsu-lab/stanford_alpaca, train.py), ending in a newline so the response starts a line.
ALPACA_TEMPLATE: Mapping[str, str] = MappingProxyType(
    {
        "with_input": (
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n"
            "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
        ),
        "without_input": (
            "Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request.\n\n"
            "### Instruction:\n{instruction}\n\n### Response:\n"
        ),
    }
)

# Detection order matters: a record with both `messages` and `text` is a chat record.
_SHAPES = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "prompt_completion": ("prompt", "completion"),
    "instruction": ("instruction", "output"),
    "token_classification": ("tokens", "tags"),
    "text": ("text",),
}
# Fields a prompt template may name, per shape; the answer field is left out so it cannot leak into the prompt.
_TEMPLATE_FIELDS = {"prompt_completion": ("prompt",), "instruction": ("instruction", "input")}
_ANSWER_FIELD = {"prompt_completion": "completion", "instruction": "output"}
_SHAPES_TEXT = (
    "messages | conversations (ShareGPT) | prompt + completion | instruction + output (+ input) | tokens + tags | text"
)


_Report = Callable[[str, str], None]  # report(field, problem) for the record being converted


def detect_format(record: Record, columns: Mapping[str, str]) -> str:
    """The shape of ``record`` after renaming by ``columns`` (canonical name -> the record's column name)."""
    for shape, fields in _SHAPES.items():
        if all(columns.get(name, name) in record.data for name in fields):
            return shape
    mapping = f"; data.columns maps {dict(columns)}" if columns else ""
    raise LmtuneError(
        f"cannot tell the format of {record.source}: its first record (line {record.line}) has keys "
        f"{sorted(record.data)}{mapping}; accepted shapes: {_SHAPES_TEXT}",
        hint="set data.format to one of text, prompt_completion, messages, instruction, and/or map your column "
        'names with data.columns, e.g. {"prompt": "dialogue", "completion": "summary"}',
    )


def normalize(
    records: Sequence[Record],
    *,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
    prompt_template: str | None = None,
    max_errors: int = 20,
) -> list[Example]:
    """Convert every record to the one shape of the dataset, or raise one error listing the bad records.

    ``prompt_template`` is a ``str.format`` template for prompt_completion and instruction data; its
    placeholders may name canonical fields (``{prompt}``, ``{instruction}``, ``{input}``) or any column.
    """
    examples, problems = convert_records(records, format=format, columns=columns, prompt_template=prompt_template)
    if problems:
        raise _problems_error(problems, max_errors)
    return [example for example in examples if example is not None]


def convert_records(
    records: Sequence[Record],
    *,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
    prompt_template: str | None = None,
) -> tuple[list[Example | None], list[DataError]]:
    """Each record as an example (None where it is bad) and every problem found, without raising on bad records.

    This is what `lmtune data check` reports from; `normalize` raises on the same problems. Settings that make
    no sense for any record (unknown format, columns or template fields) still raise at once.
    """
    columns = dict(columns or {})
    if format not in FORMATS:
        raise LmtuneError(f"unknown data format '{format}'", hint=f"use one of {', '.join(FORMATS)}")
    unknown = sorted(set(columns) - set(CANONICAL_FIELDS))
    if unknown:
        raise LmtuneError(
            f"data.columns has unknown field names {unknown}",
            hint=f"its keys are canonical names ({', '.join(CANONICAL_FIELDS)}); its values are your column names",
        )
    if not records:
        return [], []
    shape = detect_format(records[0], columns) if format == "auto" else format
    if prompt_template is not None:
        _check_template(prompt_template, shape, records[0], columns)
    if shape == "instruction" and columns.get("history", "history") in records[0].data:
        shape = "instruction_history"  # Alpaca with earlier turns: every record becomes a conversation
    problems: list[DataError] = []  # collected, not raised, so one run reports every bad record
    examples = [_convert(record, shape, columns, prompt_template, problems) for record in records]
    return examples, problems


def _convert(
    record: Record, shape: str, columns: Mapping[str, str], template: str | None, problems: list[DataError]
) -> Example | None:
    """One record as an example, or None after adding its problems to ``problems``."""

    def report(field: str, problem: str) -> None:
        problems.append(DataError(record.source, record.line, field, problem))

    if shape == "text":
        text = _string(record, columns.get("text", "text"), report, allow_empty=False)
        return None if text is None else TextExample(text, record.source, record.line)
    if shape in ("messages", "sharegpt", "instruction_history"):
        return _chat(record, shape, columns, template, report)
    if shape == "token_classification":
        return convert_tokens(record, columns, problems)  # tokens + tags: lmtune.data.conll
    if shape == "classification":
        text = _string(record, columns.get("text", "text"), report, allow_empty=False)
        label = _label(record, columns.get("label", "label"), report)
        return None if text is None or label is None else LabelExample(text, label, record.source, record.line)
    return _prompt_completion(record, shape, columns, template, report)


def _chat(
    record: Record, shape: str, columns: Mapping[str, str], template: str | None, report: _Report
) -> ChatExample | None:
    """OpenAI messages (with tools), ShareGPT conversations, or Alpaca with history (lmtune.data.sharegpt)."""
    tools: tuple[dict[str, Any], ...] | None = ()
    if shape == "sharegpt":
        found = sharegpt_messages(record, columns, report)
        messages, tools = found if found is not None else (None, ())
    elif shape == "instruction_history":
        # The last exchange's prompt: the prompt template, or the instruction and its input (no Alpaca boilerplate:
        # a chat template frames the turns).
        pc = _prompt_completion(record, "instruction", columns, template or "{instruction}\n\n{input}", report)
        prompt = None if pc is None else pc.prompt if template else pc.prompt.removesuffix("\n\n")
        messages = None if pc is None else with_history(record, columns, str(prompt), pc.completion, report)
    else:
        field = columns.get("messages", "messages")
        if field not in record.data:
            report(field, f"missing (the record has keys {sorted(record.data)})")
            return None
        tools_field = columns.get("tools", "tools")
        tools = parse_tools(record.data.get(tools_field), tools_field, report)
        messages = parse_messages(record.data[field], field, report, tools)
    if messages is None or tools is None:
        return None
    return ChatExample(messages, record.source, record.line, tools)


def _string(record: Record, field: str, report: _Report, *, allow_empty: bool) -> str | None:
    if field not in record.data:
        report(field, f"missing (the record has keys {sorted(record.data)})")
        return None
    value = record.data[field]
    if not isinstance(value, str):
        report(field, f"must be a string, got {json_type(value)}")
        return None
    if not allow_empty and not value.strip():
        report(field, "is empty")
        return None
    return value


def _label(record: Record, field: str, report: _Report) -> str | None:
    """A class label: a non-empty string or an integer (read as its decimal string, so 1 and "1" are one class)."""
    if field not in record.data:
        report(field, f"missing (the record has keys {sorted(record.data)})")
        return None
    value = record.data[field]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        report(field, f"must be a string or an integer label, got {json_type(value)}")
        return None
    label = str(value).strip()
    if not label:
        report(field, "is empty")
        return None
    return label


def _prompt_completion(
    record: Record, shape: str, columns: Mapping[str, str], template: str | None, report: _Report
) -> PromptCompletionExample | None:
    """prompt_completion and instruction records both become a prompt (rendered) and a completion."""
    fields: dict[str, str | None] = {}
    if shape == "prompt_completion":
        fields["prompt"] = _string(record, columns.get("prompt", "prompt"), report, allow_empty=True)
    else:
        fields["instruction"] = _string(record, columns.get("instruction", "instruction"), report, allow_empty=False)
        input_column = columns.get("input", "input")
        # `input` is optional: Alpaca-style data leaves it empty, and Parquet turns a missing value into null.
        if record.data.get(input_column) is None:
            fields["input"] = ""
        else:
            fields["input"] = _string(record, input_column, report, allow_empty=True)
    answer = _ANSWER_FIELD[shape]
    completion = _string(record, columns.get(answer, answer), report, allow_empty=False)
    if completion is None or any(value is None for value in fields.values()):
        return None
    values: dict[str, Any] = {**record.data, **fields}
    if template is None and shape == "prompt_completion":
        prompt = values["prompt"]
    else:
        if template is None:
            template = ALPACA_TEMPLATE["with_input" if values["input"].strip() else "without_input"]
        prompt = _render(template, values, report)
        if prompt is None:
            return None
    return PromptCompletionExample(prompt, completion, record.source, record.line)


def _template_names(template: str) -> list[str]:
    """The top-level names a ``str.format`` template uses (``{a.b}`` and ``{a[0]}`` use ``a``)."""
    names = []
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is None:
            continue
        base = field_name.split(".", 1)[0].split("[", 1)[0]
        if not base or base.isdigit():
            raise LmtuneError(
                f"prompt template has a positional placeholder '{{{field_name}}}'",
                hint="name a field in every placeholder, e.g. {prompt} or {dialogue}",
            )
        names.append(base)
    return names


def _check_template(template: str, shape: str, first: Record, columns: Mapping[str, str]) -> None:
    """Fail before reading any data when the template names a field that cannot exist."""
    if shape not in _TEMPLATE_FIELDS:
        raise LmtuneError(
            f"a prompt template applies to prompt_completion and instruction data, not to {shape} data",
            hint="remove data.prompt_template, or set data.format",
        )
    try:
        names = _template_names(template)
    except ValueError as error:
        raise LmtuneError(
            f"prompt template is not a valid str.format template: {error}",
            hint="write a literal brace as {{ or }}",
        ) from None
    answer = _ANSWER_FIELD[shape]
    answer_names = {answer, columns.get(answer, answer)}
    available = sorted((set(_TEMPLATE_FIELDS[shape]) | set(first.data)) - answer_names)
    for name in names:
        if name in answer_names:
            raise LmtuneError(
                f"prompt template uses '{{{name}}}', the field the model is trained to produce",
                hint=f"the prompt must not contain the answer; available fields: {', '.join(available)}",
            )
        if name not in available:
            raise LmtuneError(
                f"prompt template uses an unknown field '{{{name}}}'; available fields: {', '.join(available)}",
                hint="use a canonical field name or one of the columns of your data",
            )


def _render(template: str, values: Mapping[str, Any], report: _Report) -> str | None:
    for name in _template_names(template):
        if name not in values:
            report(name, "missing (the prompt template uses it)")
            return None
        if values[name] is None:
            report(name, "is null (the prompt template uses it)")
            return None
    try:
        return template.format_map(values)
    except (KeyError, IndexError, AttributeError, TypeError, ValueError) as error:
        report("prompt_template", f"cannot be filled from this record: {type(error).__name__}: {error}")
        return None


def _problems_error(problems: list[DataError], max_errors: int) -> LmtuneError:
    sources = ", ".join(dict.fromkeys(problem.source for problem in problems))
    count = len(problems)
    shown = problems[: max(1, max_errors)]
    lines = [f"{count} problem{'s' if count != 1 else ''} in {sources}:"]
    lines += [f"  {problem}" for problem in shown]  # DataError reads "<source>:<line>: field '<field>': <problem>"
    if count > len(shown):
        lines.append(f"  ... and {count - len(shown)} more")
    return LmtuneError(
        "\n".join(lines),
        hint="fix or remove these records; if the fields are named differently, map them with data.columns "
        "(and set data.format if the shape is detected wrongly)",
    )
