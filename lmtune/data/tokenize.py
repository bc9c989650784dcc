"""Render examples to text, tokenize them and mark the tokens the loss is computed on.

Why our own code: TRL's `assistant_only_loss` needs a template with `{% generation %}` markers that most chat
templates lack, and masking by tokenizing pieces separately changes the tokens at the seams. Here the text is
rendered once, exactly as inference will see it, tokenized once with character offsets, and a token is trained
when it overlaps a trained character span (the completion, or an assistant turn with weight 1): a prompt ending
in a space ('Summary: ') merges with the completion's first word (' A'), and that token must be trained. For chat,
the span of assistant turn i is found by rendering the conversation up to turn i with and without it, so any
prefix-stable chat template works, and the end-of-turn marker is trained so the model learns to stop.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lmtune.data.chat import (
    CHATML_TOOLS,
    CHATML_TOOLS_RESPONSE,
    check_tool_template,
    template_messages,
    template_name,
    uses_tools,
)
from lmtune.data.formats import (
    ChatExample,
    Example,
    LabelExample,
    Message,
    PromptCompletionExample,
    TextExample,
    TokensExample,
)
from lmtune.data.labels import merge_spans, piece_labels, train_trailing_space
from lmtune.data.long_text import encode_pieces, encode_text, special_affixes
from lmtune.data.types import IGNORE, Tokenized, TokenStats
from lmtune.errors import DataError, LmtuneError

CHAT_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "plain": (
        "{{ bos_token if bos_token else '' }}{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
        "{% elif message['role'] == 'user' %}{{ '### User:\\n' + message['content'] + '\\n\\n' }}"
        "{% else %}{{ '### Assistant:\\n' + message['content'] + eos_token + '\\n\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}"
    ),
    "chatml-tools": CHATML_TOOLS,  # chatml that renders tools, tool calls and results (lmtune.data.chat)
}


@dataclass(frozen=True)
class Rendered:
    text: str
    spans: tuple[tuple[int, int], ...]  # character ranges whose tokens are trained
    chat: bool  # chat templates write their own special tokens; raw text gets the tokenizer's BOS/EOS
    ends_trained: bool  # whether the appended EOS (if any) is trained


def setup_chat_template(tokenizer: PreTrainedTokenizerBase, chat_template: str | None) -> None:
    """Install the configured template (a built-in name or Jinja text) on the tokenizer, which is saved with it."""
    if chat_template is None:
        return
    tokenizer.chat_template = CHAT_TEMPLATES.get(chat_template, chat_template)
    if chat_template == "chatml-tools":  # so `lmtune serve` can read the tuned model's tool calls back
        tokenizer.response_template = CHATML_TOOLS_RESPONSE


def uses_chat(example: Example, template: str) -> bool:
    if template == "auto":
        return isinstance(example, ChatExample)
    if template == "chat":
        return not isinstance(example, TextExample)
    if isinstance(example, ChatExample):
        raise LmtuneError(
            f"{example.source}: data.template is 'raw' but the data is chat messages",
            hint="messages are rendered with a chat template: set data.template to 'auto' or 'chat'",
        )
    return False


def chat_text(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    generation_prompt: bool,
    tools: Sequence[dict] = (),
) -> str:
    """The conversation through the tokenizer's chat template (with its tools, when it has any)."""
    return tokenizer.apply_chat_template(
        template_messages(messages),
        tools=list(tools) or None,
        tokenize=False,
        add_generation_prompt=generation_prompt,
    )


def require_tool_template(tokenizer: PreTrainedTokenizerBase, where: str = "") -> None:
    """Refuse a template that cannot render tools, naming it (checked once per template text)."""
    template = str(tokenizer.chat_template)
    if template in _TOOL_TEMPLATES:
        return
    names = [name for name, text in CHAT_TEMPLATES.items() if text == template]
    check_tool_template(tokenizer, f"'{names[0]}'" if names else template_name(tokenizer), where)
    _TOOL_TEMPLATES.add(template)


_TOOL_TEMPLATES: set[str] = set()  # templates that rendered the tool probe (lmtune.data.chat.check_tool_template)


def render_chat(example: ChatExample, tokenizer: PreTrainedTokenizerBase) -> Rendered:
    if not tokenizer.chat_template:
        raise LmtuneError(
            "the tokenizer has no chat template to render chat data with",
            hint="set data.chat_template to a built-in template ('chatml' or 'plain') or a Jinja template",
        )
    messages, tools = example.messages, example.tools
    if uses_tools(messages, tools):
        require_tool_template(tokenizer, example.source)
    full = chat_text(tokenizer, messages, False, tools)
    spans = []
    for i, m in enumerate(messages):
        if m.role != "assistant" or m.weight == 0:
            continue
        before = chat_text(tokenizer, messages[:i], True, tools)
        upto = chat_text(tokenizer, messages[: i + 1], False, tools)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise DataError(
                example.source,
                example.line,
                f"messages[{i}]",
                "the chat template does not render this conversation prefix-stably, so the assistant turn "
                "cannot be located",
                hint="set data.chat_template to 'chatml' or a template whose output for fewer turns is a prefix",
            )
        # The end-of-turn marker is trained; the whitespace a template writes after it is not.
        spans.append((len(before), max(len(before), len(upto.rstrip()))))
    last = messages[-1]
    return Rendered(full, tuple(spans), chat=True, ends_trained=last.role == "assistant" and last.weight != 0)


