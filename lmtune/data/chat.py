"""Chat messages with tool calling: OpenAI's chat format validated record by record, and handed to a chat template.

A record is ``{"messages": [...], "tools": [...]}``: ``tools`` lists JSON-schema functions, an assistant message may
carry ``tool_calls`` (``{"id", "type": "function", "function": {"name", "arguments"}}``, arguments a JSON object or
the JSON text of one, as OpenAI writes it), and a ``tool`` message answers a call by ``tool_call_id``. Every problem
is reported at its field path (``messages[2].tool_calls[0].function.arguments``), so `lmtune data check` names the
line and the field to fix. Rendering goes through the tokenizer's own chat template with ``tools=``; transformers
does the rendering, this module only checks the data and that the template writes what it is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.data.types import json_type
from lmtune.errors import DataError, LmtuneError

ROLES = ("system", "user", "assistant")
CHAT_ROLES = (*ROLES, "tool")

_Report = Callable[[str, str], None]  # report(field path, problem)


@dataclass(frozen=True)
class ToolCall:
    """One function call an assistant turn makes; ``arguments`` is the JSON text of an object."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    """One chat turn; ``weight`` (0 or 1) says whether an assistant turn is trained on."""

    role: str
    content: str
    weight: float = 1.0
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # a tool message: the call it answers


# ChatML with Qwen2.5's tool format (Qwen/Qwen2.5-0.5B-Instruct's tokenizer_config.json, without its default system
# prompt): a conversation without tools renders exactly as 'chatml'. Shipped so tool data trains offline and on a
# model whose own template has no tools; tool calls are trained as the <tool_call> JSON the model is to write.
CHATML_TOOLS = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with "
    "function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": '
    "<args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant' }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    '{{- \'\\n<tool_call>\\n{"name": "\' + tool_call.name + \'", "arguments": \' }}'
    "{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


# How a reply in CHATML_TOOLS's format is read back into a message (transformers' response_template, v1):
# `tokenizer.parse_response` uses it, and it is saved with the tuned tokenizer beside the chat template.
CHATML_TOOLS_RESPONSE: dict[str, Any] = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open": "<tool_call>",
            "close_pattern": r"</tool_call>\s*",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}


UNREADABLE = object()  # what `decoded` returns for text that is not JSON


def decoded(value: Any, path: str, problem: str, report: _Report) -> Any:
    """``value``, or what its JSON text holds when it is a string (datasets store lists and objects both ways);
    UNREADABLE, reported as ``problem`` with the JSON error, when the text is not JSON."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        report(path, f"{problem}: {error.msg} (column {error.colno})")
        return UNREADABLE


def parse_tools(value: Any, field: str, report: _Report) -> tuple[dict[str, Any], ...] | None:
    """A record's tool list in OpenAI's form (``{"type": "function", "function": {...}}``), or None when bad.

    Accepted as a list or as the JSON text of one (LLaMA-Factory's ShareGPT files store it as a string); bare
    function objects (``{"name", "description", "parameters"}``) are wrapped, so every template sees one form.
    """
    if value is None:
        return ()
    if isinstance(value, str) and not value.strip():
        return ()
    value = decoded(value, field, "is a string but not valid JSON", report)
    if value is UNREADABLE:
        return None
    if not isinstance(value, list):
        report(field, f"must be a list of function definitions, got {json_type(value)}")
        return None
    tools, names, ok = [], set(), True
    for i, item in enumerate(value):
        path = f"{field}[{i}]"
        function = item.get("function") if isinstance(item, dict) and "function" in item else item
        if not isinstance(function, dict):
            report(path, f"must be an object with a function's name and parameters, got {json_type(function)}")
            ok = False
            continue
        name, parameters = function.get("name"), function.get("parameters")
        if not isinstance(name, str) or not name.strip():
            report(f"{path}.name", "missing" if name is None else f"must be a non-empty string, got {name!r}")
            ok = False
        elif name in names:
            report(f"{path}.name", f"tool {name!r} is defined twice")
            ok = False
        if parameters is not None and not isinstance(parameters, dict):
            report(f"{path}.parameters", f"must be a JSON-schema object, got {json_type(parameters)}")
            ok = False
        names.add(name)
        tools.append({"type": "function", "function": function})
    return tuple(tools) if ok else None


def tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    return [tool["function"]["name"] for tool in tools]


