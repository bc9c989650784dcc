"""`finetune`: config -> data -> model -> method -> loop -> saved model; `preview` of what training renders."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate.utils import set_seed
from rich.console import Console
from rich.markup import escape

from lmtune.align import run_alignment
from lmtune.api.evaluate import evaluate_run
from lmtune.config import (
    ALIGNMENT_TASKS,
    ConfigLike,
    EarlyStoppingConfig,
    RunConfig,
    dump_config,
    load_config,
)
from lmtune.data.batching import Row, pack, unpacked
from lmtune.data.formats import Example
from lmtune.data.leakage import cheap_leaks
from lmtune.data.ner import tag_names
from lmtune.data.prepare import general_text, load_splits
from lmtune.data.tokenize import (
    encode,
    label_names,
    render,
    setup_chat_template,
    special_affixes,
    tokenize_examples,
    tokenize_task,
    trained_segments,
    uses_chat,
)
from lmtune.data.types import IGNORE, TokenStats
from lmtune.errors import LmtuneError
from lmtune.evaluate.diagnose import diagnose
from lmtune.evaluate.forgetting import forgetting_advice, forgetting_report, general_rows
from lmtune.export import check_same_config, final_state, needs_base_copy, save_base, save_final
from lmtune.fileio import atomic_write_text
from lmtune.methods import apply_method, check_method, quantization_config
from lmtune.model import count_parameters, load_model, load_tokenizer
from lmtune.report import write_report
from lmtune.rundir import MetricsLog, check_run_dir, environment, prepare_run_dir, read_json, write_json
from lmtune.train.checkpoint import (
    latest_checkpoint,
    load_best,
    load_checkpoint,
    prune_best,
    save_best,
    save_checkpoint,
)
from lmtune.train.early_stopping import stop_reason
from lmtune.train.fastdropout import use_fast_dropout
from lmtune.train.hostmem import keep_freed_memory
from lmtune.train.launch import (
    check_launch,
    configure_deepspeed,
    describe_launch,
    graceful_interrupt,
    make_accelerator,
    resolve_mixed_precision,
    whole_model_loading,
)
from lmtune.train.loop import Hooks, make_optimizer, resume_grad_accum, run_evaluation, total_steps, train_loop
from lmtune.train.objectives import objective_for, resolve_class_weights
from lmtune.train.state import LoopState
from lmtune.train.validation import evaluate_loss

# The forgetting measurement scores next-token prediction on general text, which an encoder-decoder does not do.
SEQ2SEQ_FORGETTING_NOTE = (
    "not measured: the general-text loss is a causal-LM measurement and task seq2seq trains an encoder-decoder"
)
# ... nor a model whose language-model head was replaced by a classification head.
CLASSIFICATION_FORGETTING_NOTE = (
    "not measured: the general-text loss is a causal-LM measurement and task classification trains a classifier"
)
FORGETTING_NOTES = {
    "seq2seq": SEQ2SEQ_FORGETTING_NOTE,
    "classification": CLASSIFICATION_FORGETTING_NOTE,
    "token_classification": CLASSIFICATION_FORGETTING_NOTE.replace("classification", "token_classification"),
}


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    summary: dict[str, Any]


def finetune(
    config: ConfigLike,
    *,
    overrides: Sequence[str] = (),
    output_dir: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    after_step: Sequence[Callable[[LoopState], None]] = (),
    console: Console | None = None,
) -> RunResult:
    """Fine-tune a model as the config says and write the run directory. Returns its path and summary.

    `config` is a YAML path, a dict or a RunConfig; `overrides` are `key.path=value` strings.
    """
    console = console or Console(stderr=True, soft_wrap=True)
    cfg = load_config(config, overrides, output_dir)
    check_method(cfg.method.name, cfg.task)
    if cfg.task in ALIGNMENT_TASKS:
        # Preference tasks train through trl's trainers (lmtune.align): same run directory, data rules and methods.
        summary = run_alignment(cfg, resume=resume, overwrite=overwrite, console=console)
        return RunResult(cfg.run_dir, summary)

    # 1. Where the run lives: refuse to clobber an existing run unless asked (checked on every process,
    #    changed by the main one only).
    accelerator = make_accelerator(resolve_mixed_precision(cfg.train.mixed_precision))
    say = console.print if accelerator.is_main_process else (lambda *a, **k: None)
    check_launch(accelerator, cfg)
    run_dir = cfg.run_dir
    check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    if resume:
        check_same_config(run_dir, cfg)
        cfg = _keep_global_batch(run_dir, cfg, accelerator.num_processes, say)
    configure_deepspeed(accelerator, cfg.train)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    accelerator.wait_for_everyone()
    set_seed(cfg.seed)

    # 2. Data: load, validate, split, render, tokenize (and pack).
    tokenizer = load_tokenizer(cfg.model)
    setup_chat_template(tokenizer, cfg.data.chat_template)
    splits = load_splits(cfg.data, cfg.seed)
    if resume:
        _check_same_data(run_dir, splits.info)
    leaks = _check_leakage(cfg, splits.train, splits.validation, say)
    # Task classification: the label set is the training data's (sorted); validation labels must be among it.
    labels = label_names(splits.train) if cfg.task == "classification" else []
    if cfg.task == "token_classification":
        labels = tag_names(splits.train)  # the tag set: 'O' first, then by entity type
    tokenize = dict(
        max_length=cfg.data.max_length, overlong=cfg.data.overlong, template=cfg.data.template, labels=labels
    )
    train_tok, train_stats = tokenize_task(splits.train, tokenizer, cfg.task, **tokenize)
    val_tok, val_stats = tokenize_task(splits.validation, tokenizer, cfg.task, **tokenize)
    if not train_tok:
        raise LmtuneError("no training example is left after tokenization", hint="check data.max_length and overlong")
    # Replay (data.replay): general-text paragraphs trained on every token; too long ones are simply cut.
    replay_tok, replay_stats = tokenize_examples(splits.replay, tokenizer, max_length=cfg.data.max_length)
    mixed = train_tok + replay_tok
    rows = pack(mixed, cfg.data.max_length) if cfg.data.packing else unpacked(mixed)
    val_rows = unpacked(val_tok)
    if cfg.train.early_stopping is not None and not val_rows:
        raise LmtuneError(
            "train.early_stopping: the validation split is empty, so there is nothing to watch",
            hint="set data.validation, or a data.val_fraction that leaves some examples",
        )
    chat = bool(splits.train) and uses_chat(splits.train[0], cfg.data.template)
    _report_data(say, splits.format, chat, train_stats, val_stats, len(rows), cfg)
    if replay_tok:
        say(
            f"replay: {len(replay_tok)} paragraphs of general text ({cfg.data.replay.source}) mixed into training "
            f"({100 * len(replay_tok) / len(mixed):.0f}% of the examples, {replay_stats.trained_tokens:,} tokens)"
        )

    # 3. Model and method.
    with whole_model_loading(accelerator):
        model = load_model(
            cfg.model,
            quantization=quantization_config(cfg.method),
            task=cfg.task,
            labels=labels,
            pad_token_id=tokenizer.pad_token_id,
        )
    if needs_base_copy(cfg) and not resume and accelerator.is_main_process:
        save_base(run_dir, model)
    model = apply_method(model, cfg.method, cfg.task)
    if cfg.train.fast_dropout:
        use_fast_dropout(model)
    trainable, total = count_parameters(model)
    say(
        f"model {cfg.model.name} · method {cfg.method.name}: {trainable:,} trainable of {total:,} parameters "
        f"({100 * trainable / total:.2f}%)"
    )

    # 4. Optimizer, schedule, accelerate.
    steps = total_steps(len(rows), cfg.train, accelerator.num_processes)
    optimizer, scheduler = make_optimizer(model, cfg.train, steps)
    model, optimizer = accelerator.prepare(model, optimizer)

    eval_bs = cfg.train.eval_batch_size or cfg.train.batch_size
    pad_id = tokenizer.pad_token_id
    class_weights = None
    if cfg.task in ("classification", "token_classification"):
        ids = [t.class_label for t in train_tok if t.class_label is not None]
        if cfg.task == "token_classification":
            ids = [label for t in train_tok for label in t.labels if label != IGNORE]  # one tag per word
        class_weights = resolve_class_weights(cfg.train.class_weights, ids, len(labels))
        counts = Counter(ids)
        say(
            f"labels: {', '.join(f'{name} ({counts[i]})' for i, name in enumerate(labels))} in the training data"
            + (f"; class weights {', '.join(f'{w:.3g}' for w in class_weights)}" if class_weights else "")
        )
    objective = objective_for(cfg.task, label_smoothing=cfg.train.label_smoothing, class_weights=class_weights)

    # 5. What training is measured against, taken before a resume loads its checkpoint so that both belong to
    #    the weights training started from (recomputed, not stored): the trainable weights themselves (L2-SP
    #    pulls toward them) and the loss on a general text (the forgetting measurement compares the end with it).
    anchors = [p.detach().clone() for p in model.parameters() if p.requires_grad] if cfg.train.l2sp > 0 else None
    general: list[Row] = []
    if cfg.forgetting.measure and cfg.task not in FORGETTING_NOTES:
        general_source, general_file = general_text(cfg.forgetting.text)
        general = general_rows(
            tokenizer,
            general_source,
            max_length=cfg.forgetting.max_length or cfg.data.max_length,
            max_tokens=cfg.forgetting.max_tokens,
        )
    general_before = evaluate_loss(model, general, eval_bs, pad_id, accelerator) if general else None
    if general_before is not None:
        say(
            f"general-text loss before training: {general_before['loss']:.4f} "
            f"(perplexity {general_before['perplexity']:.2f}, {general_before['tokens']:,} tokens of "
            f"{cfg.forgetting.text})"
        )

    # 6. The run directory's description, or the state to resume from.
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    state = LoopState()
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise LmtuneError(f"--resume: {run_dir} has no checkpoint yet", hint="start again with --overwrite")
        state = LoopState(**load_checkpoint(ckpt, model, optimizer, scheduler))
        if accelerator.is_main_process:
            metrics.truncate_after(state.step)
            prune_best(run_dir, {state.best_step})  # bests a crashed run kept after this checkpoint are stale
        say(f"resuming from {ckpt} (step {state.step} of {steps})")
    elif accelerator.is_main_process:
        atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
        info = {**splits.info}
        info["train"].update(tokens=train_stats.as_dict(), rows=len(rows))
        info.setdefault("validation", {}).update(tokens=val_stats.as_dict())
        if "replay" in info:
            info["replay"].update(tokens=replay_stats.as_dict())
        write_json(run_dir, "data.json", {"format": splits.format, "chat": chat, "splits": info, "leakage": leaks})
        write_json(run_dir, "env.json", {**environment(), "launch": describe_launch(accelerator)})

    def on_eval(s: LoopState) -> dict[str, float]:
        result = evaluate_loss(model, val_rows, eval_bs, pad_id, accelerator, cfg.task, objective)
        if s.best_val_loss is None or result["loss"] < s.best_val_loss:
            s.best_val_loss = result["loss"]
        if accelerator.is_main_process:
            metrics.append({"split": "validation", "step": s.step, **result})
        return result

    # Early stopping keeps the weights of the best evaluation on disk, and the best the last checkpoint refers to
    # until the next checkpoint (a crash in between resumes from that checkpoint and needs its best).
    committed_best: list[int | None] = [state.best_step]

    # Saving is collective (FSDP and ZeRO gather the shards on every process); the main process writes.
    def on_checkpoint(s: LoopState) -> None:
        main = accelerator.is_main_process
        keep = cfg.train.keep_checkpoints
        save_checkpoint(run_dir, s.step, model, optimizer, scheduler, s.as_dict(), keep, write=main)
        if main:
            prune_best(run_dir, {s.best_step})
        committed_best[0] = s.best_step
        accelerator.wait_for_everyone()

    def on_best(s: LoopState) -> None:
        save_best(
            run_dir, s.step, accelerator.unwrap_model(model), keep=committed_best, write=accelerator.is_main_process
        )
        accelerator.wait_for_everyone()

    hooks = Hooks(
        on_log=metrics.append if accelerator.is_main_process else (lambda r: None),
        on_eval=on_eval if val_rows else None,
        on_checkpoint=on_checkpoint,
        on_best=on_best,
        after_step=after_step,
    )
    if val_rows and not resume:
        before = run_evaluation(state, hooks, cfg.train.early_stopping)
        extra = (
            f"accuracy {before['accuracy']:.4f}" if "accuracy" in before else f"perplexity {before['perplexity']:.2f}"
        )
        say(f"validation loss before training: {before['loss']:.4f} ({extra})")

    # 7. Train.
    if cfg.train.keep_host_memory and accelerator.device.type == "cpu":
        keep_freed_memory()
    with graceful_interrupt() as stop_requested:
        hooks.stop_requested = stop_requested
        train_loop(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            accelerator=accelerator,
            rows=rows,
            pad_id=pad_id,
            cfg=cfg.train,
            seed=cfg.seed,
            steps=steps,
            state=state,
            hooks=hooks,
            anchors=anchors,
            task=cfg.task,
            objective=objective,
        )

    # 8. The final model: with early stopping, the weights of the best evaluation, not the last ones.
    early = cfg.train.early_stopping
    if early is not None and state.best_step is not None:
        load_best(run_dir, state.best_step, accelerator.unwrap_model(model))
        if state.stopped_early:
            say(f"early stopping at step {state.step} of {steps}: {stop_reason(state, early)}")
        say(f"the final model is the one of step {state.best_step} ({early.metric} {state.best_metric:.4f})")

    # 9. How much general ability the final model lost.
    forgetting: dict[str, Any] | None = None
    if general_before is not None:
        after = evaluate_loss(model, general, eval_bs, pad_id, accelerator)
        forgetting = forgetting_report(
            general_before,
            after,
            cfg.forgetting.threshold,
            vocab_size=len(tokenizer),
            text=cfg.forgetting.text,
            file=str(general_file),
        )
        message = forgetting_advice(forgetting, cfg.method.name)
        say(
            f"[yellow]warning: {escape(message)}[/yellow]" if forgetting["warning"] else escape(message),
            highlight=False,
        )

    # 10. Save the tuned model, summarise, and say what the curves show.
    summary: dict[str, Any] = {}
    whole = final_state(accelerator.unwrap_model(model))  # collective under FSDP and ZeRO, None otherwise
    if accelerator.is_main_process:
        save_final(run_dir, accelerator.unwrap_model(model), tokenizer, whole)
        summary = summarize(run_dir, state, trainable, total, early_stopping=early, forgetting=forgetting)
        if cfg.task in FORGETTING_NOTES and cfg.forgetting.measure:
            summary["forgetting_skipped"] = FORGETTING_NOTES[cfg.task]
        if labels:
            summary["labels"] = labels
        write_json(run_dir, "summary.json", summary)
        for finding in summary["diagnosis"]:
            advice = finding["advice"][:1].upper() + finding["advice"][1:]
            say(f"[yellow]{finding['kind']}: {escape(finding['message'])}. {escape(advice)}.[/yellow]", highlight=False)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if cfg.eval.enabled:
            # 11. The configured evaluation: generation metrics against the baselines, into the report.
            e = cfg.eval
            result = evaluate_run(run_dir, data=e.data, references=e.references, metrics=e.metrics,
                                  baselines=e.baselines, limit=e.limit, max_new_tokens=e.max_new_tokens,
                                  seed=cfg.seed, console=console)  # fmt: skip
            scores = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics["tuned"].items() if isinstance(v, float))
            say(f"evaluation on {result.data['examples']} examples: {scores}")
            if result.verdict:
                say(result.verdict)
        paths = write_report(run_dir)
        say(f"report: {paths.html} · model card: {paths.model_card}")
    accelerator.wait_for_everyone()
    return RunResult(run_dir, summary)


@dataclass(frozen=True)
class PreviewItem:
    source: str
    line: int
    tokens: int
    trained: int
    segments: list[tuple[str, bool]]


def preview(
    config: ConfigLike, *, overrides: Sequence[str] = (), n: int = 3, split: str = "train"
) -> list[PreviewItem]:
    """The first n examples of a split as training renders them, split into trained and context segments."""
    cfg = load_config(config, overrides)
    if cfg.task in ("classification", "token_classification"):
        raise LmtuneError(
            f"data preview shows the rendered text and the answer tokens trained on; task {cfg.task} renders no "
            "prompt and answer (it trains a label per text or a tag per word)",
            hint="`lmtune data check CONFIG` shows the labels or tags, their counts and the token lengths",
        )
    tokenizer = load_tokenizer(cfg.model)
    setup_chat_template(tokenizer, cfg.data.chat_template)
    splits = load_splits(cfg.data, cfg.seed)
    examples = splits.train if split == "train" else splits.validation
    prefix, _ = special_affixes(tokenizer)
    items = []
    for ex in examples[:n]:
        tok = encode(render(ex, tokenizer, cfg.data.template), tokenizer, prefix)
        trained = sum(label != IGNORE for label in tok.labels[1:])
        segments = trained_segments(tok, tokenizer)
        items.append(PreviewItem(ex.source, ex.line, len(tok.input_ids), trained, segments))
    return items


def summarize(
    run_dir: Path,
    state: LoopState,
    trainable: int,
    total: int,
    *,
    early_stopping: EarlyStoppingConfig | None = None,
    forgetting: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """summary.json: what the run did, its losses, early stopping, forgetting and the diagnosis of its curves."""
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "validation"]
    out: dict[str, Any] = {
        "steps": state.step,
        "epochs": round(train[-1]["epoch"], 3) if train else 0,
        "trained_tokens": state.tokens,
        "train_time_s": round(state.elapsed, 3),
        "tokens_per_s": round(state.tokens / state.elapsed, 1) if state.elapsed else None,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "first_train_loss": train[0]["loss"] if train else None,
        "last_train_loss": train[-1]["loss"] if train else None,
    }
    if val:
        best = min(val, key=lambda r: r["loss"])
        out.update(
            val_loss_before=val[0]["loss"] if val[0]["step"] == 0 else None,
            val_perplexity_before=val[0]["perplexity"] if val[0]["step"] == 0 else None,
            val_loss_after=val[-1]["loss"],
            best_val_loss=best["loss"],
            best_val_step=best["step"],
            val_perplexity_after=val[-1]["perplexity"],
        )
    # Which weights final/ holds: the best evaluation's with early stopping, else the last step's.
    kept = state.best_step if early_stopping is not None and state.best_step is not None else state.step
    out.update(stopped_early=state.stopped_early, stopped_at=state.step, best_step=state.best_step, final_step=kept)
    at_kept = [r for r in val if r["step"] == kept]
    out["val_loss_final"] = at_kept[-1]["loss"] if at_kept else None
    # Task classification: the label scores of the validation split, before, after and for the final model.
    for key in ("accuracy", "f1"):
        if val and key in val[-1]:
            out[f"val_{key}_before"] = val[0][key] if val[0]["step"] == 0 else None
            out[f"val_{key}_after"] = val[-1][key]
            out[f"val_{key}_final"] = at_kept[-1][key] if at_kept else None
    if early_stopping is not None:
        out["early_stopping"] = {
            **early_stopping.model_dump(),
            "best": state.best_metric,
            "best_step": state.best_step,
            "reason": stop_reason(state, early_stopping) if state.stopped_early else None,
        }
    if forgetting is not None:
        out["forgetting"] = forgetting
    out["diagnosis"] = [f.as_dict() for f in diagnose(records)]
    return out


def _keep_global_batch(run_dir: Path, cfg: RunConfig, processes: int, say: Callable) -> RunConfig:
    """On another number of processes than the checkpoint's, the grad_accum that keeps the global batch."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return cfg  # refused later, with the reason
    saved = read_json(ckpt, "loop_state.json")
    accum = resume_grad_accum(saved, cfg.train, processes)
    if accum == cfg.train.grad_accum:
        return cfg
    say(
        f"resuming on {processes} process(es) instead of {saved.get('processes', 1)}: train.grad_accum "
        f"{cfg.train.grad_accum} -> {accum} keeps {accum * processes} micro-batches per optimizer step"
    )
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"grad_accum": accum})})


