"""Preference pairs (tasks reward, dpo) and prompts (task rlhf): parsed from records, checked, split.

Two record shapes carry a preference:
  - explicit: ``{"prompt": ..., "chosen": ..., "rejected": ...}``; each a string or a list of chat messages
    (``{"role", "content"}``), as trl's conversational format;
  - Anthropic HH transcripts: ``{"chosen": "\\n\\nHuman: ... \\n\\nAssistant: ...", "rejected": "..."}``, two whole
    dialogues that share everything up to the last ``\\n\\nAssistant:``, which is cut off as the prompt.
Every problem is collected and reported in one error naming file, 1-based line and field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmtune.config import DataConfig
from lmtune.data.formats import ROLES, Message
from lmtune.data.load import load_records
from lmtune.data.prepare import carve_records, fingerprint, source_sha256
from lmtune.data.types import Record, json_type
from lmtune.errors import DataError, LmtuneError

ASSISTANT_MARK = "\n\nAssistant:"
HUMAN_MARK = "\n\nHuman:"
PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")

Turns = tuple[Message, ...]
Content = str | Turns


@dataclass(frozen=True)
class PreferencePair:
    """A prompt and two answers to it, the first preferred. Strings, or chat turns (conversational)."""

    prompt: Content
    chosen: Content
    rejected: Content
    source: str
    line: int


@dataclass(frozen=True)
class PromptRecord:
    """A prompt the policy answers during task rlhf: a string, or chat turns ending with a user turn."""

    prompt: Content
    source: str
    line: int
    # The record's other scalar fields (a reference answer...): rlhf.rewards' checks read them, as trl hands a
    # reward function the dataset's columns.
    columns: dict[str, Any] = field(default_factory=dict)


AlignExample = PreferencePair | PromptRecord


@dataclass
class AlignSplits:
    train: list[Any]
    validation: list[Any]
    info: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    skipped: list[DataError] = field(default_factory=list)  # broken records left out (data.on_bad_record: skip)


def split_transcript(text: str) -> tuple[str, str] | None:
    """An HH transcript as (prompt up to and including the last '\\n\\nAssistant:', the answer after it)."""
    cut = text.rfind(ASSISTANT_MARK)
    if cut < 0:
        return None
    end = cut + len(ASSISTANT_MARK)
    return text[:end], text[end:]


def parse_preferences(
    records: Sequence[Record],
    columns: Mapping[str, str] | None = None,
    *,
    max_errors: int = 20,
    skipped: list[DataError] | None = None,
) -> tuple[list[PreferencePair], list[str]]:
    """Every record as a preference pair, or one error listing the bad records; plus warnings. With `skipped`
    (data.on_bad_record: skip) the bad records are left out and their problems appended there instead.

    A pair whose two answers are the same teaches nothing: it is left out with a warning (public preference sets
    hold a few of them), not an error.
    """
    columns = dict(columns or {})
    _check_columns(columns, PREFERENCE_FIELDS)
    name = {f: columns.get(f, f) for f in PREFERENCE_FIELDS}
    pairs: list[PreferencePair] = []
    problems: list[DataError] = []
    ties: list[Record] = []
    for record in records:

        def report(field_: str, problem: str, record: Record = record) -> None:
            problems.append(DataError(record.source, record.line, field_, problem))

        chosen = _content(record, name["chosen"], report, role="assistant")
        rejected = _content(record, name["rejected"], report, role="assistant")
        if chosen is None or rejected is None:
            continue
        if name["prompt"] in record.data:
            prompt = _content(record, name["prompt"], report, role="user")
            if prompt is None:
                continue
        elif isinstance(chosen, str) and isinstance(rejected, str):
            prompt = _transcript_prompt(record, name, chosen, rejected, report)
            if prompt is None:
                continue
            chosen, rejected = split_transcript(chosen)[1], split_transcript(rejected)[1]  # type: ignore[index]
        else:
            report(name["prompt"], f"missing (the record has keys {sorted(record.data)})")
            continue
        if not _text(chosen).strip():
            report(name["chosen"], "the chosen answer is empty")
            continue
        if not _text(rejected).strip():
            report(name["rejected"], "the rejected answer is empty")
            continue
        if chosen == rejected:
            ties.append(record)
            continue
        pairs.append(PreferencePair(prompt, chosen, rejected, record.source, record.line))
    if problems and skipped is None:
        raise _problems_error(problems, max_errors, "preference pairs (prompt, chosen, rejected)")
    warnings = []
    if problems:
        assert skipped is not None
        skipped.extend(problems)
        where = ", ".join(f"{p.source}:{p.line}" for p in problems[:3]) + (" ..." if len(problems) > 3 else "")
        warnings.append(f"{len(problems)} broken records were skipped (data.on_bad_record: skip; {where})")
    if ties:
        where = ", ".join(f"{r.source}:{r.line}" for r in ties[:3]) + (" ..." if len(ties) > 3 else "")
        warnings.append(f"{len(ties)} pairs whose chosen and rejected answers are identical were left out ({where})")
    return pairs, warnings


def parse_prompts(
    records: Sequence[Record], columns: Mapping[str, str] | None = None, *, max_errors: int = 20
) -> list[PromptRecord]:
    """Every record's prompt (task rlhf): a `prompt` string or chat messages, or an HH transcript's prompt."""
    columns = dict(columns or {})
    _check_columns(columns, ("prompt", "messages"))
    out: list[PromptRecord] = []
    problems: list[DataError] = []
    for record in records:

        def report(field_: str, problem: str, record: Record = record) -> None:
            problems.append(DataError(record.source, record.line, field_, problem))

        field_ = columns.get("prompt", "prompt")
        if field_ not in record.data and columns.get("messages", "messages") in record.data:
            field_ = columns.get("messages", "messages")
        prompt = _content(record, field_, report, role="user")
        if prompt is None:
            continue
        if isinstance(prompt, tuple) and prompt[-1].role == "assistant":
            report(field_, "the last message is the assistant's: a prompt ends with a user (or system) turn")
            continue
        others = {k: v for k, v in record.data.items() if k != field_ and isinstance(v, str | int | float | bool)}
        out.append(PromptRecord(prompt, record.source, record.line, others))
    if problems:
        raise _problems_error(problems, max_errors, "prompts (a prompt field: a string or chat messages)")
    return out


def load_align_splits(cfg: DataConfig, seed: int, task: str) -> AlignSplits:
    """Train and validation examples of an alignment task, with the fingerprints data.json records.

    Validation is data.validation, or data.val_fraction of train carved off the way every lmtune task carves it.
    """
    warnings: list[str] = []
    skipped: list[DataError] = []

    def load(source: str, split: str) -> tuple[list[Record], list[Any]]:
        records = load_records(source, split=split, subset=cfg.subset)
        if task == "rlhf":
            return records, parse_prompts(records, cfg.columns)
        keep_going = skipped if cfg.on_bad_record == "skip" else None
        pairs, warned = parse_preferences(records, cfg.columns, skipped=keep_going)
        warnings.extend(warned)
        kept = {(p.source, p.line) for p in pairs}
        return [r for r in records if (r.source, r.line) in kept], pairs

    train_records, train = load(cfg.train, cfg.split)
    n_train = len(train_records)
    if cfg.max_examples is not None:
        train_records, train = train_records[: cfg.max_examples], train[: cfg.max_examples]
    info: dict[str, dict[str, Any]] = {
        "train": {"source": cfg.train, "file_sha256": source_sha256(cfg.train), "records": n_train}
    }
    validation: list[Any] = []
    if cfg.validation is not None:
        val_records, validation = load(cfg.validation, cfg.validation_split)
        info["validation"] = {
            "source": cfg.validation,
            "file_sha256": source_sha256(cfg.validation),
            "records": len(val_records),
        }
    elif cfg.val_fraction > 0:
        (_, train), (_, validation) = carve_records(train_records, train, cfg.val_fraction, seed)
        info["validation"] = {"source": f"{cfg.train} (val_fraction={cfg.val_fraction}, seed={seed})"}
    if not train:
        raise LmtuneError(f"data.train {cfg.train}: no training example", hint="check the file and data.columns")
    for name, examples in (("train", train), ("validation", validation)):
        if name in info:
            info[name].update(examples=len(examples), fingerprint=fingerprint(examples))
    for name in info:
        info[name]["skipped_records"] = sum(e.source == info[name]["source"] for e in skipped)
    return AlignSplits(train, validation, info, warnings, skipped)


def is_conversational(example: AlignExample) -> bool:
    parts = [example.prompt] if isinstance(example, PromptRecord) else [example.prompt, example.chosen]
    return any(isinstance(p, tuple) for p in parts)


def to_trl(example: AlignExample, chat: bool) -> dict[str, Any]:
    """The example as a trl dataset row: strings, or (chat) lists of {role, content} messages.

    With `chat`, string parts become one user turn (the prompt) and one assistant turn (each answer), so trl
    renders them through the tokenizer's chat template.
    """
    chat = chat or is_conversational(example)
    if isinstance(example, PromptRecord):
        reserved = ("prompt", "completion", "completion_ids")
        columns = {k: v for k, v in example.columns.items() if k not in reserved}
        return {"prompt": _as_messages(example.prompt, "user") if chat else example.prompt, **columns}
    if not chat:
        return {"prompt": example.prompt, "chosen": example.chosen, "rejected": example.rejected}
    return {
        "prompt": _as_messages(example.prompt, "user"),
        "chosen": _as_messages(example.chosen, "assistant"),
        "rejected": _as_messages(example.rejected, "assistant"),
    }


def _as_messages(content: Content, role: str) -> list[dict[str, str]]:
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    return [{"role": m.role, "content": m.content} for m in content]


def _text(content: Content) -> str:
    return content if isinstance(content, str) else "".join(m.content for m in content)


def _transcript_prompt(record: Record, name: Mapping[str, str], chosen: str, rejected: str, report: Any) -> str | None:
    """The shared prompt of an HH transcript pair, after checking both are transcripts of the same dialogue."""
    ok = True
    for key, text in (("chosen", chosen), ("rejected", rejected)):
        if split_transcript(text) is None:
            report(
                name[key],
                f"no '{name['prompt']}' field and no '\\n\\nAssistant:' turn in the text: give a prompt field, "
                "or whole Human/Assistant transcripts",
            )
            ok = False
    if not ok:
        return None
    prompt_c, prompt_r = split_transcript(chosen)[0], split_transcript(rejected)[0]  # type: ignore[index]
    if prompt_c != prompt_r:
        report(
            name["rejected"],
            "the chosen and rejected transcripts differ before their last '\\n\\nAssistant:' turn (they must share "
            "the dialogue and differ only in the last answer)",
        )
        return None
    if HUMAN_MARK not in prompt_c and not prompt_c.lstrip().startswith("Human:"):
        report(name["chosen"], "the transcript has no 'Human:' turn before the last 'Assistant:' turn")
        return None
    return prompt_c


def _content(record: Record, field_: str, report: Any, *, role: str) -> Content | None:
    """A string, or a list of chat messages (roles system/user/assistant, string contents)."""
    if field_ not in record.data:
        report(field_, f"missing (the record has keys {sorted(record.data)})")
        return None
    value = record.data[field_]
    if isinstance(value, str):
        if not value.strip():
            report(field_, "is empty")
            return None
        return value
    if not isinstance(value, list) or not value:
        report(field_, f"must be a string or a non-empty list of {{role, content}} messages, got {json_type(value)}")
        return None
    turns: list[Message] = []
    for i, item in enumerate(value):
        where = f"{field_}[{i}]"
        if not isinstance(item, dict) or item.get("role") not in ROLES or not isinstance(item.get("content"), str):
            report(where, f"must be an object with a role ({', '.join(ROLES)}) and a string content")
            return None
        turns.append(Message(item["role"], item["content"]))
    if role == "assistant" and turns[-1].role != "assistant":
        report(field_, "an answer given as messages must end with an assistant message")
        return None
    return tuple(turns)


def _check_columns(columns: Mapping[str, str], fields: Sequence[str]) -> None:
    unknown = sorted(set(columns) - set(fields))
    if unknown:
        raise LmtuneError(
            f"data.columns has field names {unknown} this task does not read",
            hint=f"its keys are {', '.join(fields)}; its values are your column names",
        )


def _problems_error(problems: list[DataError], max_errors: int, shape: str) -> LmtuneError:
    sources = ", ".join(dict.fromkeys(p.source for p in problems))
    shown = problems[: max(1, max_errors)]
    lines = [f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {sources}:"]
    lines += [f"  {p}" for p in shown]  # "<source>:<line>: field '<field>': <problem>"
    if len(problems) > len(shown):
        lines.append(f"  ... and {len(problems) - len(shown)} more")
    return LmtuneError(
        "\n".join(lines),
        hint=f"this task reads {shape}; fix or remove these records, or map your column names with data.columns",
    )


def pairs_use_chat(template: str, examples: Sequence[Any]) -> bool:
    """Render pairs through the chat template: data.template chat, or pairs given as chat messages (auto)."""
    if template == "raw":
        if examples and is_conversational(examples[0]):
            raise LmtuneError(
                "data.template: raw, but the examples are chat messages", hint="use template auto or chat"
            )
        return False
    return template == "chat" or bool(examples and is_conversational(examples[0]))
