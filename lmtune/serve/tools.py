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
from dataclasses import dataclass
from typing import Any

Parser = Callable[[str], dict[str, Any] | None]


@dataclass(frozen=True)
class ToolReader:
    """How one request's replies are read for calls: ``parse`` a whole reply (its assistant message with
    ``tool_calls``, or None when it calls none), and the literal that opens a call (None when a pattern does)."""

    parse: Parser
    tag: str | None

    def holdback(self) -> Holdback:
        return Holdback(self.tag)


@dataclass
class Holdback:
    """A streamed reply that may call a tool: its text is sent as it comes until a call's opening tag (or a tail
    that could start one) appears; from there it is held until the reply ends and is read for calls."""

    tag: str | None
    text: str = ""
    sent: int = 0  # characters of ``text`` already sent

    def feed(self, chunk: str) -> str:
        """The text that can be sent now."""
        self.text += chunk
        if self.tag is None:
            return ""
        found = self.text.find(self.tag, self.sent)
        end = found if found >= 0 else len(self.text) - _partial_tag(self.text, self.tag)
        out, self.sent = self.text[self.sent : end], max(self.sent, end)
        return out


def _partial_tag(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that begins ``tag``."""
    return next((n for n in range(min(len(tag) - 1, len(text)), 0, -1) if text.endswith(tag[:n])), 0)


def tool_reader(tokenizer: Any, prompt: str, tools: Sequence[dict[str, Any]] | None) -> ToolReader | None:
    """How to read the request's replies for tool calls, or None when it offers no tools or the model's tokenizer
    cannot parse its replies."""
    template = getattr(tokenizer, "response_template", None)
    if not tools or template is None:
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

    tag = ((template.get("fields") or {}).get("tool_calls") or {}).get("open")
    return ToolReader(parse, tag if isinstance(tag, str) and tag else None)


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


def stream_delta(message: dict[str, Any], *, content: bool) -> dict[str, Any]:
    """The one streamed delta that carries a parsed message's calls, each with its index (and its text, unless that
    was streamed already)."""
    delta: dict[str, Any] = {"content": message["content"]} if content and message["content"] else {}
    delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    return delta
