"""Conversation layouts other tools write, read as OpenAI chat messages: ShareGPT and Alpaca with ``history``.

ShareGPT (Vicuna's export, LLaMA-Factory's ``sharegpt`` format): ``{"conversations": [{"from", "value"}, ...],
"system"?, "tools"?}`` with ``from`` one of human, gpt, system, function_call (the assistant calls a tool: its value
is the JSON of ``{"name", "arguments"}`` or a list of them) and observation (the tool's result). Alpaca with
``history`` (LLaMA-Factory's ``alpaca`` format): earlier ``[instruction, response]`` pairs become the turns before the
record's own instruction and output. Both become the same messages an OpenAI record holds and are validated by
`lmtune.data.chat`, with problems reported at the user's own fields (``conversations[3].value``, ``history[1]``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lmtune.data.chat import UNREADABLE, Message, decoded, parse_messages, parse_tools
from lmtune.data.types import Record, json_type

_Report = Callable[[str, str], None]

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
}


def sharegpt_messages(
    record: Record, columns: Mapping[str, str], report: _Report
) -> tuple[tuple[Message, ...], tuple[dict[str, Any], ...]] | None:
    """The messages and tools of a ShareGPT record, or None after reporting its problems."""
    field = columns.get("conversations", "conversations")
    turns = record.data.get(field)
    if not isinstance(turns, list) or not turns:
        report(field, f"must be a non-empty list of {{from, value}} objects, got {json_type(turns)}")
        return None
    tools = parse_tools(record.data.get(columns.get("tools", "tools")), columns.get("tools", "tools"), report)
    items: list[dict[str, Any]] = []
    paths: list[str] = []
    system_field = columns.get("system", "system")
    system = record.data.get(system_field)
    if system is not None and not isinstance(system, str):
        report(system_field, f"must be a string, got {json_type(system)}")
        return None
    if system and system.strip():
        items.append({"role": "system", "content": system})
        paths.append(system_field)
    ok = True
    for i, turn in enumerate(turns):
        path = f"{field}[{i}]"
        item = _turn(turn, path, i, report)
        ok = ok and item is not None
        if item is not None:
            items.append(item)
            paths.append(path)
    messages = parse_messages(items, field, report, tools, paths) if ok else None
    return None if messages is None or tools is None else (messages, tools)


def _turn(turn: Any, path: str, index: int, report: _Report) -> dict[str, Any] | None:
    """One ShareGPT turn as an OpenAI message (a function_call turn: an assistant turn with its tool calls)."""
    if not isinstance(turn, dict):
        report(path, f"must be an object with 'from' and 'value', got {json_type(turn)}")
        return None
    speaker, value = turn.get("from"), turn.get("value")
    if speaker not in SHAREGPT_ROLES:
        found = "missing" if speaker is None else f"unknown speaker {speaker!r}"
        report(f"{path}.from", f"{found} (allowed: {', '.join(SHAREGPT_ROLES)})")
        return None
    if speaker != "function_call":
        return {"role": SHAREGPT_ROLES[speaker], "content": value}
    value = decoded(value, f"{path}.value", "a function_call's value must be the JSON of {name, arguments}", report)
    if value is UNREADABLE:
        return None
    calls = value if isinstance(value, list) else [value]
    if not calls or not all(isinstance(call, dict) for call in calls):
        report(f"{path}.value", f"a function_call's value must be {{name, arguments}} or a list of them, got {value!r}")
        return None
    tool_calls = [{"id": f"call_{index}_{j}", "type": "function", "function": call} for j, call in enumerate(calls)]
    return {"role": "assistant", "content": None, "tool_calls": tool_calls}


def with_history(
    record: Record, columns: Mapping[str, str], prompt: str, completion: str, report: _Report
) -> tuple[Message, ...] | None:
    """An Alpaca record's earlier ``[instruction, response]`` pairs, then its own prompt and output, as messages.

    Every response is an assistant turn and is trained, as in a messages record (LLaMA-Factory's default too).
    """
    field = columns.get("history", "history")
    history = record.data.get(field)
    items: list[dict[str, Any]] = []
    paths: list[str] = []
    system_field = columns.get("system", "system")
    if isinstance(record.data.get(system_field), str) and record.data[system_field].strip():
        items.append({"role": "system", "content": record.data[system_field]})
        paths.append(system_field)
    if history is not None and not isinstance(history, list):
        report(field, f"must be a list of [instruction, response] pairs, got {json_type(history)}")
        return None
    for i, pair in enumerate(history or []):
        if not (isinstance(pair, list) and len(pair) == 2):
            report(f"{field}[{i}]", f"must be an [instruction, response] pair, got {pair!r}"[:200])
            return None
        items += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        paths += [f"{field}[{i}][0]", f"{field}[{i}][1]"]
    items += [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    paths += [columns.get("instruction", "instruction"), columns.get("output", "output")]
    return parse_messages(items, field, report, (), paths)
