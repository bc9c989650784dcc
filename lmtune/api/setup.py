"""The setup every job shares: `prepare_data` (the rows a run trains on) and `build_model` (the model, method and
objective it trains with). `finetune`, `estimate`, `preview` and cross-validation call them, so they all see the
same run: the same rows, the same model class and head, the same method, the same trainable parameters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from transformers import PreTrainedTokenizerBase

from lmtune.config import RunConfig
from lmtune.data.batching import Row, pack, unpacked
from lmtune.data.leakage import cheap_leaks
from lmtune.data.preferences import load_align_splits, pairs_use_chat
from lmtune.data.prepare import Splits, fingerprint, load_splits, load_validation, records_in
from lmtune.data.streaming import RowStream
from lmtune.data.streaming import describe as describe_stream
from lmtune.data.tokenize import tokenize_examples, uses_chat
from lmtune.data.types import IGNORE, Tokenized, TokenStats
from lmtune.errors import LmtuneError
from lmtune.methods import apply_method, quantization_config
from lmtune.model import count_parameters, load_model
from lmtune.tasks import TASKS, Task, TokenizeOptions
from lmtune.train.fastdropout import use_fast_dropout
from lmtune.train.objectives import Objective, objective_for, resolve_class_weights

Say = Callable[..., None]


def silent(text: str, *, warning: bool = False) -> None:
    """The reporter of a job nobody watches."""


@dataclass
class Prepared:
    """A run's data, tokenized as it trains: the rows the loop batches, and how they were made."""

    splits: Splits
    labels: list[str]  # label or tag names, for tasks whose head predicts them ([] otherwise)
    train: list[Tokenized]
    train_stats: TokenStats
    validation: list[Tokenized]
    val_stats: TokenStats
    rows: list[Row]  # training rows (packed when data.packing), replay rows mixed in
    val_rows: list[Row]
    chat: bool  # rendered through the chat template
    replay: list[Tokenized] = field(default_factory=list)
    replay_stats: TokenStats = field(default_factory=TokenStats)
    leakage: dict[str, Any] = field(default_factory=lambda: {"checked": False})
    sources: list[SourceRows] = field(default_factory=list)  # a mixture's sources (data.train as a list)
    stream: RowStream | None = None  # data.streaming: the training rows, made on the fly (rows is empty)


@dataclass
class SourceRows:
    """One source of a mixture, tokenized: its token counts, and its validation rows (their loss is reported
    per source, so a run shows which part of the mixture the model learned)."""

    name: str
    train_stats: TokenStats
    val_stats: TokenStats
    val_rows: list[Row]


@dataclass
class Built:
    """The model a run trains, with its method applied, and the objective it trains with."""

    model: Any
    trainable: int
    total: int
    objective: Objective
    class_weights: list[float] | None = None


def task_of(cfg: RunConfig) -> Task:
    """The task entry of a config, refusing a method the task does not support (before anything loads)."""
    task = TASKS[cfg.task]
    if cfg.method.name not in task.methods:
        able = sorted(task.methods)
        raise LmtuneError(
            f"method {cfg.method.name} does not support task {cfg.task!r}",
            hint=f"methods for {cfg.task}: {', '.join(able)}",
        )
    return task