def render(example: Example, tokenizer: PreTrainedTokenizerBase, template: str = "auto") -> Rendered:
    """The text the model sees for one example and the character spans it is trained on."""
    if isinstance(example, TextExample):
        return Rendered(example.text, ((0, len(example.text)),), chat=False, ends_trained=True)
    if uses_chat(example, template):
        if isinstance(example, PromptCompletionExample):
            example = ChatExample(
                (Message("user", example.prompt), Message("assistant", example.completion)),
                example.source,
                example.line,
            )
        return render_chat(example, tokenizer)
    assert isinstance(example, PromptCompletionExample)
    text = example.prompt + example.completion
    return Rendered(text, ((len(example.prompt), len(text)),), chat=False, ends_trained=True)


def encode(rendered: Rendered, tokenizer: PreTrainedTokenizerBase, prefix: Sequence[int] = ()) -> Tokenized:
    """Token ids and labels (IGNORE where not trained), with EOS appended when the text does not end in it."""
    merged = merge_spans(rendered.spans)
    # Offsets are read where a trained span starts or ends, and at the text's end (the trailing space below).
    edges = [*(edge for span in merged for edge in span), len(rendered.text)]
    pieces = encode_pieces(tokenizer, rendered.text, edges)
    ids = list(itertools.chain.from_iterable(piece.ids for piece in pieces))
    labels = list(itertools.chain.from_iterable(piece_labels(piece, merged) for piece in pieces))
    eos = tokenizer.eos_token
    if eos and not rendered.text.rstrip().endswith(eos):
        if rendered.ends_trained:
            train_trailing_space(pieces, labels, rendered.text)
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id if rendered.ends_trained else IGNORE)
    if not rendered.chat and prefix:
        ids = [*prefix, *ids]
        labels = [IGNORE] * len(prefix) + labels
    return Tokenized(ids, labels)


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    overlong: str = "truncate",
    template: str = "auto",
) -> tuple[list[Tokenized], TokenStats]:
    """Render and tokenize every example; over-long ones are truncated or dropped, and counted."""
    refuse_tagged(examples, "sft")
    prefix, _ = special_affixes(tokenizer)
    stats = TokenStats(examples=len(examples))
    out = []
    for ex in examples:
        tok = encode(render(ex, tokenizer, template), tokenizer, prefix)
        stats.lengths.append(len(tok.input_ids))
        truncated = len(tok.input_ids) > max_length
        if truncated and overlong == "chunk":
            if not isinstance(ex, TextExample):
                raise LmtuneError(
                    f"{ex.source}:{ex.line}: data.overlong chunk applies to raw text only",
                    hint="use truncate or drop for prompt/completion and chat data",
                )
            pieces = chunk(tok, max_length)
            stats.chunked += 1
            stats.kept += 1
            for piece in pieces:
                out.append(piece)
                stats.tokens += len(piece.input_ids)
                stats.trained_tokens += sum(label != IGNORE for label in piece.labels[1:])
            continue
        if truncated:
            if overlong == "drop":
                stats.dropped += 1
                continue
            tok = Tokenized(tok.input_ids[:max_length], tok.labels[:max_length])
        if all(label == IGNORE for label in tok.labels[1:]):
            stats.dropped += 1  # nothing left to learn from (e.g. the completion was cut off)
            continue
        stats.truncated += int(truncated)  # counted among the kept: kept + dropped == examples
        out.append(tok)
        stats.kept += 1
        stats.tokens += len(tok.input_ids)
        stats.trained_tokens += sum(label != IGNORE for label in tok.labels[1:])
    return out, stats


def chunk(tok: Tokenized, max_length: int) -> list[Tokenized]:
    """A long raw-text example as consecutive pieces of at most max_length tokens, none lost.

    Each piece is a row of its own, so its first token has no context and is not predicted (the loss shifts);
    that costs one target per piece, against truncation's loss of everything past max_length.
    """
    return [
        Tokenized(tok.input_ids[i : i + max_length], tok.labels[i : i + max_length])
        for i in range(0, len(tok.input_ids), max_length)
        if len(tok.input_ids[i : i + max_length]) > 1
    ]


def trained_segments(tok: Tokenized, tokenizer: PreTrainedTokenizerBase) -> list[tuple[str, bool]]:
    """Decoded runs of consecutive tokens with whether the loss covers them (for `lmtune data preview`)."""
    flags = [label != IGNORE for label in tok.labels]
    flags[0] = False  # the first token is never predicted
    segments: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(flags) + 1):
        if i == len(flags) or flags[i] != flags[start]:
            segments.append((tokenizer.decode(tok.input_ids[start:i]), flags[start]))
            start = i
    return segments


