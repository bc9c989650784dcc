"""`check_data`: every record of a config's splits (or one file) checked, then the quality report."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from lmtune.api.check_align import check_align_data, read_records
from lmtune.config import ConfigLike, RunConfig, load_config
from lmtune.data.dedup import RecordTexts, record_docs
from lmtune.data.formats import Example, convert_records, detect_format
from lmtune.data.ner import tag_findings, tag_names, tokenize_tokens
from lmtune.data.prepare import carve_records, source_config
from lmtune.data.quality import (
    CheckReport,
    Finding,
    SplitReport,
    augmented_findings,
    character_findings,
    duplicate_findings,
    label_findings,
    leakage_findings,
    length_findings,
    pii_findings,
    problem_findings,
    role_balance,
    role_findings,
)
from lmtune.data.template_check import template_check
from lmtune.data.tokenize import setup_chat_template
from lmtune.data.types import Record, TokenStats
from lmtune.errors import DataError, LmtuneError
from lmtune.tasks import TASKS, Task, TokenizeOptions
from lmtune.tokenizer import load_tokenizer, stop_token_ids


def check_data(
    source: ConfigLike,
    *,
    overrides: Sequence[str] = (),
    near: float | None = 0.85,
    label: str | None = None,
    sample: int | None = None,
) -> CheckReport:
    """Check the data of a config (or one data file) before training: every record, then a quality report.

    A data file is checked as the training split of a default config (`overrides` such as
    `data.columns.prompt=dialogue` or `model.name=...` apply). Problems become findings in the report instead
    of exceptions, so one run lists them all; only an unusable config or tokenizer raises.
    """
    start = time.perf_counter()
    cfg = _check_config(source, overrides)
    task = TASKS[cfg.task]
    tokenizer = load_tokenizer(cfg.model, light=True)
    setup_chat_template(tokenizer, cfg.data.chat_template)
    if task.records != "examples":  # preference pairs (reward, dpo) or prompts (rlhf)
        return check_align_data(cfg, task.name, tokenizer, near=near, sample=sample, start=start)
    if cfg.data.mixture:
        return _check_mixture(cfg, task, tokenizer, near, label, sample, start)
    return _check_examples(cfg, task, tokenizer, near, label, sample, start)


def _check_mixture(
    cfg: RunConfig,
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    near: float | None,
    label: str | None,
    sample: int | None,
    start: float,
) -> CheckReport:
    """Each source of a mixture checked as the run reads it (its own shape, its own validation), its splits
    reported as `train · NAME`; leakage is checked within each source."""
    reports = []
    for src in cfg.data.sources():
        data = source_config(cfg.data, src).model_copy(
            update={
                "train": src.path,
                "validation": src.validation or cfg.data.validation,
                "max_examples": src.max_examples,
            }
        )
        reports.append((src.label, _check_examples(cfg.model_copy(update={"data": data}), task, tokenizer, near,
                                                   label, sample, start)))  # fmt: skip
    first = reports[0][1]
    splits = {f"{split} · {name}": rep for name, report in reports for split, rep in report.splits.items()}
    findings = [f for _, report in reports for f in report.findings]
    return CheckReport(splits, findings, first.template, first.settings, time.perf_counter() - start)


def _check_examples(
    cfg: RunConfig,
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    near: float | None,
    label: str | None,
    sample: int | None,
    start: float,
) -> CheckReport:
    """The checks of a config's example splits (one source)."""
    findings: list[Finding] = []

    # 1. Every record: readable, the right shape, sensible text, labels and roles.
    loaded, splits = _read_splits(cfg, sample, findings)

    texts: dict[str, RecordTexts] = {}
    train_examples = loaded["train"][1]
    labels = task.labels(train_examples) if task.labels is not None and train_examples else []
    for name, (records, examples) in loaded.items():
        report = splits[name]
        findings += character_findings(records, name) + pii_findings(records, name) + role_findings(examples, name)
        if name != "train":
            findings += augmented_findings(records, name)
        label_field = label or ("label" if records and "label" in records[0].data else None)
        if label_field and records:
            report.labels, label_problems = label_findings(records, label_field, name)
            findings += label_problems
        report.roles, report.turns = role_balance(examples)

        # 2. Lengths as training renders them, and what max_length does to them.
        stats = _split_lengths(cfg, task, report, examples, tokenizer, labels, findings)
        report.lengths, report.truncated, report.dropped = stats.lengths, stats.truncated, stats.dropped
        findings += length_findings(report, cfg.data.max_length, cfg.data.overlong)

        # 3. Exact and near duplicates inside the split.
        if not records:
            continue
        texts[name] = record_docs(records, format=report.format or "auto", columns=cfg.data.columns)
        dup_findings = duplicate_findings(texts[name], name, near)
        report.exact_duplicates = sum(f.check == "exact-duplicate" for f in dup_findings)
        report.near_duplicates = sum(f.check == "near-duplicate" for f in dup_findings)
        findings += dup_findings

    # 4. Leakage between the splits, and whether inference will see what training rendered.
    if "train" in texts and "validation" in texts:
        findings += leakage_findings(texts["train"], texts["validation"], near)
    template_info, template_findings = _template(cfg, task, splits["train"], loaded["train"][1], tokenizer)
    findings += [f for f in template_findings if f.message not in {g.message for g in findings}]
    settings = {
        "model": cfg.model.name,
        "max_length": cfg.data.max_length,
        "overlong": cfg.data.overlong,
        "template": cfg.data.template,
        "near_threshold": near,
    }
    return CheckReport(splits, findings, template_info, settings, time.perf_counter() - start)