def prepare_data(
    cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, say: Say = silent, *, splits: Splits | None = None
) -> Prepared:
    """Load, validate and split the data (or take `splits`), check leakage, tokenize the way the task trains, mix
    in replay text and pack: the rows `finetune` trains on."""
    task = task_of(cfg)
    if task.records == "pairs":
        return prepare_pairs(cfg, tokenizer, say)
    if cfg.data.streaming:
        return prepare_stream(cfg, task, tokenizer)
    splits = splits or load_splits(cfg.data, cfg.seed)
    if splits.skipped:
        first = splits.skipped[0]
        say(f"{records_in(splits.skipped)} broken records were skipped (data.on_bad_record: "
            f"skip), the first {first.source}:{first.line}; the run directory's skipped_records.jsonl lists them",
            warning=True)  # fmt: skip
    leakage = check_leakage(cfg, splits, say)
    labels = task.labels(splits.train) if task.labels else []
    opts = TokenizeOptions(cfg.data.max_length, cfg.data.overlong, cfg.data.template, labels)
    assert task.tokenize is not None, f"task {task.name} trains no examples"
    sources = tokenize_parts(task, splits, tokenizer, opts) if splits.parts else []
    if sources:
        train = [t for _, tokenized, _ in sources for t in tokenized]
        train_stats = merged([s.train_stats for s, _, _ in sources])
    else:
        train, train_stats = task.tokenize(splits.train, tokenizer, opts)
    if sources and cfg.data.validation is None:
        validation = [t for _, _, tokenized in sources for t in tokenized]
        val_stats = merged([s.val_stats for s, _, _ in sources])
    else:
        validation, val_stats = task.tokenize(splits.validation, tokenizer, opts)
    if not train:
        raise LmtuneError("no training example is left after tokenization", hint="check data.max_length and overlong")
    # Replay (data.replay): general-text paragraphs trained on every token; too long ones are simply cut.
    replay, replay_stats = tokenize_examples(splits.replay, tokenizer, max_length=cfg.data.max_length)
    mixed = train + replay
    rows = pack(mixed, cfg.data.max_length) if cfg.data.packing else unpacked(mixed)
    first, template = (
        (splits.parts[0].train, splits.parts[0].template) if splits.parts else (splits.train, cfg.data.template)
    )
    chat = bool(first) and uses_chat(first[0], template)
    prepared = Prepared(splits, labels, train, train_stats, validation, val_stats, rows, unpacked(validation), chat)
    prepared.replay, prepared.replay_stats, prepared.leakage = replay, replay_stats, leakage
    prepared.sources = [s for s, _, _ in sources]
    return prepared