def parse_messages(
    value: Any,
    field: str,
    report: _Report,
    tools: Sequence[Mapping[str, Any]] | None = (),
    paths: Sequence[str] = (),
) -> tuple[Message, ...] | None:
    """Validate OpenAI chat messages: ``[{"role", "content", "weight"?, "tool_calls"?, "tool_call_id"?}, ...]``.

    ``tools`` is None when the record's tool list is itself bad (reported already): calls are then not checked
    against it. ``paths`` names each item for the messages (ShareGPT's ``conversations[3]``); default ``field[i]``.
    """
    if not isinstance(value, list):
        report(field, f"must be a list of {{role, content}} objects, got {json_type(value)}")
        return None
    if not value:
        report(field, "is an empty list")
        return None
    messages: list[Message] = []
    pending: list[str] = []  # ids of tool calls not answered yet
    ok = True
    for index, item in enumerate(value):
        path = paths[index] if paths else f"{field}[{index}]"
        message = _message(item, index, path, tools, pending, report)
        ok = ok and message is not None
        if message is not None:
            messages.append(message)
    if not ok:
        return None
    assistant = [message for message in messages if message.role == "assistant"]
    if not assistant:
        report(field, "has no assistant message (nothing to train on)")
        return None
    if not any(message.weight == 1 for message in assistant):
        report(field, "every assistant message has weight 0 (nothing to train on)")
        return None
    return tuple(messages)


def _message(
    item: Any, index: int, path: str, tools: Sequence[Mapping[str, Any]] | None, pending: list[str], report: _Report
) -> Message | None:
    """One message, or None after reporting its problems; ``pending`` tracks the calls awaiting a tool result."""
    if not isinstance(item, dict):
        report(path, f"must be an object with 'role' and 'content', got {json_type(item)}")
        return None
    role, content, raw_calls = item.get("role"), item.get("content"), item.get("tool_calls")
    # A null weight is an absent one: Parquet and `datasets` fill keys missing from some messages with null.
    weight = item.get("weight")
    ok = True
    if role not in CHAT_ROLES:
        found = "missing" if role is None else f"unknown role {role!r}"
        report(f"{path}.role", f"{found} (allowed: {', '.join(CHAT_ROLES)})")
        ok = False
    elif role == "system" and index != 0:
        report(f"{path}.role", "a system message must be the first message")
        ok = False
    calls: tuple[ToolCall, ...] = ()
    has_calls = raw_calls is not None and raw_calls != []
    if has_calls and role != "assistant":
        report(f"{path}.tool_calls", "tool_calls are allowed on assistant messages only")
        ok = False
    elif has_calls:
        parsed = _tool_calls(raw_calls, f"{path}.tool_calls", index, tools, report)
        ok = ok and parsed is not None
        calls = parsed or ()
        if parsed is None and isinstance(raw_calls, list):  # the results still answer these ids: no second error
            pending[:] = [c["id"] for c in raw_calls if isinstance(c, dict) and isinstance(c.get("id"), str)]
    # An assistant turn that only calls tools has no text (OpenAI writes null); a tool may return an empty string.
    may_be_empty = role == "tool" or has_calls
    if content is None and may_be_empty and role != "tool":
        content = ""
    if not isinstance(content, str):
        report(f"{path}.content", "missing" if content is None else f"must be a string, got {json_type(content)}")
        ok = False
    elif not may_be_empty and not content.strip():
        report(f"{path}.content", "is empty")
        ok = False
    if weight is not None and role != "assistant":
        report(f"{path}.weight", "weight is allowed on assistant messages only")
        ok = False
    elif weight is not None and (isinstance(weight, bool) or weight not in (0, 1)):
        report(f"{path}.weight", f"must be 0 or 1, got {weight!r}")
        ok = False
    call_id = _answered_call(item, path, role, pending, report) if role == "tool" else None
    if role == "assistant" and (calls or not has_calls):
        pending[:] = [call.id for call in calls]
    if not ok or (role == "tool" and call_id is None):
        return None
    return Message(role, content, 1.0 if weight is None else float(weight), calls, call_id)


def _tool_calls(
    value: Any, path: str, index: int, tools: Sequence[Mapping[str, Any]] | None, report: _Report
) -> tuple[ToolCall, ...] | None:
    if not isinstance(value, list):
        report(path, f"must be a list of tool calls, got {json_type(value)}")
        return None
    names = tool_names(tools or ())
    calls, ok = [], True
    for j, raw in enumerate(value):
        where = f"{path}[{j}]"
        function = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(function, dict):
            report(where, 'must be an object {"id", "type": "function", "function": {"name", "arguments"}}')
            ok = False
            continue
        name, call_id = function.get("name"), raw.get("id") or f"call_{index}_{j}"
        if not isinstance(name, str) or not name:
            report(f"{where}.function.name", "missing" if name is None else f"must be a string, got {name!r}")
            ok = False
        elif tools is not None and name not in names:
            known = f"the record's tools: {', '.join(names)}" if names else "the record has no 'tools'"
            report(f"{where}.function.name", f"calls unknown tool {name!r} ({known})")
            ok = False
        if not isinstance(call_id, str):
            report(f"{where}.id", f"must be a string, got {json_type(call_id)}")
            ok = False
        arguments = _arguments(function.get("arguments"), f"{where}.function.arguments", report)
        if arguments is None:
            ok = False
        elif ok:
            calls.append(ToolCall(str(call_id), str(name), arguments))
    return tuple(calls) if ok else None