def _read_splits(
    cfg: RunConfig, sample: int | None, findings: list[Finding]
) -> tuple[dict[str, tuple[list[Record], list[Example]]], dict[str, SplitReport]]:
    """The valid records and examples of each split (validation carved from train as training would), and a report
    per split; every problem becomes a finding."""
    sources = {"train": (cfg.data.train, cfg.data.split)}
    if cfg.data.validation is not None:
        sources["validation"] = (cfg.data.validation, cfg.data.validation_split)
    loaded: dict[str, tuple[list[Record], list[Example]]] = {}
    splits: dict[str, SplitReport] = {}
    fmt = cfg.data.format
    for name, (path, split) in sources.items():
        report = splits[name] = SplitReport(name, path)
        report.records, records, examples = _check_records(cfg, path, split, fmt, name, findings)
        if sample is not None:
            records, examples = records[:sample], examples[:sample]
        report.examples = len(examples)
        if examples:
            fmt = report.format = _shape_of(cfg, records[0])
        loaded[name] = (records, examples)
    if "validation" not in loaded and cfg.data.val_fraction > 0 and len(loaded["train"][1]) > 1:
        records, examples = loaded["train"]
        (train_r, train_x), (val_r, val_x) = carve_records(records, examples, cfg.data.val_fraction, cfg.seed)
        loaded = {"train": (train_r, train_x), "validation": (val_r, val_x)}
        note = f"{cfg.data.train} (val_fraction={cfg.data.val_fraction}, seed={cfg.seed})"
        splits["validation"] = SplitReport("validation", note, len(val_r), len(val_x), splits["train"].format)
        splits["train"].records, splits["train"].examples = len(train_r), len(train_x)
    return loaded, splits


def _split_lengths(
    cfg: RunConfig,
    task: Task,
    report: SplitReport,
    examples: list[Example],
    tokenizer: PreTrainedTokenizerBase,
    labels: list[str],
    findings: list[Finding],
) -> TokenStats:
    """The token lengths of a split as training renders it; what would stop training there becomes a finding."""
    if report.format == "token_classification":  # sentences of tagged words (lmtune.data.ner)
        report.labels, tag_problems = tag_findings(examples, report.name)
        findings += tag_problems
        tags = tag_names(examples)
        return tokenize_tokens(examples, tokenizer, tags, max_length=cfg.data.max_length, overlong=cfg.data.overlong)[1]
    # As the task trains them: rendered text, a seq2seq source and target, a classified text.
    return _task_lengths(cfg, task, examples, tokenizer, labels, report.name, findings)


def _template(
    cfg: RunConfig, task: Task, train: SplitReport, examples: list[Example], tokenizer: PreTrainedTokenizerBase
) -> tuple[dict[str, Any], list[Finding]]:
    """Whether inference will see what training rendered (template_check), where the task renders text."""
    if train.format == "token_classification" or not task.renders_text:  # nothing rendered or generated
        return {}, []
    try:
        return template_check(examples, tokenizer, cfg.data.template, stop_token_ids(cfg.model, tokenizer))
    except DataError as e:  # a template that cannot render the data (tool calls): a finding among the others
        return {}, [Finding("error", "template", e.problem, train.name, e.source)]


def _task_lengths(
    cfg: RunConfig,
    task: Task,
    examples: list[Example],
    tokenizer: PreTrainedTokenizerBase,
    labels: list[str],
    name: str,
    findings: list[Finding],
) -> TokenStats:
    """The token lengths of a split tokenized the task's way; what would stop training there becomes a finding."""
    assert task.tokenize is not None
    opts = TokenizeOptions(cfg.data.max_length, cfg.data.overlong, cfg.data.template, labels)
    try:
        return task.tokenize(examples, tokenizer, opts)[1]
    except DataError as e:
        findings.append(Finding("error", "record", e.problem, name, e.source, e.line, e.field))
    except LmtuneError as e:
        findings.append(Finding("error", "format", e.message, name, examples[0].source if examples else None))
    return TokenStats(examples=len(examples))


def _check_config(source: ConfigLike, overrides: Sequence[str]) -> RunConfig:
    """A YAML config as it is, or a data file as the training split of a default config."""
    if isinstance(source, (str, Path)) and Path(source).suffix.lower() not in (".yaml", ".yml"):
        return load_config({"data": {"train": str(source), "val_fraction": 0}}, overrides)
    return load_config(source, overrides)


def _check_records(
    cfg: RunConfig, path: str, split: str, fmt: str, name: str, findings: list[Finding]
) -> tuple[int, list[Record], list[Example]]:
    """How many records could be read, and the valid ones with their examples; every problem becomes a finding."""
    records = read_records(cfg, path, split, name, findings)
    if records is None:
        return 0, [], []
    if name == "train" and cfg.data.max_examples is not None:  # what training reads (a mixture: each source's)
        records = records[: cfg.data.max_examples]
    try:
        examples, problems = convert_records(
            records, format=fmt, columns=cfg.data.columns, prompt_template=cfg.data.prompt_template
        )
    except LmtuneError as e:  # the shape of the first record cannot be told: name it
        findings.append(Finding("error", "format", str(e), name, path, records[0].line if records else None))
        return len(records), [], []
    findings += problem_findings(problems, name)
    kept = [(r, ex) for r, ex in zip(records, examples, strict=True) if ex is not None]
    return len(records), [r for r, _ in kept], [ex for _, ex in kept]


def _shape_of(cfg: RunConfig, record: Record) -> str:
    return cfg.data.format if cfg.data.format != "auto" else detect_format(record, cfg.data.columns)
