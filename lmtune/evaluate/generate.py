"""Generate text with a tuned run, rendering the prompt exactly the way the run's training data was rendered."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from lmtune.config import RunConfig
from lmtune.data.formats import ALPACA_TEMPLATE, ROLES, Message
from lmtune.data.long_text import special_affixes
from lmtune.errors import LmtuneError
from lmtune.export import load_tuned, read_run_config
from lmtune.rope import context_length
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
    task = loaded[2].task if loaded else read_run_config(run_dir).task
    if task in ("classification", "token_classification"):
        raise LmtuneError(
            f"{run_dir} is a {task} run: its model predicts labels with a classification head and generates no text",
            hint=f"score it with `lmtune eval {run_dir} --data FILE`",
        )
    model, tokenizer, cfg = loaded or load_tuned(run_dir)
    chat = bool(read_json(run_dir, "data.json").get("chat"))
    text = build_prompt(tokenizer, cfg, chat, prompt, messages)
    # The same batched path `lmtune eval` uses: the prompt as training rendered it, stop at the model's EOS.
    (answer,) = generate_texts(
        model,
        tokenizer,
        [text],
        max_new_tokens=max_new_tokens,
        batch_size=1,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        rendered=chat,
        progress=False,
    )
    return answer


def _prompt_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: str, encoder_decoder: bool, chat: bool, rendered: bool = False
) -> list[int]:
    """Token ids of one prompt, with the special tokens the model expects around it.

    An encoder gets the tokenizer's own affixes (T5 ends its input with </s>). A decoder-only model gets the
    start tokens training gave raw text (Llama's BOS) but never the end ones: a trailing EOS would tell it the
    text is over. A chat template writes its own special tokens: a prompt it already `rendered` is taken as is,
    as training took chat text.
    """
    if encoder_decoder:
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if rendered:
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if chat:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    prefix, _ = special_affixes(tokenizer)
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = ids if ids[: len(prefix)] == prefix else [*prefix, *ids]
    # An empty prompt (unconditional generation) still needs one token to attend to.
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return ids or [start]


def context_limit(model: Any) -> int | None:
    """The most positions the model can attend to (learned position tables fail past it), when its config says."""
    return context_length(model.config)  # a dynamic RoPE scaling stretches it (lmtune.rope)


def _stop_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = {*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id}
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def _generate_batched(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    temperature: float,
    top_p: float,
    seed: int,
    chat: bool,
    max_input_tokens: int | None,
    skip_too_long: bool,
    rendered: bool = False,
    progress: bool,
    desc: str,
) -> list[str | None]:
    if batch_size < 1 or max_new_tokens < 1:
        raise LmtuneError(f"batch_size and max_new_tokens must be at least 1, got {batch_size} and {max_new_tokens}")
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    ids = [_prompt_ids(tokenizer, p, encoder_decoder, chat, rendered) for p in prompts]
    if max_input_tokens is not None:
        # A decoder continues from the end of its prompt, so that is what it keeps; an encoder reads from the start.
        ids = [row[:max_input_tokens] if encoder_decoder else row[-max_input_tokens:] for row in ids]
    limit = context_limit(model)
    fits = [limit is None or len(row) + (0 if encoder_decoder else max_new_tokens) <= limit for row in ids]
    if not skip_too_long and not all(fits):
        i = fits.index(False)
        raise LmtuneError(
            f"prompt {i + 1} of {len(prompts)} has {len(ids[i])} tokens: with max_new_tokens={max_new_tokens} it does "
            f"not fit the model's context of {limit} positions",
            hint="shorten the prompt, lower max_new_tokens, or set max_input_tokens to truncate prompts",
        )
    # Longest first: rows of a batch have similar lengths (little padding), and an out-of-memory error comes at once.
    order = sorted((i for i in range(len(ids)) if fits[i]), key=lambda i: -len(ids[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = _stop_ids(model, tokenizer)
    sample = temperature > 0
    results: list[str | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    if sample:
        torch.manual_seed(seed)
    bar = tqdm(total=len(order), desc=desc, unit="prompt", disable=None if progress else True, file=sys.stderr)
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(ids[i]) for i in batch)
            rows, masks = [], []
            for i in batch:
                pad = width - len(ids[i])
                # Left padding for decoder-only models: every row's new tokens then start at the same column.
                rows.append(ids[i] + [pad_id] * pad if encoder_decoder else [pad_id] * pad + ids[i])
                masks.append([1] * len(ids[i]) + [0] * pad if encoder_decoder else [0] * pad + [1] * len(ids[i]))
            input_ids = torch.tensor(rows, device=model.device)
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.tensor(masks, device=model.device),
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                temperature=temperature if sample else None,
                top_p=top_p if sample else None,
                pad_token_id=pad_id,
                eos_token_id=stop,
                use_cache=True,  # a run with gradient checkpointing switches the cache off in the model's config
            )
            # An encoder-decoder's output starts with the decoder start token (BART's is its EOS): drop it.
            new = out[:, 1:] if encoder_decoder else out[:, width:]
            for i, row in zip(batch, new.tolist(), strict=True):
                end = next((k for k, tok in enumerate(row) if tok in stop), len(row))
                results[i] = tokenizer.decode(row[:end], skip_special_tokens=True)
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    return results


def generate_texts(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    chat: bool = False,
    rendered: bool = False,
    max_input_tokens: int | None = None,
    progress: bool = True,
    desc: str = "generating",
) -> list[str]:
    """The text each prompt continues with (greedy unless temperature > 0), in the order of ``prompts``.

    Works for decoder-only models (left-padded batches, so attention masks and the position ids generate derives
    from them skip the padding) and encoder-decoder models (the encoder input padded on the right), with the KV
    cache on. ``chat=True`` sends each prompt as a user turn through the tokenizer's chat template (decoder-only);
    otherwise the prompt is used as is (``rendered=True``: it was already rendered by the chat template, so no BOS
    is added). A prompt longer than the model's context raises unless
    ``max_input_tokens`` truncates it. Generation stops at the tokenizer's or the model's EOS, which is cut off.
    """
    texts = _generate_batched(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        chat=chat,
        max_input_tokens=max_input_tokens,
        skip_too_long=False,
        rendered=rendered,
        progress=progress,
        desc=desc,
    )
    return [text or "" for text in texts]


def text_generator(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    *,
    chat: bool | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    temperature: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> Callable[[list[str]], list[str | None]]:
    """``generate_texts`` as a plain ``prompts -> texts`` function, for stages that must not import the model
    (``lmtune.data.augment``). A prompt that does not fit the model's context gives None instead of failing the
    whole list. ``chat=None`` uses the chat template when the tokenizer has one and the model is decoder-only."""
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    use_chat = (tokenizer.chat_template is not None and not encoder_decoder) if chat is None else chat

    def run(prompts: list[str]) -> list[str | None]:
        return _generate_batched(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            temperature=temperature,
            top_p=1.0,
            seed=seed,
            chat=use_chat,
            max_input_tokens=None,
            skip_too_long=True,
            progress=progress,
            desc="generating",
        )

    return run
