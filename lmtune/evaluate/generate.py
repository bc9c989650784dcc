"""Generate text with a tuned run, rendering the prompt exactly the way the run's training data was rendered."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from lmtune.config import RunConfig
from lmtune.data.formats import ALPACA_TEMPLATE, ROLES, Message
from lmtune.data.tokenize import special_affixes
from lmtune.errors import LmtuneError
from lmtune.export import load_tuned
from lmtune.rundir import read_json


def build_prompt(
    tokenizer: PreTrainedTokenizerBase, cfg: RunConfig, chat: bool, prompt: str | None, messages: Sequence[Message]
) -> str:
    """The text to continue: chat runs get the chat template with a generation prompt; raw runs get the run's
    prompt template (Alpaca's for instruction data) filled with the prompt when it only asks for the prompt."""
    if chat:
        msgs = [{"role": m.role, "content": m.content} for m in messages] or [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if messages:
        raise LmtuneError("this run was trained on raw text, not chat", hint="pass --prompt instead of --messages")
    assert prompt is not None
    template = cfg.data.prompt_template
    if template is None and cfg.data.format == "instruction":
        template = ALPACA_TEMPLATE["without_input"]
    if template:
        try:
            return template.format(prompt=prompt, instruction=prompt, input="")
        except (KeyError, IndexError):
            pass  # the template names dataset columns: the user's prompt is taken as the full prompt
    return prompt


def read_messages(path: str | Path) -> list[Message]:
    """A chat to continue: a JSON list of {role, content} objects, or {"messages": [...]}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LmtuneError(
            f"{path}: cannot read messages: {e}", hint='write [{"role": "user", "content": "..."}]'
        ) from None
    if isinstance(data, dict):
        data = data.get("messages")
    if not isinstance(data, list) or not data:
        raise LmtuneError(f"{path}: expected a non-empty list of messages", hint='[{"role": "user", "content": "..."}]')
    out = []
    for i, m in enumerate(data):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise LmtuneError(
                f"{path}: messages[{i}] must be an object with role ({', '.join(ROLES)}) and string content"
            )
        out.append(Message(m["role"], m["content"]))
    return out


@torch.no_grad()
def generate(
    run_dir: str | Path,
    *,
    prompt: str | None = None,
    messages: Sequence[Message] = (),
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    loaded: tuple[Any, PreTrainedTokenizerBase, RunConfig] | None = None,
) -> str:
    """Generate a completion from the tuned model of `run_dir` (greedy unless temperature > 0)."""
    if (prompt is None) == (not messages):
        raise LmtuneError("give either a prompt or messages")
    run_dir = Path(run_dir)
    model, tokenizer, cfg = loaded or load_tuned(run_dir)
    chat = bool(read_json(run_dir, "data.json").get("chat"))
    text = build_prompt(tokenizer, cfg, chat, prompt, messages)
    prefix, _ = special_affixes(tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not chat:
        ids = [*prefix, *ids]
    input_ids = torch.tensor([ids])
    torch.manual_seed(seed)
    sample = temperature > 0
    stop = model.generation_config.eos_token_id
    stop = [*(stop if isinstance(stop, list) else [stop] if stop is not None else []), tokenizer.eos_token_id]
    out = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_p=top_p if sample else None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=sorted(set(stop)),
    )
    return tokenizer.decode(out[0, input_ids.shape[1] :], skip_special_tokens=True)
