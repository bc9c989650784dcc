"""A generated reply's tool calls, in the shape OpenAI's chat API gives them.

Why our own code: transformers reads the calls out of the text (``tokenizer.parse_response`` with the model's
``response_template``, which lmtune saves with every model tuned on its chatml-tools template). What is left is
OpenAI's shape: each call gets an id, its arguments become a JSON string, and the choice finishes with
``tool_calls``. A model without a response template, or a reply whose call is cut off or is not JSON, is
answered as plain text, as before.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

Parser = Callable[[str], dict[str, Any] | None]


def tool_parser(tokenizer: Any, prompt: str, tools: Sequence[dict[str, Any]] | None) -> Parser | None:
    """A function from a reply's text to its assistant message with ``tool_calls`` (None when it calls none), or
    None when the request offers no tools or the model's tokenizer cannot parse its replies."""
    if not tools or getattr(tokenizer, "response_template", None) is None:
        return None

    def parse(text: str) -> dict[str, Any] | None:
        try:
            message = tokenizer.parse_response(text, prefix=prompt, tools=list(tools))
        except ValueError:  # a call cut off by max_tokens, or arguments that are not JSON: the text stands
            return None
        calls = [openai_call(call) for call in message.get("tool_calls") or []]
        if not calls or None in calls:
            return None
        return {"role": "assistant", "content": message.get("content") or None, "tool_calls": calls}

    return parse


def openai_call(call: Any) -> dict[str, Any] | None:
    """``{"type": "function", "function": {"name", "arguments": {...}}}`` as OpenAI sends it (an id, JSON text)."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        return None
    arguments = function.get("arguments", {})
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {
        "id": "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": function["name"], "arguments": text},
    }


def stream_delta(message: dict[str, Any]) -> dict[str, Any]:
    """The one streamed delta that carries a parsed message: its text and its calls, each call with its index."""
    delta: dict[str, Any] = {"content": message["content"]} if message["content"] else {}
    delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    return delta