def encode_seq2seq(example: Example, tokenizer: PreTrainedTokenizerBase, max_length: int) -> tuple[Tokenized, bool]:
    """An encoder-decoder example: the rendered prompt as the encoder input, the completion as the decoder target.

    Both sides get the tokenizer's own special tokens, as the model was pre-trained with them (T5 ends its input
    with </s>; BART wraps it in <s> ... </s>), and the target ends in EOS so the model learns to stop. A side past
    max_length keeps its start and its special tokens. Returns the example and whether a side was cut.
    """
    if not isinstance(example, PromptCompletionExample):
        kind = "chat messages" if isinstance(example, ChatExample) else "raw text"
        raise LmtuneError(
            f"{example.source}:{example.line}: task seq2seq needs prompt/completion or instruction data, got {kind}",
            hint="chat data is not supported for seq2seq yet; map your columns to prompt and completion "
            "(data.columns) or use task sft with a decoder-only model",
        )
    prefix, suffix = special_affixes(tokenizer)

    def side(text: str, end: Sequence[int]) -> tuple[list[int], bool]:
        body = encode_text(tokenizer, text)
        room = max_length - len(prefix) - len(end)
        return [*prefix, *body[: max(room, 0)], *end], len(body) > room

    encoder, cut_in = side(example.prompt, suffix)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    target_end = suffix if suffix[-1:] == eos else [*suffix, *eos]
    target, cut_out = side(example.completion, target_end)
    return Tokenized(encoder, [IGNORE] * len(encoder), target), cut_in or cut_out


def tokenize_seq2seq(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, *, max_length: int, overlong: str = "truncate"
) -> tuple[list[Tokenized], TokenStats]:
    """`tokenize_examples` for task seq2seq: over-long examples (either side) are truncated or dropped, and
    counted; `tokens` counts encoder and decoder tokens, `trained_tokens` the decoder targets."""
    refuse_tagged(examples, "seq2seq")
    stats = TokenStats(examples=len(examples))
    out = []
    for ex in examples:
        tok, truncated = encode_seq2seq(ex, tokenizer, max_length)
        assert tok.decoder_labels is not None
        stats.lengths.append(max(len(tok.input_ids), len(tok.decoder_labels)))
        if truncated and overlong == "drop":
            stats.dropped += 1
            continue
        stats.truncated += int(truncated)
        stats.kept += 1
        stats.tokens += len(tok.input_ids) + len(tok.decoder_labels)
        stats.trained_tokens += len(tok.decoder_labels)
        out.append(tok)
    return out, stats


def label_names(examples: Sequence[Example]) -> list[str]:
    """The label set of task classification, read from the training examples: sorted, numerically when every
    label is an integer (so "2" < "10"), so the same data always gives the same label ids."""
    names = {ex.label for ex in examples if isinstance(ex, LabelExample)}
    numeric = all(n.lstrip("-").isdigit() for n in names)
    return sorted(names, key=lambda n: (int(n), n) if numeric else (0, n))


def tokenize_classification(
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    labels: Sequence[str],
    *,
    max_length: int,
    overlong: str = "truncate",
) -> tuple[list[Tokenized], TokenStats]:
    """Task classification: the text with the tokenizer's own special tokens (BERT's [CLS] ... [SEP], Llama's
    BOS) and the index of its label. A label outside `labels` (the training set's) is a DataError at its line.
    `trained_tokens` counts examples: each is one prediction."""
    index = {name: i for i, name in enumerate(labels)}
    prefix, suffix = special_affixes(tokenizer)
    stats = TokenStats(examples=len(examples))
    out = []
    for ex in examples:
        if not isinstance(ex, LabelExample):
            raise LmtuneError(
                f"{ex.source}:{ex.line}: task classification needs records with a text and a label field",
                hint="set data.format: classification and map your columns with data.columns, e.g. {text: sentence}",
            )
        if ex.label not in index:
            raise DataError(
                ex.source,
                ex.line,
                "label",
                f"unknown label {ex.label!r}: the training data has the labels {', '.join(map(repr, labels))}",
                hint="fix the label, or add examples of it to the training data",
            )
        body = encode_text(tokenizer, ex.text)  # in pieces when long: a 5 MB text took 10 s as one string
        stats.lengths.append(len(prefix) + len(body) + len(suffix))
        room = max(max_length - len(prefix) - len(suffix), 0)
        if len(body) > room:
            if overlong == "drop":
                stats.dropped += 1
                continue
            body = body[:room] if tokenizer.truncation_side == "right" else body[len(body) - room :]
            stats.truncated += 1
        ids = [*prefix, *body, *suffix]  # as tokenizer(text, truncation=True, max_length=...) gives them
        out.append(Tokenized(list(ids), [IGNORE] * len(ids), class_label=index[ex.label]))
        stats.kept += 1
        stats.tokens += len(ids)
        stats.trained_tokens += 1
    return out, stats


def refuse_tagged(examples: Sequence[Example], task: str) -> None:
    """Sentences of tokens and tags belong to task token_classification: say so rather than fail on their shape."""
    if examples and isinstance(examples[0], TokensExample):
        raise LmtuneError(
            f"{examples[0].source}: sentences of tokens and tags are for task token_classification, not {task}",
            hint="set task: token_classification",
        )
