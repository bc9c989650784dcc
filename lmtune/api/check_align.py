"""`check_data` for the tasks whose records are not examples: preference pairs (reward, dpo) and prompts (rlhf).

The same report as for examples: every record read and parsed the way training parses it (each problem a finding
at its line instead of one error for the file), degenerate pairs, token lengths as the pair tokenizer counts them,
characters, personal data, duplicates and leakage between the splits.
"""

from __future__ import annotations

import time
from typing import Any

from transformers import PreTrainedTokenizerBase

from lmtune.config import RunConfig
from lmtune.data.dedup import RecordTexts, record_docs
from lmtune.data.load import load_records
from lmtune.data.pairs import OVERLONG, tokenize_pairs
from lmtune.data.preferences import PromptRecord, is_conversational, parse_preferences, parse_prompts
from lmtune.data.prepare import carve_records
from lmtune.data.quality import (
    CheckReport,
    Finding,
    SplitReport,
    character_findings,
    duplicate_findings,
    leakage_findings,
    length_findings,
    pii_findings,
    problem_findings,
)
from lmtune.data.types import Record
from lmtune.errors import DataError, LmtuneError

PAIR_FIELDS = ("prompt", "chosen", "rejected")
PROMPT_FIELDS = ("prompt", "messages")


def check_align_data(
    cfg: RunConfig,
    task: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    near: float | None,
    sample: int | None,
    start: float,
) -> CheckReport:
    """The data check of a reward, dpo or rlhf config (see `lmtune.api.check.check_data`)."""
    findings: list[Finding] = []
    shape = "prompts" if task == "rlhf" else "preference pairs"
    sources = {"train": (cfg.data.train, cfg.data.split)}
    if cfg.data.validation is not None:
        sources["validation"] = (cfg.data.validation, cfg.data.validation_split)
    splits: dict[str, SplitReport] = {}
    loaded: dict[str, tuple[list[Record], list[Any]]] = {}
    for name, (path, split) in sources.items():
        report = splits[name] = SplitReport(name, path, format=shape)
        report.records, records, items = _read(cfg, task, path, split, name, findings)
        if sample is not None:
            records, items = records[:sample], items[:sample]
        report.examples = len(items)
        loaded[name] = (records, items)
    if "validation" not in loaded and cfg.data.val_fraction > 0 and len(loaded["train"][1]) > 1:
        (train_r, train_x), (val_r, val_x) = carve_records(*loaded["train"], cfg.data.val_fraction, cfg.seed)
        loaded = {"train": (train_r, train_x), "validation": (val_r, val_x)}
        note = f"{cfg.data.train} (val_fraction={cfg.data.val_fraction}, seed={cfg.seed})"
        splits["validation"] = SplitReport("validation", note, len(val_r), len(val_x), shape)
        splits["train"].records, splits["train"].examples = len(train_r), len(train_x)

    texts: dict[str, RecordTexts] = {}
    for name, (records, items) in loaded.items():
        report = splits[name]
        findings += character_findings(records, name) + pii_findings(records, name)
        report.lengths, report.truncated, report.dropped = _lengths(cfg, task, items, tokenizer)
        findings += length_findings(report, cfg.data.max_length, cfg.data.overlong)
        fields = _fields(cfg, task, records)
        if fields:
            texts[name] = record_docs(records, fields=fields)
            findings += duplicate_findings(texts[name], name, near)
    if "train" in texts and "validation" in texts:
        findings += leakage_findings(texts["train"], texts["validation"], near)
    settings = {"model": cfg.model.name, "task": task, "max_length": cfg.data.max_length,
                "overlong": cfg.data.overlong, "near_threshold": near}  # fmt: skip
    return CheckReport(splits, findings, {}, settings, time.perf_counter() - start)


def _read(
    cfg: RunConfig, task: str, path: str, split: str, name: str, findings: list[Finding]
) -> tuple[int, list[Record], list[Any]]:
    """How many records were read, and those that parse, with their pairs (or prompts); problems become findings."""
    records = read_records(cfg, path, split, name, findings)
    if records is None:
        return 0, [], []
    try:
        _parse(task, [], cfg.data.columns)  # data.columns naming fields this task does not read: one error
    except LmtuneError as e:
        findings.append(Finding("error", "format", str(e), name, path))
        return len(records), [], []
    kept_records, items = [], []
    for record in records:
        # One record at a time: the parsers raise one error for the whole file, the check reports each line.
        try:
            parsed, tie = _parse(task, [record], cfg.data.columns)
        except LmtuneError as e:
            problem = e.message.splitlines()[-1].strip().removeprefix(f"{record.source}:{record.line}: ")
            findings.append(Finding("error", "record", problem, name, record.source, record.line))
            continue
        if tie:
            message = "the chosen and rejected answers are identical: the pair teaches nothing and is left out"
            findings.append(Finding("warning", "pair", message, name, record.source, record.line))
        kept_records += [record] * len(parsed)
        items += parsed
    return len(records), kept_records, items


def read_records(cfg: RunConfig, path: str, split: str, name: str, findings: list[Finding]) -> list[Record] | None:
    """Every record of a split's file that reads, its unreadable lines as findings; None when the file itself
    cannot be read (that too becomes a finding)."""
    skipped: list[DataError] = []
    try:
        return load_records(path, split=split, subset=cfg.data.subset, skipped=skipped)
    except LmtuneError as e:
        findings.append(file_finding(e, name, path))
        return None
    finally:
        findings += problem_findings(skipped, name)


def file_finding(error: LmtuneError, split: str, path: str) -> Finding:
    """A file that cannot be read at all, as one finding: where (file, line, field), what, and the hint."""
    hint = f" (hint: {error.hint})" if error.hint else ""
    if isinstance(error, DataError):
        return Finding("error", "file", error.problem + hint, split, error.source, error.line, error.field)
    return Finding("error", "file", error.message + hint, split, path)


def _parse(task: str, records: list[Record], columns: dict[str, str]) -> tuple[list[Any], bool]:
    if task == "rlhf":
        return parse_prompts(records, columns), False
    pairs, warnings = parse_preferences(records, columns)
    return pairs, bool(warnings)


def _lengths(
    cfg: RunConfig, task: str, items: list[Any], tokenizer: PreTrainedTokenizerBase
) -> tuple[list[int], int, int]:
    """(token lengths, truncated, dropped) as training tokenizes them: the longer sequence of each pair."""
    if not items:
        return [], 0, 0
    if task == "rlhf":
        texts = [_prompt_text(p) for p in items]
        return [len(ids) for ids in tokenizer(texts)["input_ids"]], 0, 0
    overlong = cfg.data.overlong if cfg.data.overlong in OVERLONG else "truncate"
    chat = any(is_conversational(p) for p in items)
    _, stats = tokenize_pairs(items, tokenizer, max_length=cfg.data.max_length, overlong=overlong,
                              for_reward=task == "reward", chat=chat)  # fmt: skip
    return stats.lengths, stats.truncated, stats.dropped


def _prompt_text(prompt: PromptRecord) -> str:
    content = prompt.prompt
    return content if isinstance(content, str) else "\n".join(m.content for m in content)


def _fields(cfg: RunConfig, task: str, records: list[Record]) -> list[str]:
    """The fields duplicates and leaks are judged on: those of the task's shape that every record has (none when
    the records mix shapes, e.g. prompts as strings and as messages: then they are not compared)."""
    names = [cfg.data.columns.get(f, f) for f in (PROMPT_FIELDS if task == "rlhf" else PAIR_FIELDS)]
    return [n for n in names if records and all(n in r.data for r in records)]
