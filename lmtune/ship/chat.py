"""`lmtune chat RUN|MODEL`: a multi-turn conversation through the model's chat template.

The session keeps the history and renders all of it (system prompt, earlier turns, the new message) for every
answer, so each answer sees the conversation so far. Text reaches the caller through `on_text` as it is generated:
the same per-token path the server uses (`lmtune.serve.engine`), so chat, serve and their stop rules agree.
The CLI reads the lines and prints; this module does neither.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.errors import LmtuneError
from lmtune.serve.engine import Job, generate_batch
from lmtune.serve.registry import Served, load_registry

COMMANDS = "/reset (forget the conversation), /save FILE (write it as JSON), /exit"


def _silent(text: str, warning: bool = False) -> None:
    pass


@dataclass
class ChatSession:
    served: Served
    system: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    history: list[dict[str, str]] = field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def ask(self, text: str, on_text: Callable[[str], None] = lambda _: None) -> str:
        """Answer `text` in the context of the conversation, streaming the answer to `on_text`."""
        tok = self.served.backend.tokenizer
        messages = [*self.messages(), {"role": "user", "content": text}]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = list(tok(prompt, add_special_tokens=False)["input_ids"])
        context = self.served.backend.context
        if context is not None and len(ids) + self.max_tokens > context:
            raise LmtuneError(
                f"the conversation has {len(ids)} tokens: with --max-tokens {self.max_tokens} it does not fit the "
                f"model's context of {context}",
                hint="/reset to start over, or lower --max-tokens",
            )
        parts: list[str] = []
        failure: list[str] = []

        def emit(kind: str, payload: Any) -> None:
            if kind == "text":
                parts.append(payload)
                on_text(payload)
            elif kind == "error":
                failure.append(payload)

        job = Job(self.served, ids, self.max_tokens, self.temperature, self.top_p, self.seed, (), emit)
        generate_batch([job])
        if failure:
            raise LmtuneError(failure[0])
        answer = "".join(parts)
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        return answer

    def reset(self) -> None:
        self.history.clear()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps({"messages": self.messages()}, ensure_ascii=False, indent=2) + "\n", "utf-8")
        return path


def open_chat(source: str | Path, *, report: Callable[..., None] = _silent, **settings: Any) -> ChatSession:
    """A chat session with a run or a model directory (`settings`: ChatSession's system, max_tokens, temperature,
    top_p, seed; and device, auto by default: cuda when there is one)."""
    registry = load_registry([source], report, settings.pop("device", "auto"))
    (served,) = registry.models.values()
    if not served.backend.chat:
        raise LmtuneError(
            f"{source} has no chat template: it was trained on raw text",
            hint=f"continue text with: lmtune generate {source} --prompt TEXT",
        )
    return ChatSession(served, **settings)


def run_command(session: ChatSession, line: str) -> tuple[str, str]:
    """A `/command` line -> (action, message): action is "exit", "info" or "error"."""
    name, _, arg = line.strip().partition(" ")
    if name in ("/exit", "/quit"):
        return "exit", ""
    if name == "/reset":
        session.reset()
        return "info", "(conversation cleared)"
    if name == "/save":
        if not arg.strip():
            return "error", "/save needs a file name: /save chat.json"
        return "info", f"(saved {len(session.history)} messages to {session.save(arg.strip())})"
    return "error", f"unknown command {name}; commands: {COMMANDS}"
