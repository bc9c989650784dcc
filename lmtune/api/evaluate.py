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
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lmtune.api.fewshot import Baseline, demonstrations, reference_answer, render_prompt
from lmtune.api.heads import EVAL_FILE, SAMPLES, EvalResult, evaluate_classifier, run_examples
from lmtune.api.setup import silent
from lmtune.api.tagging import evaluate_tagger
from lmtune.config import RunConfig, load_config
from lmtune.data.batching import unpacked
from lmtune.data.formats import Example, TextExample
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
from lmtune.tasks import TASKS, Task


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
    names extra reference columns (DialogSum's test set has summary1..3), the first standing in for the answer
    column. `perplexity` and `token_accuracy` are teacher-forced on the reference answers (tuned and zero-shot
    base). `forgetting`: a general text ('general', 'stories' or a file) to score the base and tuned model on."""
    start = time.perf_counter()
    run_dir = Path(run)
    is_run = (run_dir / "config.yaml").is_file()
    chosen = [b if isinstance(b, Baseline) else Baseline.parse(b) for b in baselines]
    if forgetting is not None and not is_run:
        raise LmtuneError(
            f"--forgetting compares a tuned model with its base; {run} is a model, not a run directory",
            hint="give a run directory (runs/NAME), or leave out --forgetting",
        )

    if is_run and (scored := _without_generation(run_dir, data, metrics, baselines, limit, batch_size, save, start)):
        return scored

    # 1. The model and the held-out examples in the run's shape, with their references.
    cfg, model, tokenizer, system, chosen = _system(run, is_run, data, overrides, chosen)
    examples, refs, source = _eval_data(cfg, data, references, limit)
    chat = bool(read_json(run_dir, "data.json").get("chat")) if is_run else uses_chat(examples[0], cfg.data.template)

    # 2. Generations: the tuned model, then the base model prompted zero- and few-shot.
    outputs = _generations(
        model, tokenizer, cfg, examples, chat, system, chosen, is_run, seed, max_new_tokens, batch_size
    )

    # 3. Metrics, deltas with paired-bootstrap intervals, and the verdict.
    names, why, scores = _scores(model, tokenizer, cfg, metrics, outputs, system, examples, refs, is_run)
    general = None
    if forgetting is not None and is_run:
        general = _forgetting(model, tokenizer, cfg, forgetting)
        (report or silent)(forgetting_advice(general, cfg.method.name), warning=general["warning"])
    comparison, line = _comparison(names, outputs, scores, system, refs, chosen, seed, is_run)
    samples = [
        {"input": example_input(ex), "reference": list(r), "outputs": {s: o[i] for s, o in outputs.items()}}
        for i, (ex, r) in enumerate(zip(examples[:SAMPLES], refs[:SAMPLES], strict=False))
    ]
    result = EvalResult(
        str(run_dir),
        {
            "source": source,
            "examples": len(examples),
            "references_per_example": max(map(len, refs)),
            "metrics": why,
            "prompts_cut": _prompts_cut(model, tokenizer, examples, chat, max_new_tokens),
        },
        scores,
        comparison,
        line,
        samples,
        time.perf_counter() - start,
        general,
    )
    if save and is_run:
        atomic_write_json(run_dir / EVAL_FILE, result.as_dict())
    return result


def _without_generation(
    run_dir: Path,
    data: str | None,
    metrics: Sequence[str],
    baselines: Sequence[Any],
    limit: int | None,
    batch_size: int,
    save: bool,
    start: float,
) -> EvalResult | None:
    """A run scored without generating: reward and DPO runs on preference pairs, head-predicting runs
    (classification, tagging) by their head; None for the runs that generate."""
    task = TASKS[read_run_config(run_dir).task]
    if task.records == "pairs":
        from lmtune.api.pairs_eval import evaluate_pairs  # reward and dpo runs: scored on preference pairs

        if baselines:
            raise LmtuneError(
                f"baselines prompt a model to generate answers; a {task.name} run is scored on preference pairs",
                hint=f"leave out --baseline (eval.baselines) for {task.name} runs",
            )
        return evaluate_pairs(run_dir, data, metrics, limit, batch_size, save, start)
    if task.predicts_with_head:
        return _evaluate_head(task, bool(baselines))(run_dir, data, metrics, limit, batch_size, save, start)
    return None


def _system(
    run: str | Path, is_run: bool, data: str | None, overrides: Sequence[str], chosen: list[Baseline]
) -> tuple[RunConfig, Any, Any, str, list[Baseline]]:
    """The model scored (a run's tuned model, or a model as it is), its config and tokenizer, its name in the
    results, and the baselines that still apply."""
    if is_run:
        cfg = read_run_config(Path(run))
        model, tokenizer, _ = load_tuned(Path(run))
        return cfg, model, tokenizer, "tuned", chosen
    cfg, model, tokenizer = _plain_model(str(run), data, overrides, chosen)
    return cfg, model, tokenizer, "model", [b for b in chosen if b.shots > 0]  # zero-shot *is* the model here


def _evaluate_head(task: Task, baselines: bool) -> Callable[..., EvalResult]:
    """The evaluator of a run that predicts with a trained head: no generations, so no baselines."""
    if baselines:
        raise LmtuneError(
            f"baselines prompt the base model to generate answers; a {task.name} run predicts with its trained "
            "head, and the base model has none",
            hint=f"leave out --baseline (eval.baselines) for {task.name} runs",
        )
    evaluate_head = HEAD_EVALUATORS.get(task.model)
    if evaluate_head is None:
        raise LmtuneError(f"lmtune eval does not score {task.name} runs yet", hint="see the run's summary.json")
    return evaluate_head


def _generations(
    model: Any,
    tokenizer: Any,
    cfg: RunConfig,
    examples: Sequence[Example],
    chat: bool,
    system: str,
    chosen: Sequence[Baseline],
    is_run: bool,
    seed: int,
    max_new_tokens: int,
    batch_size: int,
) -> dict[str, list[str]]:
    """The system's generations, then the base model's under each baseline (demonstrations from the training split)."""
    # Prompts past the context (long inputs, many demonstrations) keep their end: the question and what follows.
    context = context_limit(model)
    room = None if context is None or getattr(model.config, "is_encoder_decoder", False) else context - max_new_tokens
    options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, max_input_tokens=room, rendered=chat)
    prompts = [render_prompt(ex, tokenizer, chat) for ex in examples]
    outputs = {system: generate_texts(model, tokenizer, prompts, desc=system, **options)}
    if chosen:
        train = load_splits(cfg.data, cfg.seed).train
        with _base_model(model, cfg) if is_run else contextlib.nullcontext(model) as base:
            for baseline in chosen:
                shots = demonstrations(baseline, examples, train, seed)
                few = [render_prompt(ex, tokenizer, chat, demos) for ex, demos in zip(examples, shots, strict=True)]
                outputs[baseline.name] = generate_texts(base, tokenizer, few, desc=baseline.name, **options)
    return outputs


def _prompts_cut(model: Any, tokenizer: Any, examples: Sequence[Example], chat: bool, max_new_tokens: int) -> int:
    """How many of the tuned model's prompts lost their start to its context (`_generations` keeps their end)."""
    context = context_limit(model)
    if context is None or getattr(model.config, "is_encoder_decoder", False):
        return 0
    room = context - max_new_tokens
    prompts = [render_prompt(ex, tokenizer, chat) for ex in examples]
    return sum(len(tokenizer(p, add_special_tokens=not chat)["input_ids"]) > room for p in prompts)


def _scores(
    model: Any,
    tokenizer: Any,
    cfg: RunConfig,
    metrics: Sequence[str],
    outputs: dict[str, list[str]],
    system: str,
    examples: list[Example],
    refs: list[tuple[str, ...]],
    is_run: bool,
) -> tuple[list[str], str, dict[str, dict[str, float]]]:
    """The metrics' names, why those, and every system's scores; teacher-forced ones for the tuned and base model."""
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
    return names, why, scores


def _forgetting(model: Any, tokenizer: Any, cfg: RunConfig, forgetting: str | Path) -> dict[str, Any]:
    """The loss on a general text before (the base model) and after tuning, as the run's own forgetting check."""
    with _base_model(model, cfg) as base:
        before = general_loss(base, tokenizer, _text(forgetting), max_length=cfg.data.max_length)
    after = general_loss(model, tokenizer, _text(forgetting), max_length=cfg.data.max_length)
    return forgetting_report(before, after, cfg.forgetting.threshold, vocab_size=len(tokenizer), text=str(forgetting))


def _comparison(
    names: Sequence[str],
    outputs: dict[str, list[str]],
    scores: dict[str, dict[str, float]],
    system: str,
    refs: list[tuple[str, ...]],
    chosen: Sequence[Baseline],
    seed: int,
    is_run: bool,
) -> tuple[list[dict[str, Any]], str | None]:
    """Each baseline's deltas to the system with paired-bootstrap intervals, and the verdict line (if any)."""
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
    return comparison, line


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
    if (
        any(b.shots for b in baselines)
        and isinstance(cfg.data.train, str)
        and Path(cfg.data.train).resolve() == Path(data).resolve()
    ):
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
        answer = reference_answer(ex)
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
