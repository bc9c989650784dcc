"""Augment a training split: noisy, reworded, back-translated or identifier-renamed copies of its records.

Each copy keeps every field of its original, changes only the chosen fields, and carries an ``augmentation``
field (strategy, source file, 1-based line, key of the original, seed) so later stages keep it on the training
side and `lmtune data check` can flag it in a validation or test file: a copy of a held-out example in training
leaks that example's answer, and a copy in the held-out data measures the augmentation instead of the model.

By default only the input side changes (the text of raw-text data, the prompt, the instruction and its input,
the user turns): noise in the targets would teach the model to write noise. code-rename changes the code
wherever it is, answers included, because renamed code is still correct code.

Strategies are plain functions over ``Job``s (the chosen texts of one record's copy and its random generator),
named in ``STRATEGIES``. Model-based strategies receive a ``generate(prompts) -> texts`` function, so this
package never imports the model or evaluation stages; ``lmtune.evaluate.generate.text_generator`` makes one.
"""

from __future__ import annotations

import copy as copying
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.data.formats import AUGMENTATION_FIELD, detect_format
from lmtune.data.prepare import record_key
from lmtune.data.pyrename import rename_code
from lmtune.data.textnoise import NOISE_LEVELS, eda_text, noise_text, word_pool
from lmtune.data.types import Record, json_type
from lmtune.errors import DataError, LmtuneError

# prompts -> generated texts; None where the model could not take the prompt (longer than its context).
Generate = Callable[[list[str]], list[str | None]]

PARAPHRASE_TEMPLATE = "Paraphrase the following text: say the same thing in other words.\n\n{text}"
# Flan-T5's translation prompt ("Translate English to German: ..."), which instruction-tuned causal LMs follow too.
TRANSLATE_TEMPLATE = "Translate {source} to {target}: {text}"
MODEL_STRATEGIES = ("paraphrase", "backtranslate")
# File-name words that mark held-out data; augmenting such a file would put copies where scores are measured.
HELD_OUT_WORDS = frozenset({"val", "valid", "validation", "dev", "test", "testing", "eval", "heldout", "holdout"})
OUTPUT_SUFFIXES = (".jsonl", ".json")  # CSV cannot hold the nested `augmentation` object


@dataclass(frozen=True)
class AugmentOptions:
    """Settings of the strategies; ``rate`` None means the strategy's own default (noise 0.05, EDA 0.1)."""

    rate: float | None = None
    noise_level: str = "both"
    template: str | None = None
    pivot: str = "German"
    language: str = "English"


@dataclass(frozen=True)
class Job:
    """The texts one copy of one record changes (its chosen fields, in order), and the copy's own generator."""

    texts: tuple[str, ...]
    rng: random.Random


@dataclass(frozen=True)
class Outcome:
    """New texts for a job (None: no copy, for ``reason``); ``notes`` count what happened to its pieces."""

    texts: tuple[str, ...] | None
    reason: str | None = None
    notes: tuple[str, ...] = ()


Strategy = Callable[[Sequence[Job], AugmentOptions, Generate | None], list[Outcome]]


# ---- model-based ---------------------------------------------------------------------------------------------------