def _arguments(value: Any, path: str, report: _Report) -> str | None:
    """A call's arguments as JSON text of an object: OpenAI writes a string, many datasets an object."""
    if value is None:
        return "{}"
    value = decoded(value, path, "are not valid JSON", report)
    if value is UNREADABLE:
        return None
    if not isinstance(value, dict):
        report(path, f"must be a JSON object of argument values, got {json_type(value)}")
        return None
    return json.dumps(value, ensure_ascii=False)


def _answered_call(item: Mapping[str, Any], path: str, role: str, pending: list[str], report: _Report) -> str | None:
    """The id of the call a tool message answers (the next unanswered one when it names none), or None if none."""
    wanted = item.get("tool_call_id")
    if wanted is not None and not isinstance(wanted, str):
        report(f"{path}.tool_call_id", f"must be a string, got {json_type(wanted)}")
        return None
    if not pending:
        report(path, "a tool message with no matching tool call (no earlier assistant call is waiting for a result)")
        return None
    if wanted is None:
        return pending.pop(0)
    if wanted not in pending:
        report(f"{path}.tool_call_id", f"{wanted!r} matches no pending tool call (waiting: {', '.join(pending)})")
        return None
    pending.remove(wanted)
    return wanted


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages as chat templates take them (transformers' tool-use guide: arguments as an object, not JSON text)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.loads(c.arguments)}}
                for c in m.tool_calls
            ]
        if m.tool_call_id is not None:
            msg["tool_call_id"] = m.tool_call_id
        out.append(msg)
    return out


def uses_tools(messages: Sequence[Message], tools: Sequence[Any]) -> bool:
    return bool(tools) or any(m.tool_calls or m.role == "tool" for m in messages)


# What a tool-aware template must write: the tool list, the call (name and arguments) and the tool's result.
_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lmtune_probe_tool",
            "description": "lmtune_probe_schema",
            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
        },
    }
]
_PROBE = [
    {"role": "user", "content": "q"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "lmtune_probe_tool", "arguments": {"x": "argx"}}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_0", "content": "lmtune_probe_result"},
    {"role": "assistant", "content": "a"},
]
_PROBE_PARTS = {
    "the tool definitions (tools=)": "lmtune_probe_schema",
    "the assistant's tool calls": "argx",
    "the tool results": "lmtune_probe_result",
}


def check_tool_template(tokenizer: Any, name: str | None = None, where: str = "") -> None:
    """Refuse, naming the template, one that cannot render tool definitions, calls and results.

    Found by rendering a probe conversation: a template without tool support drops ``tools=`` and the calls
    silently (or raises on the ``tool`` role), and the model would train on conversations missing their calls.
    """
    label = name or template_name(tokenizer)
    try:
        text = tokenizer.apply_chat_template(_PROBE, tools=_PROBE_TOOLS, tokenize=False)
        missing = [part for part, marker in _PROBE_PARTS.items() if marker not in text]
    except Exception as error:  # jinja2 raise_exception, TemplateError, KeyError...: the template refuses tools
        missing = [f"everything (it fails: {type(error).__name__}: {str(error).strip()[:120]})"]
    if not missing:
        return
    problem = f"the chat template {label} cannot render tool calling: it leaves out {', '.join(missing)}"
    hint = (
        "set data.chat_template: chatml-tools (ChatML with Qwen2.5's tool format), or use a model whose template "
        "takes tools= (Qwen2.5, Llama 3.1, Mistral, Hermes)"
    )
    if where:  # the data file that calls tools
        raise DataError(where, None, None, f"the data calls tools, but {problem}", hint=hint)
    raise LmtuneError(problem, hint=hint)


def template_name(tokenizer: Any) -> str:
    """How an error names the tokenizer's template: the model it came with (its directory's or hub id's name)."""
    source = str(getattr(tokenizer, "name_or_path", "") or "")
    return f"of {Path(source).name or source}" if source else "(unnamed)"
