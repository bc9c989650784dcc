"""`evaluate_run`: the tuned model of a run against the base model prompted zero- and few-shot, on the same data.

The recipe: the run's config → held-out examples in the run's shape (its column mapping and template) → prompts
rendered exactly as training rendered them → generations of the tuned model and of each baseline → metrics →
paired-bootstrap deltas and one verdict line → eval.json in the run directory (the report reads it).

Few-shot demonstrations always come from the run's training split, never from the evaluated data: at random
(seeded) or retrieved by TF-IDF similarity to the input, the retrieval-augmented baseline users weigh against
fine-tuning.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.api.heads import EVAL_FILE, SAMPLES, EvalResult, evaluate_classifier, run_examples
from lmtune.api.setup import silent
from lmtune.api.tagging import evaluate_tagger
from lmtune.config import RunConfig, load_config
from lmtune.data.batching import unpacked
from lmtune.data.formats import (
    ChatExample,
    Example,
    LabelExample,
    Message,
    PromptCompletionExample,
    TextExample,
)
from lmtune.data.prepare import general_text, load_splits
from lmtune.data.text import example_input
from lmtune.data.tokenize import setup_chat_template, tokenize_examples, uses_chat
from lmtune.errors import DataError, LmtuneError
from lmtune.evaluate.bootstrap import headline, paired_bootstraps, verdict
from lmtune.evaluate.forgetting import forgetting_advice, forgetting_report, general_loss, rows_loss
from lmtune.evaluate.generate import context_limit, generate_texts
from lmtune.evaluate.metrics import MODEL_METRICS, compute_metrics, default_metrics, metric_keys
from lmtune.export import load_tuned, read_run_config
from lmtune.fileio import atomic_write_json
from lmtune.model import load_model, load_tokenizer
from lmtune.rundir import read_json
from lmtune.tasks import TASKS


@dataclass(frozen=True)
class Baseline:
    """The base model prompted with `shots` demonstrations (0: zero-shot), picked at random or by similarity."""

    shots: int = 0
    pick: str = "random"

    @property
    def name(self) -> str:
        return "zero-shot" if self.shots == 0 else f"{self.shots}-shot ({self.pick})"

    @classmethod
    def parse(cls, text: str) -> Baseline:
        """`zero-shot`, `few-shot:K`, `few-shot:K:random` or `few-shot:K:retrieved`."""
        parts = text.strip().split(":")
        try:
            if parts == ["zero-shot"]:
                return cls()
            if parts[0] == "few-shot" and len(parts) in (2, 3) and int(parts[1]) > 0:
                pick = parts[2] if len(parts) == 3 else "random"
                if pick in ("random", "retrieved"):
                    return cls(int(parts[1]), pick)
        except ValueError:
            pass
        raise LmtuneError(
            f"unknown baseline {text!r}",
            hint="use zero-shot, few-shot:K (random demonstrations) or few-shot:K:retrieved (most similar ones)",
        )


def evaluate_run(
    run: str | Path,
    *,
    data: str | None = None,
    references: Sequence[str] = (),
    metrics: Sequence[str] = (),
    baselines: Sequence[str | Baseline] = (),
    limit: int | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    forgetting: str | Path | None = None,
    overrides: Sequence[str] = (),
    save: bool = True,
    report: Callable[..., None] | None = None,
) -> EvalResult:
    """Score the run's tuned model (and baselines) on `data` (default: the run's validation split).

    `run` may also be a model (hub id, local directory or preset) to score as it is, before any fine-tuning:
    `data` is then required and read with a default data config (`overrides` such as `data.columns.prompt=...`
    apply; few-shot demonstrations need `data.train=FILE`).

    `data` is read in the shape the run was trained on (its column mapping and templates apply); `references`
    names extra reference columns (DialogSum's test set has summary1..3), the first of which stands in for the
    answer column. Metrics `perplexity` and `token_accuracy` are teacher-forced on the reference answers (tuned and
    zero-shot base). `forgetting` names a general text ('general', 'stories' or a file) to score the base and
    the tuned model on, as the run's own forgetting check does.
    """
    start = time.perf_counter()
    run_dir = Path(run)
    is_run = (run_dir / "config.yaml").is_file()
    chosen = [b if isinstance(b, Baseline) else Baseline.parse(b) for b in baselines]

    task = TASKS[read_run_config(run_dir).task] if is_run else None
    if task is not None and task.predicts_with_head:
        if baselines:
            raise LmtuneError(
                f"baselines prompt the base model to generate answers; a {task.name} run predicts with its trained "
                "head, and the base model has none",
                hint=f"leave out --baseline (eval.baselines) for {task.name} runs",
            )
        evaluate_head = HEAD_EVALUATORS.get(task.model)
        if evaluate_head is None:
            raise LmtuneError(f"lmtune eval does not score {task.name} runs yet", hint="see the run's summary.json")
        return evaluate_head(run_dir, data, metrics, limit, batch_size, save, start)

    # 1. The model and the held-out examples in the run's shape, with their references.
    if is_run:
        cfg = read_run_config(run_dir)
        model, tokenizer, _ = load_tuned(run_dir)
        system = "tuned"
    else:
        cfg, model, tokenizer = _plain_model(str(run), data, overrides, chosen)
        chosen = [b for b in chosen if b.shots > 0]  # zero-shot *is* the model here
        system = "model"
    examples, refs, source = _eval_data(cfg, data, references, limit)
    chat = bool(read_json(run_dir, "data.json").get("chat")) if is_run else uses_chat(examples[0], cfg.data.template)

    # 2. Generations: the tuned model, then the base model prompted zero- and few-shot.
    # Prompts past the context (long inputs, many demonstrations) keep their end: the question and what follows.
    context = context_limit(model)
    room = None if context is None or getattr(model.config, "is_encoder_decoder", False) else context - max_new_tokens
    options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, max_input_tokens=room, rendered=chat)
    prompts = [_prompt(ex, tokenizer, chat) for ex in examples]
    outputs = {system: generate_texts(model, tokenizer, prompts, desc=system, **options)}
    if chosen:
        train = load_splits(cfg.data, cfg.seed).train
        with _base_model(model, cfg) if is_run else contextlib.nullcontext(model) as base:
            for baseline in chosen:
                shots = _demonstrations(baseline, examples, train, seed)
                few = [_prompt(ex, tokenizer, chat, demos) for ex, demos in zip(examples, shots, strict=True)]
                outputs[baseline.name] = generate_texts(base, tokenizer, few, desc=baseline.name, **options)

    # 3. Metrics, deltas with paired-bootstrap intervals, and the verdict.
    forced = [m for m in metrics if m in MODEL_METRICS]
    if forced and TASKS[cfg.task].model == "seq2seq":
        raise LmtuneError(
            f"metrics {', '.join(forced)}: teacher-forced metrics are not computed for seq2seq runs yet",
            hint="the run's validation loss and perplexity are in summary.json; use generation metrics here",
        )
    asked = [m for m in metrics if m not in MODEL_METRICS]
    names, why = (asked, "as asked") if asked else default_metrics(outputs[system], refs)
    scores = {system: compute_metrics(names, texts, refs) for system, texts in outputs.items()}
    if forced:
        # Teacher-forced: the loss of the reference answers, as training scores them (perplexity, token accuracy).
        rows = unpacked(
            tokenize_examples(examples, tokenizer, max_length=cfg.data.max_length, template=cfg.data.template)[0]
        )
        scores[system].update(_forced(model, rows, tokenizer.pad_token_id, forced))
        if "zero-shot" in scores and is_run:
            with _base_model(model, cfg) as base:
                scores["zero-shot"].update(_forced(base, rows, tokenizer.pad_token_id, forced))
    if forgetting is not None and is_run:
        with _base_model(model, cfg) as base:
            before = general_loss(base, tokenizer, _text(forgetting), max_length=cfg.data.max_length)
        after = general_loss(model, tokenizer, _text(forgetting), max_length=cfg.data.max_length)
        general = forgetting_report(
            before, after, cfg.forgetting.threshold, vocab_size=len(tokenizer), text=str(forgetting)
        )
        (report or silent)(forgetting_advice(general, cfg.method.name), warning=general["warning"])
    keys = [key for name in names for key in metric_keys(name)]
    comparison, line = [], None
    main_key = headline(keys)
    deltas = {b.name: paired_bootstraps(names, outputs[b.name], outputs[system], refs, seed=seed) for b in chosen}
    for name, by_key in deltas.items():
        comparison += [{"baseline": name, **d.to_dict()} for d in by_key.values()]
    if deltas:
        # The verdict is against the strongest baseline: beating a weak one proves little.
        strongest = max(deltas, key=lambda name: scores[name][main_key])
        winner = "fine-tuning" if is_run else f"{system} zero-shot"
        line = verdict(deltas[strongest][main_key], a=f"{strongest} prompting", b=winner)
    samples = [
        {"input": example_input(ex), "reference": list(r), "outputs": {s: o[i] for s, o in outputs.items()}}
        for i, (ex, r) in enumerate(zip(examples[:SAMPLES], refs[:SAMPLES], strict=False))
    ]
    result = EvalResult(
        str(run_dir),
        {"source": source, "examples": len(examples), "references_per_example": max(map(len, refs)), "metrics": why},
        scores,
        comparison,
        line,
        samples,
        time.perf_counter() - start,
        general if forgetting is not None else None,
    )
    if save and is_run:
        atomic_write_json(run_dir / EVAL_FILE, result.as_dict())
    return result


def _plain_model(
    name: str, data: str | None, overrides: Sequence[str], baselines: Sequence[Baseline]
) -> tuple[RunConfig, Any, Any]:
    """A model that is not a run: its config from defaults + overrides, the model and its tokenizer as loaded."""
    if data is None:
        raise LmtuneError(
            f"{name} is not a run directory (no config.yaml); to evaluate it as a model, give --data",
            hint="evaluate a run: lmtune eval runs/NAME, or a model: lmtune eval MODEL --data test.jsonl",
        )
    cfg = load_config({"model": {"name": name}, "data": {"train": data, "val_fraction": 0}}, overrides)
    if any(b.shots for b in baselines) and Path(cfg.data.train).resolve() == Path(data).resolve():
        raise LmtuneError(
            "few-shot demonstrations must come from training data, not from the evaluated data",
            hint="name the file to draw them from: --set data.train=train.jsonl",
        )
    tokenizer = load_tokenizer(cfg.model)
    setup_chat_template(tokenizer, cfg.data.chat_template)
    model = load_model(cfg.model.model_copy(update={"gradient_checkpointing": False}))
    model.eval()
    return cfg, model, tokenizer


def _forced(model: Any, rows: list, pad_id: int, names: Sequence[str]) -> dict[str, float]:
    result = rows_loss(model, rows, pad_id)
    return {name: result["perplexity" if name == "perplexity" else "token_accuracy"] for name in names}


def _text(source: str | Path) -> str | Path:
    """A shipped sample by name, else the path of a text file."""
    return general_text(str(source))[0] if str(source) in ("general", "stories") else Path(source)


def _eval_data(
    cfg: RunConfig, data: str | None, references: Sequence[str], limit: int | None
) -> tuple[list[Example], list[tuple[str, ...]], str]:
    """Examples and references: `data` in the run's shape, or the run's own validation split."""
    columns = dict(cfg.data.columns)
    if references:
        columns["output" if cfg.data.format == "instruction" else "completion"] = references[0]
    examples, records, source = run_examples(cfg, data, columns)
    if limit is not None:
        examples = examples[:limit]
    refs = []
    for i, ex in enumerate(examples):
        if isinstance(ex, TextExample):
            raise LmtuneError(
                f"{ex.source}: raw-text data has no reference answers to score generations against",
                hint="evaluate prompt/completion, instruction or chat data",
            )
        answer = _answer(ex)
        extra = []
        if references and records is not None:
            record = records[i]
            for name in references[1:]:
                value = record.data.get(name)
                if not isinstance(value, str) or not value.strip():
                    raise DataError(record.source, record.line, name, "missing or empty reference")
                extra.append(value)
        refs.append((answer, *extra))
    return examples, refs, source


def _answer(example: Example) -> str:
    if isinstance(example, PromptCompletionExample):
        return example.completion
    if isinstance(example, LabelExample):
        return example.label
    assert isinstance(example, ChatExample)
    return _split_chat(example)[1].content


def _split_chat(example: ChatExample) -> tuple[tuple[Message, ...], Message]:
    """The conversation up to its last trained assistant turn, and that turn (the reference)."""
    for i in range(len(example.messages) - 1, -1, -1):
        m = example.messages[i]
        if m.role == "assistant" and m.weight:
            return example.messages[:i], m
    raise DataError(example.source, example.line, "messages", "has no assistant turn to evaluate")


def _prompt(example: Example, tokenizer: Any, chat: bool, demos: Sequence[Example] = ()) -> str:
    """What the model is given, rendered as training rendered it; demonstrations go first as solved examples."""
    if chat:
        history: list[dict[str, str]] = []
        for demo in demos:
            context, answer = _as_chat(demo)
            history += [{"role": m.role, "content": m.content} for m in context if m.role != "system"]
            history.append({"role": "assistant", "content": answer.content})
        context, _ = _as_chat(example)
        system = [{"role": m.role, "content": m.content} for m in context if m.role == "system"]
        rest = [{"role": m.role, "content": m.content} for m in context if m.role != "system"]
        return tokenizer.apply_chat_template([*system, *history, *rest], tokenize=False, add_generation_prompt=True)
    assert isinstance(example, PromptCompletionExample)
    shots = "".join(f"{d.prompt}{d.completion}\n\n" for d in demos if isinstance(d, PromptCompletionExample))
    return shots + example.prompt


def _as_chat(example: Example) -> tuple[tuple[Message, ...], Message]:
    if isinstance(example, PromptCompletionExample):
        return (Message("user", example.prompt),), Message("assistant", example.completion)
    assert isinstance(example, ChatExample)
    return _split_chat(example)


def _demonstrations(
    baseline: Baseline, examples: Sequence[Example], train: Sequence[Example], seed: int
) -> list[list[Example]]:
    """`shots` training examples per evaluated example: seeded random ones, or the most similar inputs (TF-IDF)."""
    if baseline.shots == 0:
        return [[] for _ in examples]
    if len(train) < baseline.shots:
        raise LmtuneError(f"{baseline.name}: the training split has only {len(train)} examples")
    if baseline.pick == "random":
        rng = random.Random(seed)
        return [rng.sample(list(train), baseline.shots) for _ in examples]
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import linear_kernel

    vectorizer = TfidfVectorizer().fit([example_input(t) for t in train])
    similarity = linear_kernel(
        vectorizer.transform([example_input(e) for e in examples]),
        vectorizer.transform([example_input(t) for t in train]),
    )
    # Most similar last: the nearest demonstration sits right before the question.
    return [[train[j] for j in row.argsort()[::-1][: baseline.shots][::-1]] for row in similarity]


# Runs that predict with a trained head, by their model class.
HEAD_EVALUATORS = {"classifier": evaluate_classifier, "token_classifier": evaluate_tagger}


@contextlib.contextmanager
def _base_model(tuned: Any, cfg: RunConfig) -> Iterator[Any]:
    """The base model: the adapter switched off for LoRA runs, else the base loaded as the run loaded it."""
    if hasattr(tuned, "disable_adapter"):
        with tuned.disable_adapter():
            yield tuned
        return
    base = load_model(cfg.model.model_copy(update={"gradient_checkpointing": False}), TASKS[cfg.task].model)
    base.eval()
    yield base