def _template_names(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise LmtuneError(
            f"--template is not a valid template: {error}", hint="write a literal brace as {{ or }}"
        ) from None


def check_template(template: str, allowed: Sequence[str]) -> None:
    """A prompt template must place the text, and may name only the placeholders its strategy fills."""
    names = _template_names(template)
    unknown = sorted(names - set(allowed))
    if "text" not in names or unknown:
        problem = f"uses unknown placeholders {unknown}" if unknown else "has no {text} placeholder"
        raise LmtuneError(
            f"--template {problem}: {template!r}",
            hint=f"write a prompt with {{text}} where the text goes; placeholders: {', '.join('{' + a + '}' for a in allowed)}",
        )


def _clean(output: str | None, original: str) -> tuple[str | None, str]:
    """The model's text, or None and why it is no use (empty, or the input handed back)."""
    if output is None:
        return None, "too long for the model"
    text = output.strip()
    if not text:
        return None, "empty output"
    if " ".join(text.casefold().split()) == " ".join(original.casefold().split()):
        return None, "same as the input"
    return text, "rewritten"


def paraphrase_texts(
    texts: Sequence[str], generate: Generate, template: str = PARAPHRASE_TEMPLATE
) -> list[tuple[str | None, str]]:
    """Each text reworded by the model, as (new text or None, what happened: "rewritten", "empty output", ...)."""
    outputs = generate([template.format(text=text) for text in texts])
    return [_clean(out, text) for out, text in zip(outputs, texts, strict=True)]


def backtranslate_texts(
    texts: Sequence[str],
    generate: Generate,
    *,
    pivot: str = "German",
    language: str = "English",
    template: str = TRANSLATE_TEMPLATE,
) -> list[tuple[str | None, str]]:
    """Each text translated to ``pivot`` and back to ``language``, as (new text or None, what happened)."""
    there = generate([template.format(source=language, target=pivot, text=text) for text in texts])
    results: list[tuple[str | None, str]] = [(None, "")] * len(texts)
    ok = []
    for k, out in enumerate(there):
        if out is None or not out.strip():
            results[k] = (None, "too long for the model" if out is None else f"empty {pivot} translation")
        else:
            ok.append((k, out.strip()))
    back = generate([template.format(source=pivot, target=language, text=mid) for _, mid in ok])
    for (k, _), out in zip(ok, back, strict=True):
        results[k] = _clean(out, texts[k])
    return results


def _model_strategy(name: str) -> Strategy:
    def run(jobs: Sequence[Job], options: AugmentOptions, generate: Generate | None) -> list[Outcome]:
        if generate is None:
            raise LmtuneError(
                f"strategy '{name}' needs a model",
                hint="name one with --model (hub id, directory, or preset:tiny-chat)",
            )
        flat = [text for job in jobs for text in job.texts]
        if name == "paraphrase":
            done = paraphrase_texts(flat, generate, options.template or PARAPHRASE_TEMPLATE)
        else:
            template = options.template or TRANSLATE_TEMPLATE
            done = backtranslate_texts(
                flat, generate, pivot=options.pivot, language=options.language, template=template
            )
        outcomes, k = [], 0
        for job in jobs:
            pieces = done[k : k + len(job.texts)]
            k += len(job.texts)
            notes = tuple(reason for _, reason in pieces)
            if all(text is None for text, _ in pieces):
                outcomes.append(Outcome(None, reason=notes[0], notes=notes))
            else:
                new = tuple(text if text is not None else old for (text, _), old in zip(pieces, job.texts, strict=True))
                outcomes.append(Outcome(new, notes=notes))
        return outcomes

    return run


# ---- code-rename ---------------------------------------------------------------------------------------------------


def _code_rename(jobs: Sequence[Job], options: AugmentOptions, generate: Generate | None) -> list[Outcome]:
    outcomes = []
    for job in jobs:
        # One mapping per copy: the question's code and the answer's code get the same new names.
        names: dict[str, str] = {}
        taken = sorted({w for text in job.texts for w in re.findall(r"\w+", text)})
        new, notes = [], []
        for text in job.texts:
            renamed, snippet_notes = rename_code(text, job.rng, names=names, taken=taken)
            new.append(renamed)
            notes += snippet_notes
        if tuple(new) == job.texts:
            reason = next((n for n in notes if n != "code: another language"), "no Python code")
            outcomes.append(Outcome(None, reason=reason.removeprefix("code: "), notes=tuple(notes)))
        else:
            outcomes.append(Outcome(tuple(new), notes=tuple(notes)))
    return outcomes


def _noise(jobs: Sequence[Job], options: AugmentOptions, generate: Generate | None) -> list[Outcome]:
    rate = 0.05 if options.rate is None else options.rate
    return [Outcome(tuple(noise_text(t, job.rng, rate, options.noise_level) for t in job.texts)) for job in jobs]


def _eda(jobs: Sequence[Job], options: AugmentOptions, generate: Generate | None) -> list[Outcome]:
    rate = 0.1 if options.rate is None else options.rate
    outcomes = []
    for job in jobs:
        pool = word_pool(job.texts)
        outcomes.append(Outcome(tuple(eda_text(t, job.rng, rate, pool=pool) for t in job.texts)))
    return outcomes


STRATEGIES: dict[str, Strategy] = {
    "noise": _noise,
    "eda": _eda,
    "paraphrase": _model_strategy("paraphrase"),
    "backtranslate": _model_strategy("backtranslate"),
    "code-rename": _code_rename,
}


# ---- records -------------------------------------------------------------------------------------------------------

# Default fields per record shape: the input side, and for code-rename the code (answers and inputs).
INPUT_FIELDS = {
    "text": ("text",),
    "prompt_completion": ("prompt",),
    "instruction": ("instruction", "input"),
    "messages": ("messages:user",),
}
CODE_FIELDS = {
    "text": ("text",),
    "prompt_completion": ("completion", "prompt"),
    "instruction": ("output", "input"),
    "messages": ("messages:assistant", "messages:user"),
}

# Where a text lives in a record: (column, None) for a string column, (column, i) for message i's content.
_Slot = tuple[str, int | None]


@dataclass(frozen=True)
class Augmented:
    """The copies made (raw records, ready to write) and why others were not made."""

    copies: list[dict[str, Any]]
    fields: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # copies not made, by reason
    notes: dict[str, int] = field(default_factory=dict)  # what happened to the texts (rewritten, snippets...)


def augment_records(
    records: Sequence[Record],
    strategy: str,
    *,
    fields: Sequence[str] | None = None,
    copies: int = 1,
    seed: int = 0,
    options: AugmentOptions | None = None,
    generate: Generate | None = None,
    model: str | None = None,
) -> Augmented:
    """``copies`` augmented copies of every record (fewer where a copy would equal its original or another copy).

    ``fields`` are column names to change instead of the defaults; a column holding chat messages takes
    ``messages`` (every turn) or ``messages:<role>`` (that role's turns). Records that are augmented copies
    already are refused (``check_originals``).
    """
    options = options or AugmentOptions()
    check_request(strategy, options=options, copies=copies)
    if not records:
        return Augmented([], ())
    check_originals(records)
    selectors = tuple(fields) if fields else _default_fields(records[0], strategy)
    jobs: list[Job] = []
    owners: list[tuple[Record, int, list[_Slot]]] = []
    skipped: Counter[str] = Counter()
    for record in records:
        slots = [slot for slot in _slots(record, selectors) if _get(record.data, slot).strip()]
        for number in range(1, copies + 1):
            if not slots:
                skipped["no text in the chosen fields"] += 1
                continue
            rng = random.Random(f"lmtune-augment:{strategy}:{seed}:{record.line}:{number}")
            jobs.append(Job(tuple(_get(record.data, slot) for slot in slots), rng))
            owners.append((record, number, slots))
    outcomes = STRATEGIES[strategy](jobs, options, generate)
    made: list[dict[str, Any]] = []
    notes: Counter[str] = Counter()
    seen: dict[int, set[tuple[str, ...]]] = {}
    for job, outcome, (record, number, slots) in zip(jobs, outcomes, owners, strict=True):
        notes.update(outcome.notes)
        earlier = seen.setdefault(id(record), set())
        if outcome.texts is None:
            skipped[outcome.reason or "no change"] += 1
        elif outcome.texts == job.texts:
            skipped["unchanged"] += 1
        elif outcome.texts in earlier:
            skipped["same as another copy"] += 1
        else:
            earlier.add(outcome.texts)
            made.append(_copy(record, slots, outcome.texts, strategy, seed, number, model))
    return Augmented(made, selectors, dict(skipped), dict(notes))


@dataclass(frozen=True)
class AugmentReport:
    """What `lmtune data augment` wrote, for its summary and ``--json``."""

    source: str
    out: str
    sha256: str
    strategy: str
    seed: int
    model: str | None
    originals: int
    copies: int
    written: int
    fields: tuple[str, ...]
    skipped: dict[str, int]
    notes: dict[str, int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "fields": list(self.fields)}


def check_originals(records: Sequence[Record]) -> None:
    """Copies are made from original records only: noise on noise drifts away from the data, and a copy's
    original is in the file it came from anyway."""
    for record in records:
        if record.data.get(AUGMENTATION_FIELD):
            raise DataError(
                record.source,
                record.line,
                AUGMENTATION_FIELD,
                "this record is an augmented copy already; copies are made from original records only",
                hint="augment the original file (without --only-new the output holds the originals first), "
                "or drop the records that have an 'augmentation' field",
            )


def check_request(strategy: str, *, options: AugmentOptions, copies: int = 1) -> None:
    """Fail on bad settings before any record or model is loaded."""
    if strategy not in STRATEGIES:
        raise LmtuneError(f"unknown augmentation strategy '{strategy}'", hint=f"use one of {', '.join(STRATEGIES)}")
    if copies < 1:
        raise LmtuneError(f"--copies must be at least 1, got {copies}")
    if options.rate is not None and not 0 < options.rate <= 1:
        raise LmtuneError(f"--rate must be in (0, 1], got {options.rate}", hint="e.g. 0.05: one letter in twenty")
    if options.noise_level not in NOISE_LEVELS:
        raise LmtuneError(f"unknown noise level {options.noise_level!r}", hint=f"use one of {', '.join(NOISE_LEVELS)}")
    if options.template is not None:
        if strategy not in MODEL_STRATEGIES:
            raise LmtuneError(f"--template applies to {' and '.join(MODEL_STRATEGIES)}, not to '{strategy}'")
        check_template(options.template, ("text",) if strategy == "paraphrase" else ("text", "source", "target"))


def check_model(strategy: str, model: str | None) -> None:
    """paraphrase and backtranslate need a model; the others must not be given one (it would go unused)."""
    if strategy in MODEL_STRATEGIES and not model:
        raise LmtuneError(
            f"strategy '{strategy}' needs a model to generate with",
            hint="name one with --model: a hub id (e.g. google/flan-t5-base), a local directory, or preset:tiny-chat",
        )
    if strategy not in MODEL_STRATEGIES and model:
        raise LmtuneError(
            f"--model applies to {' and '.join(MODEL_STRATEGIES)}, not to '{strategy}'",
            hint="drop --model, or pick a model-based strategy",
        )


def check_paths(source: str, out: str | Path, *, overwrite: bool = False, force: bool = False) -> Path:
    """Refuse to augment held-out data, to write anything but JSON, and to replace a file unasked."""
    words = set(re.split(r"[^a-z0-9]+", Path(source).stem.lower()))
    held_out = sorted(words & HELD_OUT_WORDS)
    if held_out and not force:
        raise LmtuneError(
            f"{source} looks like a validation or test split (its name says '{held_out[0]}'); augmentation is for "
            "the training split only: copies of held-out examples make the scores measure the augmentation",
            hint="augment the training file; if this file is training data, pass --force",
        )
    path = Path(out)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise LmtuneError(
            f"--out {out}: augmented data is written as .jsonl or .json",
            hint="each copy carries a nested 'augmentation' object that CSV cannot hold; name the output *.jsonl",
        )
    if Path(source).exists() and path.resolve() == Path(source).resolve():
        raise LmtuneError(f"--out {out} is the input file", hint="write the augmented data to a new file")
    if path.exists() and not overwrite:
        raise LmtuneError(f"{out} exists already", hint="choose another --out, or pass --overwrite to replace it")
    return path


def _default_fields(first: Record, strategy: str) -> tuple[str, ...]:
    try:
        shape = detect_format(first, {})
    except LmtuneError as error:
        raise LmtuneError(error.message, hint="name the columns to change with --fields") from None
    return (CODE_FIELDS if strategy == "code-rename" else INPUT_FIELDS)[shape]


def _slots(record: Record, selectors: Sequence[str]) -> list[_Slot]:
    slots: list[_Slot] = []
    for selector in selectors:
        column, _, role = selector.partition(":")
        if column not in record.data:
            raise DataError(
                record.source,
                record.line,
                column,
                f"missing (the record has keys {sorted(record.data)})",
                hint="name existing columns with --fields",
            )
        value = record.data[column]
        if isinstance(value, list):
            for i, message in enumerate(value):
                if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                    raise DataError(
                        record.source, record.line, f"{column}[{i}]", "must be an object with string content"
                    )
                if not role or message.get("role") == role:
                    slots.append((column, i))
        elif isinstance(value, str) and not role:
            slots.append((column, None))
        elif value is not None:
            what = "a string" if role else "a string or a list of messages"
            raise DataError(record.source, record.line, column, f"must be {what} to augment, got {json_type(value)}")
    return slots


def _get(data: Mapping[str, Any], slot: _Slot) -> str:
    column, index = slot
    value = data.get(column)
    if index is None:
        return value if isinstance(value, str) else ""
    return value[index]["content"]


def _copy(
    record: Record,
    slots: Sequence[_Slot],
    texts: Sequence[str],
    strategy: str,
    seed: int,
    number: int,
    model: str | None,
) -> dict[str, Any]:
    data = copying.deepcopy(record.data)
    for (column, index), text in zip(slots, texts, strict=True):
        if index is None:
            data[column] = text
        else:
            data[column][index]["content"] = text
    info: dict[str, Any] = {
        "strategy": strategy,
        "source": record.source,
        "line": record.line,
        "of": record_key(record.data),
        "seed": seed,
        "copy": number,
    }
    if model:
        info["model"] = model
    data[AUGMENTATION_FIELD] = info
    return data
