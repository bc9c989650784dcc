"""Does inference see what training rendered, and does training teach the token that stops generation?

The classic silent fine-tuning bugs live at the seams between the data, the chat template and generation: a
prompt that ends mid-token, a template without an end-of-turn token, an EOS the generation loop does not stop
on. `template_check` renders examples the way training does and the way `lmtune generate` will, and compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from transformers import PreTrainedTokenizerBase

from lmtune.data.formats import ChatExample, Example, Message, PromptCompletionExample, TextExample
from lmtune.data.quality import Finding
from lmtune.data.tokenize import chat_text, encode, render, render_chat, special_affixes, uses_chat
from lmtune.data.types import IGNORE

# The characters of a long field the scan keeps: both checks look at the seams (where a prompt ends and its answer
# starts, where an answer ends), so a 5 MB prompt is checked by its last few thousand characters rather than
# tokenized whole, several times over.
WINDOW = 4000


def _clip(text: str, head: bool) -> str:
    """The last WINDOW characters of `text` (and, with `head`, its first WINDOW too), cut at whitespace so no word is
    split: tokenizers split words apart before they merge, so the tokens near the seams stay the same."""
    if len(text) <= (2 if head else 1) * WINDOW + 64:
        return text
    tail = text[-WINDOW:]
    tail = tail[tail.find(" ") + 1 :] if " " in tail else tail
    if not head:
        return tail
    start = text[:WINDOW]
    return start[: start.rfind(" ") + 1] + tail if " " in start else start + " " + tail


def _windowed(example: Example) -> Example:
    """The example with its long prompts shortened to their ends and its long answers to their two ends."""
    if isinstance(example, PromptCompletionExample):
        return replace(example, prompt=_clip(example.prompt, head=False), completion=_clip(example.completion, True))
    if isinstance(example, ChatExample):
        messages = tuple(replace(m, content=_clip(m.content, head=m.role == "assistant")) for m in example.messages)
        return replace(example, messages=messages)
    if isinstance(example, TextExample):  # trained whole: its end, where EOS is appended, is the seam
        return replace(example, text=_clip(example.text, head=True))
    return example


def _first_assistant(example: Example) -> tuple[ChatExample, int] | None:
    if isinstance(example, PromptCompletionExample):
        example = ChatExample(
            (Message("user", example.prompt), Message("assistant", example.completion)), example.source, example.line
        )
    if not isinstance(example, ChatExample):
        return None
    for i, m in enumerate(example.messages):
        if m.role == "assistant" and m.weight:
            return example, i
    return None


def _prompt_and_full(example: Example, tokenizer: PreTrainedTokenizerBase, chat: bool) -> tuple[str, str] | None:
    """The text inference is given (up to where the first trained answer starts) and the text training renders."""
    if chat:
        found = _first_assistant(example)
        if found is None:
            return None
        ex, i = found
        prompt = chat_text(tokenizer, ex.messages[:i], True, ex.tools)
        return prompt, render_chat(ex, tokenizer).text
    if isinstance(example, PromptCompletionExample):
        return example.prompt, example.prompt + example.completion
    return None


def template_check(
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    stop_ids: Sequence[int],
    split: str = "train",
    sample: int = 500,
) -> tuple[dict[str, Any], list[Finding]]:
    """Does inference see what training rendered, and does training teach the token that stops generation?

    1. The prompt inference builds (chat template with the generation prompt, or the raw prompt) must tokenize
       to a prefix of the training tokens; otherwise the model is asked to continue a sequence it never saw
       (typically a token merging the end of the prompt with the start of the answer).
    2. Every trained assistant turn must end in a token the generation loop stops on; otherwise the model
       learns to run on past its answer (e.g. a template without an end-of-turn token, or an EOS that is not
       the model's stop token).
    """
    findings: list[Finding] = []
    if not examples:
        return {}, findings
    chat = uses_chat(examples[0], template)
    stops = sorted({int(i) for i in stop_ids if i is not None})
    info: dict[str, Any] = {
        "mode": "chat template" if chat else "raw text",
        "eos_token": tokenizer.eos_token,
        "stop_tokens": [tokenizer.convert_ids_to_tokens(i) for i in stops],
    }
    if chat and not tokenizer.chat_template:
        findings.append(
            Finding("error", "template", "chat data but the tokenizer has no chat template", split, examples[0].source)
        )
        info["ok"] = False
        return info, findings
    if tokenizer.eos_token is None:
        findings.append(
            Finding(
                "error",
                "template",
                "the tokenizer has no EOS token: the model cannot learn to stop, and generation runs to max_new_tokens",
                split,
                examples[0].source,
            )
        )
    mismatched, unstoppable = _scan(examples[:sample], tokenizer, template, chat, stops)
    checked = min(len(examples), sample)
    findings += _scan_findings(mismatched, unstoppable, checked, info["stop_tokens"], split)
    info.update(
        checked=checked,
        prompt_prefix_mismatches=len(mismatched),
        answers_without_stop=len(unstoppable),
        ok=not mismatched and not unstoppable and tokenizer.eos_token is not None,
    )
    first = _prompt_and_full(examples[0], tokenizer, chat)
    if first is not None:
        info["inference_prompt_end"] = first[0][-60:]
        info["training_answer_end"] = first[1][-60:]
    return info, findings


def _scan(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, template: str, chat: bool, stops: Sequence[int]
) -> tuple[list[Example], list[Example]]:
    """The examples whose inference prompt is no prefix of their training tokens, and those never taught to stop."""
    prefix, _ = special_affixes(tokenizer)
    mismatched: list[Example] = []
    unstoppable: list[Example] = []
    for original in examples:
        ex = _windowed(original)
        pair = _prompt_and_full(ex, tokenizer, chat)
        if pair is not None:
            prompt_ids = tokenizer(pair[0], add_special_tokens=False)["input_ids"]
            full_ids = tokenizer(pair[1], add_special_tokens=False)["input_ids"]
            if full_ids[: len(prompt_ids)] != prompt_ids:
                mismatched.append(original)
        if not _learns_to_stop(ex, tokenizer, template, prefix, set(stops)):
            unstoppable.append(original)
    return mismatched, unstoppable


def _scan_findings(
    mismatched: Sequence[Example], unstoppable: Sequence[Example], checked: int, stop_tokens: Sequence[str], split: str
) -> list[Finding]:
    """One finding per kind of problem the scan found, pointing at its first example."""
    findings: list[Finding] = []
    if mismatched:
        first = mismatched[0]
        findings.append(
            Finding(
                "warning",
                "template",
                f"{len(mismatched)} of {checked} examples: the prompt "
                "inference sends does not tokenize to a prefix of the training tokens (a token "
                "spans the prompt/answer boundary); end prompts with a newline",
                split,
                first.source,
                first.line,
            )
        )
    if unstoppable:
        first = unstoppable[0]
        names = ", ".join(stop_tokens) or "none"
        findings.append(
            Finding(
                "error",
                "template",
                f"{len(unstoppable)} of {checked} examples train an answer "
                f"that does not end in a stop token ({names}): the tuned model will not stop "
                "after its answer; use a chat template with an end-of-turn token that is the "
                "model's EOS",
                split,
                first.source,
                first.line,
            )
        )
    return findings


def _learns_to_stop(
    example: Example, tokenizer: PreTrainedTokenizerBase, template: str, prefix: Sequence[int], stops: set[int]
) -> bool:
    """Whether every run of trained tokens (an assistant turn, or a completion with its EOS) holds a stop token."""
    tok = encode(render(example, tokenizer, template), tokenizer, prefix)
    runs: list[list[int]] = []
    for i, label in enumerate(tok.labels):
        if label == IGNORE:
            continue
        if i == 0 or tok.labels[i - 1] == IGNORE:
            runs.append([])
        runs[-1].append(tok.input_ids[i])
    return all(stops.intersection(run) for run in runs)