def _check_same_data(run_dir: Path, info: dict[str, dict[str, Any]]) -> None:
    """The config names the data files, not their contents: a resumed run must also see the same examples."""
    saved_path = run_dir / "data.json"
    if not saved_path.exists():
        return
    saved = read_json(run_dir, "data.json").get("splits", {})
    changed = [
        name
        for name in sorted(set(saved) | set(info))
        if saved.get(name, {}).get("fingerprint") != info.get(name, {}).get("fingerprint")
    ]
    if changed:
        raise LmtuneError(
            f"--resume: the {' and '.join(changed)} data differ from the data {run_dir} was started with "
            f"(content fingerprints in {saved_path} do not match)",
            hint="restore the original data files, or start a new run (--overwrite or another --output-dir)",
        )


def _check_leakage(cfg: RunConfig, train: list[Example], validation: list[Example], say: Callable) -> dict[str, Any]:
    """The cheap leakage check every run gets: validation examples whose text (or prompt) is also in train."""
    if cfg.data.leakage == "off" or not validation:
        return {"checked": False}
    leaks = cheap_leaks(train, validation)
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
        say(f"[yellow]warning: {message}; {hint}[/yellow]")
    return {"checked": True, "leaked_examples": len(leaks), "kinds": counts}


def _report_data(
    say: Callable, fmt: str, chat: bool, tr: TokenStats, va: TokenStats, rows: int, cfg: RunConfig
) -> None:
    say(
        f"data: {fmt} records rendered {'through the chat template' if chat else 'as raw text'}; "
        f"train {tr.kept} examples ({tr.trained_tokens:,} trained of {tr.tokens:,} tokens)"
        + (f" in {rows} packed rows" if cfg.data.packing else "")
        + f", validation {va.kept}"
    )
    for name, st in (("train", tr), ("validation", va)):
        if st.chunked:
            say(f"{name}: {st.chunked} documents longer than max_length {cfg.data.max_length} cut into chunks")
        if st.truncated or st.dropped:
            say(
                f"[yellow]{name}: {st.truncated} examples truncated and {st.dropped} dropped at "
                f"max_length {cfg.data.max_length} (data.overlong={cfg.data.overlong})[/yellow]"
            )
