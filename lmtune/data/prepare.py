"""From the data section of a config to validated train/validation examples, with their fingerprints."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmtune.config import DataConfig, DataSource, ReplayConfig
from lmtune.data.formats import AUGMENTATION_FIELD, Example, TextExample, convert_records, detect_format, normalize
from lmtune.data.load import load_records
from lmtune.data.mixture import Part, mix, source_rng, take_part
from lmtune.data.split import carve_validation
from lmtune.data.streaming import describe as describe_stream
from lmtune.data.streaming import open_examples
from lmtune.data.types import Record
from lmtune.errors import DataError, LmtuneError
from lmtune.fileio import file_sha256

# General reference texts shipped with lmtune (written for it; no third-party text): the default for the
# forgetting measurement and for replay.
RESOURCES = Path(__file__).resolve().parents[1] / "resources"
GENERAL_SAMPLES = {"general": "general_en.txt", "stories": "stories_en.txt"}


@dataclass
class Splits:
    train: list[Example]
    validation: list[Example]
    format: str
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    replay: list[Example] = field(default_factory=list)  # general text mixed into training (data.replay)
    parts: list[Part] = field(default_factory=list)  # a mixture's sources (data.train as a list); train = theirs
    skipped: list[Any] = field(default_factory=list)  # DataErrors of records left out (data.on_bad_record: skip)


def fingerprint(examples: list[Example]) -> str:
    """Content hash of the normalised examples: the same data gives the same hash whatever file it came from."""
    h = hashlib.sha256()
    for ex in examples:
        record = {k: v for k, v in asdict(ex).items() if k not in ("source", "line")}
        h.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def source_sha256(source: str) -> str | None:
    """The sha256 of a local data file; None for hub datasets and saved dataset directories."""
    return file_sha256(source) if Path(source).is_file() else None


def record_key(data: dict[str, Any]) -> str:
    """Content hash of a raw record, which `lmtune data augment` writes into each copy as `augmentation.of`."""
    body = {k: v for k, v in data.items() if k != AUGMENTATION_FIELD}
    return hashlib.sha1(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def carve_records(
    records: Sequence[Record], examples: Sequence[Example], fraction: float, seed: int
) -> tuple[tuple[list[Record], list[Example]], tuple[list[Record], list[Example]]]:
    """Carve validation out of (record, example) pairs, keeping augmented copies out of it.

    Only original records can be drawn for validation (with the same seeded draw as `carve_validation`, so data
    without augmented copies splits exactly as before), and a copy whose original was drawn is dropped: it is a
    paraphrase of a validation example and would leak it into training.
    """
    originals = [i for i, r in enumerate(records) if not r.data.get(AUGMENTATION_FIELD)]
    _, chosen = carve_validation(originals, fraction, seed)
    val_set = set(chosen)
    held_out = {record_key(records[i].data) for i in chosen}

    def leaks(r: Record) -> bool:
        info = r.data.get(AUGMENTATION_FIELD)
        return isinstance(info, dict) and info.get("of") in held_out

    train = [i for i in range(len(records)) if i not in val_set and not leaks(records[i])]
    pick = lambda idx: ([records[i] for i in idx], [examples[i] for i in idx])  # noqa: E731
    return pick(train), pick(sorted(val_set))


def _load(
    cfg: DataConfig, source: str, split: str, skipped: list[DataError]
) -> tuple[list[Record], list[Example], str]:
    """The records of one split and their examples. A broken record is an error listing every one of them, or
    with data.on_bad_record: skip, left out and its problems appended to ``skipped`` (unless all are broken)."""
    records = load_records(source, split=split, subset=cfg.subset)
    fmt = cfg.format if cfg.format != "auto" else detect_format(records[0], cfg.columns)
    return (*_examples(cfg, records, fmt, skipped), fmt)


def _examples(
    cfg: DataConfig, records: list[Record], fmt: str, skipped: list[DataError]
) -> tuple[list[Record], list[Example]]:
    """The records as examples of shape ``fmt``, the broken ones refused or skipped (data.on_bad_record)."""
    options: dict[str, Any] = {"format": fmt, "columns": cfg.columns, "prompt_template": cfg.prompt_template}
    if cfg.on_bad_record == "skip":
        converted, problems = convert_records(records, **options)
        kept = [i for i, example in enumerate(converted) if example is not None]
        if kept:
            skipped.extend(problems)
            return [records[i] for i in kept], [converted[i] for i in kept]  # type: ignore[misc]
    return records, normalize(records, **options)


def records_in(problems: Sequence[DataError]) -> int:
    return len({(p.source, p.line) for p in problems})  # a record may have several problems


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    if cfg.mixture:
        return load_mixture(cfg, seed)
    if cfg.streaming:
        return stream_sample(cfg, seed)
    assert isinstance(cfg.train, str)
    skipped: list[DataError] = []
    train_records, train, fmt = _load(cfg, cfg.train, cfg.split, skipped)
    n_train = len(train_records) + records_in(skipped)
    if cfg.max_examples is not None:
        train_records, train = train_records[: cfg.max_examples], train[: cfg.max_examples]
    info: dict[str, dict[str, Any]] = {
        "train": {"source": cfg.train, "file_sha256": source_sha256(cfg.train), "records": n_train}
    }
    if cfg.validation is not None:
        bad_train = records_in(skipped)
        val_records, validation, val_fmt = _load(cfg, cfg.validation, cfg.validation_split, skipped)
        n_val = len(val_records) + records_in(skipped) - bad_train
        if val_fmt != fmt:
            # Each shape renders differently (chat vs raw text): the validation loss would measure something else.
            raise LmtuneError(
                f"data.validation {cfg.validation} holds {val_fmt} records but data.train {cfg.train} holds {fmt} "
                "records",
                hint="give both splits the same record shape (data.format applies to both)",
            )
        info["validation"] = {"source": cfg.validation, "file_sha256": source_sha256(cfg.validation), "records": n_val}
    elif cfg.val_fraction > 0:
        (_, train), (_, validation) = carve_records(train_records, train, cfg.val_fraction, seed)
        info["validation"] = {"source": f"{cfg.train} (val_fraction={cfg.val_fraction}, seed={seed})"}
    else:
        validation = []
    for name, examples in (("train", train), ("validation", validation)):
        if name in info:
            info[name].update(examples=len(examples), fingerprint=fingerprint(examples))
    replay: list[Example] = []
    if cfg.replay is not None:
        picked, info["replay"] = replay_examples(cfg.replay, len(train), seed)
        replay.extend(picked)
    if skipped:
        info["train"]["skipped_records"] = records_in(skipped)  # all splits' (skipped_records.jsonl lists them)
    return Splits(train, validation, fmt, info, replay, skipped=skipped)


STREAM_SAMPLE = 1000  # examples a streamed config's train split shows to previews and few-shot demonstrations


def stream_sample(cfg: DataConfig, seed: int, n: int = STREAM_SAMPLE) -> Splits:
    """A streamed config's splits for the jobs that look at examples (preview, few-shot demonstrations, evaluation
    on the validation split): the first `n` examples of the stream as train, never the whole file."""
    assert isinstance(cfg.train, str)
    head = list(itertools.islice(open_examples(cfg.train, seed=seed, epoch=0, buffer=1, split=cfg.split,
                                               subset=cfg.subset), n))  # fmt: skip
    fmt = cfg.format if cfg.format != "auto" else detect_format(head[0], cfg.columns)
    train = normalize(head, format=fmt, columns=cfg.columns, prompt_template=cfg.prompt_template)
    validation = load_validation(cfg, seed) if cfg.validation else []
    info = {"train": {**describe_stream(cfg.train), "sample": len(train)}}
    return Splits(train, validation, fmt, info)


def load_validation(cfg: DataConfig, seed: int) -> list[Example]:
    """The examples of data.validation alone (a streamed run's validation split: the train stream is not read)."""
    assert cfg.validation is not None
    return _load(cfg, cfg.validation, cfg.validation_split, [])[1]  # streaming refuses on_bad_record: skip


def source_config(cfg: DataConfig, src: DataSource) -> DataConfig:
    """The data section as one source of a mixture reads it: the source's shape fields over the section's."""
    own = {k: getattr(src, k) for k in ("format", "columns", "prompt_template", "template", "split", "subset")}
    return cfg.model_copy(update={k: v for k, v in own.items() if v is not None})


def load_part(cfg: DataConfig, src: DataSource, seed: int, skipped: list[DataError]) -> Part:
    """One source of a mixture: loaded and normalised with its own shape, sized (max_examples, fraction), its
    validation read from its own file or carved off (data.val_fraction) unless data.validation serves all."""
    own, name = source_config(cfg, src), src.label
    records = load_records(src.path, split=own.split, subset=own.subset)
    n_records = len(records)
    # max_examples before normalising: only the records used must be valid (as a quick try on a big file expects).
    records = records[: src.max_examples] if src.max_examples is not None else records
    fmt = own.format if own.format != "auto" else detect_format(records[0], own.columns)
    records, examples = _examples(own, records, fmt, skipped)
    pairs = take_part(list(zip(records, examples, strict=True)), fraction=src.fraction, max_examples=None,
                      rng=source_rng(seed, name, "fraction"))  # fmt: skip
    records, examples = [r for r, _ in pairs], [e for _, e in pairs]
    info: dict[str, Any] = {"source": src.path, "file_sha256": source_sha256(src.path), "records": n_records}
    info.update(format=fmt, used=len(examples))
    validation: list[Example] = []
    if src.validation is not None:
        _, validation, val_fmt = _load(own, src.validation, own.validation_split, skipped)
        if val_fmt != fmt:
            raise LmtuneError(f"data.train source {name}: validation {src.validation} holds {val_fmt} records, the "
                              f"source {fmt} records", hint="give both the same record shape")  # fmt: skip
        info["validation_source"] = src.validation
    elif cfg.validation is None and cfg.val_fraction > 0:
        (_, examples), (_, validation) = carve_records(records, examples, cfg.val_fraction, seed)
    return Part(name, examples, validation, fmt, own.template, info)


def load_mixture(cfg: DataConfig, seed: int) -> Splits:
    """data.train as a list of sources: each loaded as `load_part` says, then mixed by weight (`lmtune.data.mixture`);
    train and validation are the sources' in their order, with per-source counts and fingerprints in `info`."""
    sources = cfg.sources()
    skipped: list[DataError] = []
    parts = [load_part(cfg, src, seed, skipped) for src in sources]
    weights = [s.weight for s in sources if s.weight is not None] or None
    sizes = mix(parts, weights, cfg.max_examples, seed)
    train = [ex for p in parts for ex in p.train]
    if cfg.validation is not None:
        _, validation, _ = _load(cfg, cfg.validation, cfg.validation_split, skipped)
    else:
        validation = [ex for p in parts for ex in p.validation]
    formats = sorted({p.format for p in parts})
    fmt = formats[0] if len(formats) == 1 else "mixed (" + ", ".join(formats) + ")"
    per_source = {
        p.name: {**p.info, **size, "fingerprint": fingerprint(p.train)} for p, size in zip(parts, sizes, strict=True)
    }
    info: dict[str, dict[str, Any]] = {
        "train": {"source": "mixture of " + ", ".join(per_source), "records": sum(p.info["records"] for p in parts),
                  "examples": len(train), "fingerprint": fingerprint(train), "sources": per_source},
    }  # fmt: skip
    if validation:
        by_source = {p.name: {"examples": len(p.validation), "fingerprint": fingerprint(p.validation)} for p in parts}
        source = cfg.validation or f"each source's own (val_fraction={cfg.val_fraction}, seed={seed})"
        info["validation"] = {"source": source, "examples": len(validation), "fingerprint": fingerprint(validation)}
        if cfg.validation is None:
            info["validation"]["sources"] = by_source
    return Splits(train, validation, fmt, info, parts=parts, skipped=skipped)


def general_text(source: str) -> tuple[str, Path]:
    """The text of a shipped sample ('general', 'stories') or of a UTF-8 text file, and the file it came from."""
    path = RESOURCES / GENERAL_SAMPLES[source] if source in GENERAL_SAMPLES else Path(source).expanduser()
    if not path.is_file():
        raise LmtuneError(
            f"general text {source!r}: no such file",
            hint=f"give the path of a UTF-8 text file, or a shipped sample: {', '.join(GENERAL_SAMPLES)}",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LmtuneError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})", hint="save it as UTF-8") from None
    if not text.strip():
        raise LmtuneError(f"{path}: the general text is empty", hint="give a file with some plain prose in it")
    return text, path


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def paragraphs(text: str, source: str, max_chars: int = 1500) -> list[TextExample]:
    """Blank-line separated paragraphs as raw-text examples (line = the paragraph's first line, 1-based).

    A paragraph longer than max_chars is cut at sentence ends into pieces of at most about max_chars, so a file
    without blank lines still gives many examples instead of one that truncation would cut short.
    """
    out: list[TextExample] = []
    block: list[str] = []
    start = 0
    for i, line in enumerate([*text.splitlines(), ""], start=1):
        if line.strip():
            if not block:
                start = i
            block.append(line.strip())
            continue
        if block:
            piece = ""
            for sentence in _SENTENCE_END.split(" ".join(block)):
                if piece and len(piece) + 1 + len(sentence) > max_chars:
                    out.append(TextExample(piece, source, start))
                    piece = ""
                piece = f"{piece} {sentence}" if piece else sentence
            out.append(TextExample(piece, source, start))
            block = []
    return out


def replay_examples(cfg: ReplayConfig, n_train: int, seed: int) -> tuple[list[TextExample], dict[str, Any]]:
    """General-text paragraphs to mix into n_train task examples so that they make `cfg.fraction` of the mix.

    Drawn by a seeded shuffle (the same run draws the same ones); when more are needed than the text has, the
    paragraphs are used again in a fresh order.
    """
    text, path = general_text(cfg.source)
    chunks = paragraphs(text, str(path))
    n = max(1, round(cfg.fraction * n_train / (1 - cfg.fraction)))
    rng = random.Random(seed)
    picked: list[TextExample] = []
    while len(picked) < n:
        order = list(chunks)
        rng.shuffle(order)
        picked.extend(order[: n - len(picked)])
    info = {
        "source": cfg.source,
        "file": str(path),
        "file_sha256": file_sha256(path),
        "fraction": cfg.fraction,
        "paragraphs_available": len(chunks),
        "examples": len(picked),
        "fingerprint": fingerprint(picked),
    }
    return picked, info