def prepare_stream(cfg: RunConfig, task: Task, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """data.streaming: the training rows as a `RowStream` (read, tokenized and packed as the loop takes them), the
    validation split (data.validation only: a stream cannot be carved) in memory as usual."""
    data = cfg.data
    assert task.tokenize is not None and isinstance(data.train, str)
    opts = TokenizeOptions(data.max_length, data.overlong, data.template, [])
    tokenize = task.tokenize
    stream = RowStream(data.train, cfg.seed, data.shuffle_buffer, data.max_length, data.packing,
                       lambda examples: tokenize(examples, tokenizer, opts)[0], dict(data.columns),
                       data.prompt_template, None if data.format == "auto" else data.format, data.split, data.subset)  # fmt: skip
    first = next(stream.pieces(0, (0, 0)), None)  # reads the stream's head: the record shape, and a readable file
    if first is None:
        raise LmtuneError(f"data.train {data.train}: the stream holds no trainable example", hint="check the file")
    validation = load_validation(data, cfg.seed) if data.validation else []
    val_rows, val_stats = task.tokenize(validation, tokenizer, opts)
    info = {"train": describe_stream(data.train)}
    if validation:
        info["validation"] = {
            "source": data.validation,
            "examples": len(validation),
            "fingerprint": fingerprint(validation),
        }
    assert stream.fmt is not None
    splits = Splits([], validation, stream.fmt, info)
    chat = stream.fmt == "messages" if data.template == "auto" else data.template == "chat"
    prepared = Prepared(splits, [], [], TokenStats(), val_rows, val_stats, [], unpacked(val_rows), chat)
    prepared.stream = stream
    return prepared


def tokenize_parts(
    task: Task, splits: Splits, tokenizer: PreTrainedTokenizerBase, opts: TokenizeOptions
) -> list[tuple[SourceRows, list[Tokenized], list[Tokenized]]]:
    """Each source of a mixture tokenized with its own template (chat or raw): its rows, stats and validation."""
    assert task.tokenize is not None
    out = []
    for part in splits.parts:
        own = replace(opts, template=part.template)
        train, train_stats = task.tokenize(part.train, tokenizer, own)
        validation, val_stats = task.tokenize(part.validation, tokenizer, own)
        out.append((SourceRows(part.name, train_stats, val_stats, unpacked(validation)), train, validation))
    return out


def merged(stats: list[TokenStats]) -> TokenStats:
    """The token counts of several sources together."""
    total = TokenStats()
    for st in stats:
        for key, value in vars(st).items():
            setattr(total, key, getattr(total, key) + value)
    return total


def prepare_pairs(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, say: Say = silent) -> Prepared:
    """Preference pairs (tasks reward, dpo): parsed and split, then tokenized as rows of a chosen and a rejected
    sequence each (over-long prompts cut from the left, counted)."""
    task = task_of(cfg)
    found = load_align_splits(cfg.data, cfg.seed, cfg.task)
    for warning in found.warnings:
        say(warning, warning=True)
    chat = pairs_use_chat(cfg.data.template, found.train)
    if not chat and tokenizer.eos_token_id is None:  # (lmtune.data.pairs: how answers end without one)
        sep = tokenizer.sep_token
        say(
            "the tokenizer has no EOS token: "
            + (f"prompt and answer are read as a text pair, joined by its separator {sep}" if sep else
               "prompt and answer are concatenated as they are, the answer not ended by any token")
        )  # fmt: skip
    opts = TokenizeOptions(cfg.data.max_length, cfg.data.overlong, cfg.data.template, chat=chat)
    assert task.tokenize is not None
    train, train_stats = task.tokenize(found.train, tokenizer, opts)
    validation, val_stats = task.tokenize(found.validation, tokenizer, opts)
    if not train:
        raise LmtuneError("no preference pair is left after tokenization", hint="check data.max_length and overlong")
    splits = Splits(list(found.train), list(found.validation), "preference", found.info, skipped=found.skipped)
    return Prepared(splits, [], train, train_stats, validation, val_stats, list(train), list(validation), chat)


def build_model(
    cfg: RunConfig,
    prepared: Prepared,
    pad_token_id: int | None,
    *,
    meta: bool = False,
    before_method: Callable[[Any], None] | None = None,
) -> Built:
    """The task's model class loaded (on the meta device with `meta`: shapes only), the method applied, the speed
    levers that change modules set, and the task's objective with the run's loss settings. `before_method` sees
    the base model before the method changes it (a run keeps a copy where its final model needs one)."""
    task = task_of(cfg)
    model = load_model(
        cfg.model,
        task.model,
        quantization=None if meta else quantization_config(cfg.method),
        labels=prepared.labels,
        pad_token_id=pad_token_id,
        meta=meta,
    )
    if before_method is not None:
        before_method(model)
    model = apply_method(model, cfg.method)
    if cfg.train.fast_dropout:
        use_fast_dropout(model)
    trainable, total = count_parameters(model)
    weights = class_weights(cfg, task, prepared)
    if task.objective_for_run is not None:
        objective = task.objective_for_run(cfg, model)
    else:
        assert task.objective is not None, f"task {task.name} is not trained by lmtune's loop"
        objective = objective_for(task.objective, label_smoothing=cfg.train.label_smoothing, class_weights=weights)
    return Built(model, trainable, total, objective, weights)


def class_weights(cfg: RunConfig, task: Task, prepared: Prepared) -> list[float] | None:
    """train.class_weights per label index, from the training labels (one per example, or one per tagged word)."""
    if not task.class_weights:
        return None
    return resolve_class_weights(cfg.train.class_weights, label_ids(prepared.train), len(prepared.labels))


def label_ids(tokenized: list[Tokenized]) -> list[int]:
    """The training labels: the class of each example, or the tag of each word (first piece) of each sentence."""
    ids = [t.class_label for t in tokenized if t.class_label is not None]
    return ids or [label for t in tokenized for label in t.labels if label != IGNORE]


def label_counts(prepared: Prepared) -> Counter[int]:
    return Counter(label_ids(prepared.train))


def check_leakage(cfg: RunConfig, splits: Splits, say: Say) -> dict[str, Any]:
    """The cheap leakage check every run gets: validation examples whose text (or prompt) is also in train."""
    if cfg.data.leakage == "off" or not splits.validation:
        return {"checked": False}
    leaks = cheap_leaks(splits.train, splits.validation)
    counts = dict(Counter(leak.kind for leak in leaks))
    if leaks:
        shown = "; ".join(
            f"{leak.b.source}:{leak.b.line} = {leak.a.source}:{leak.a.line} ({leak.kind})" for leak in leaks[:3]
        )
        more = f" and {len(leaks) - 3} more" if len(leaks) > 3 else ""
        message = (
            f"{len(leaks)} validation examples also appear in train ({shown}{more}): the validation loss will "
            "overstate how well the model generalises"
        )
        hint = "remove them from one side (`lmtune data leakage TRAIN VAL` lists all, near duplicates included)"
        if cfg.data.leakage == "error":
            raise LmtuneError(message, hint=hint + "; or set data.leakage: warn")
        say(f"{message}; {hint}", warning=True)
    return {"checked": True, "leaked_examples": len(leaks), "kinds": counts}
