"""README.md: a Hugging Face-style model card for the run, written from what the run recorded.

YAML front matter as the Hub reads it (base_model only for hub ids: a local path or a preset means nothing there;
library_name picks the Hub's loading snippet, so it names the library that loads final/: peft for adapters,
transformers for full weights). The body says what the model is, what it was trained on (with fingerprints),
how, how well (and against what), what the curves suggest, what was not measured, and how to load it with code
that runs as written.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from lmtune.data.load import looks_like_path
from lmtune.report.run import Run
from lmtune.report.views import (
    comparison_rows,
    diagnosis,
    example_count,
    flatten,
    fmt_metric,
    fmt_seconds,
    fmt_value,
    forgetting,
    forgetting_warning,
    is_chat,
    kept_step,
    leakage_text,
    method_text,
    number,
    splits,
    system_metrics,
    trainable_text,
    verdicts,
)

PRESET_PREFIX = "preset:"
# Hyperparameters of the card's table: what decides the result (the report has every setting).
_DATA_KEYS = ("format", "template", "chat_template", "max_length", "overlong", "packing", "max_examples")


def render_card(run: Run) -> str:
    parts = [_front_matter(run), f"# {run.name}\n", *_intro(run)]
    for section in (_model, _training_data, _training_procedure, _evaluation, _diagnosis, _limitations, _how_to_use):
        parts += section(run)
    parts.append(
        "\n---\n*Written by lmtune from the files of this run directory (report.html has the plots); "
        "rebuild it with `lmtune report RUN`.*\n"
    )
    return "\n".join(parts)


def cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def is_hub_id(name: str | None) -> bool:
    return bool(name) and not name.startswith(PRESET_PREFIX) and not looks_like_path(name) and not Path(name).exists()


def _front_matter(run: Run) -> str:
    meta: dict[str, Any] = {}
    if is_hub_id(run.model):
        meta["base_model"] = run.model
    meta["library_name"] = "peft" if run.adapter else "transformers"
    method = run.method.get("name")
    tags = ["lmtune", str(run.config.get("task", "sft")), *([str(method)] if method else [])]
    if run.adapter:
        tags += ["peft"] if "peft" not in tags else []
    meta["tags"] = tags
    data = run.config.get("data") or {}
    hub_data = [s for s in (data.get("train"), data.get("validation")) if isinstance(s, str) and is_hub_id(s)]
    if hub_data:
        meta["datasets"] = list(dict.fromkeys(hub_data))
    meta["pipeline_tag"] = "text-generation"
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _intro(run: Run) -> list[str]:
    base = f"`{run.model}`" if run.model else "an unrecorded base model"
    lines = [f"A fine-tune of {base} with {method_text(run)}, made with lmtune.\n"]
    lines += [f"> **{v}**\n" for v in verdicts(run)]
    return lines


def _model(run: Run) -> list[str]:
    rows = [["base model", f"`{run.model}`" if run.model else "–"], ["method", method_text(run)]]
    if t := trainable_text(run):
        rows.append(["parameters", t])
    what = "a LoRA adapter and the tokenizer" if run.adapter else "the full model weights and the tokenizer"
    files = f"`final/`: {what} (safetensors)"
    if run.base_copy:
        files += "; `base_model/`: the base weights the adapter applies to (a preset has no other home on disk)"
    rows.append(["files", files])
    return ["## Model\n", md_table(["", ""], rows)]


def _training_data(run: Run) -> list[str]:
    parts = splits(run)
    if not parts:
        return []
    rows = []
    for name, info in parts.items():
        tokens = info.get("tokens") if isinstance(info.get("tokens"), dict) else {}
        counts = [info.get("records"), info.get("examples"), tokens.get("trained_tokens")]
        hashes = [f"`{info[k]}`" if info.get(k) else "–" for k in ("file_sha256", "fingerprint")]
        rows.append(
            [name, f"`{info.get('source', '')}`", *(fmt_value(c) if c is not None else "–" for c in counts), *hashes]
        )
    header = ["split", "source", "records", "examples", "trained tokens", "file sha256", "content fingerprint"]
    out = ["## Training data\n", md_table(header, rows)]
    fmt = run.data.get("format")
    if fmt:
        out.append(
            f"Records: {fmt}" + (", rendered through the chat template." if is_chat(run) else ", as raw text.") + "\n"
        )
    if leak := leakage_text(run):
        out.append(f"Leakage check: {leak[1]}.\n")
    return out


def _training_procedure(run: Run) -> list[str]:
    cfg = run.config
    if not cfg and not run.summary:
        return []
    out = ["## Training procedure\n"]
    s = run.summary
    facts = []
    if isinstance(s.get("steps"), int):
        facts.append(
            f"{s['steps']:,} optimizer steps" + (f" ({s['epochs']:g} epochs)" if number(s.get("epochs")) else "")
        )
    if isinstance(s.get("trained_tokens"), int):
        facts.append(f"{s['trained_tokens']:,} trained tokens")
    if number(s.get("train_time_s")) is not None:
        facts.append(f"{fmt_seconds(s['train_time_s'])} on {run.env.get('device', 'an unrecorded device')}")
    step, early = kept_step(s)
    if early:
        stopped = f"stopped early at step {s.get('stopped_at', s.get('steps'))}; " if s.get("stopped_early") else ""
        facts.append(f"{stopped}the final model is the best evaluation (step {step})")
    if facts:
        out.append("Trained for " + ", ".join(facts) + ".\n")
    rows = [[f"`{k}`", fmt_value(v)] for k, v in flatten({"train": cfg.get("train") or {}})]
    rows += [[f"`method.{k}`", fmt_value(v)] for k, v in flatten(run.method) if k != "name"]
    data = cfg.get("data") or {}
    rows += [[f"`data.{k}`", fmt_value(data[k])] for k in _DATA_KEYS if data.get(k) is not None]
    rows += [[f"`{k}`", fmt_value(v)] for k, v in flatten({"data": {"replay": data.get("replay")}})]
    rows += [[f"`{k}`", fmt_value(v)] for k, v in flatten({"forgetting": cfg.get("forgetting")})]
    if "seed" in cfg:
        rows.append(["`seed`", cfg["seed"]])
    if rows:
        out.append(md_table(["hyperparameter", "value"], rows))
    libs = run.env.get("libraries") if isinstance(run.env.get("libraries"), dict) else {}
    if libs:
        out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in libs.items() if v) + ".\n")
    return out


def _evaluation(run: Run) -> list[str]:
    out = ["## Evaluation\n"]
    s = run.summary
    before, after = number(s.get("val_loss_before")), number(s.get("val_loss_after"))
    if after is not None:
        line = f"Validation loss {after:.4f} after training"
        line += f" ({before:.4f} before)" if before is not None else ""
        best = number(s.get("best_val_loss"))
        line += f", best {best:.4f} at step {s.get('best_val_step')}" if best is not None else ""
        ppl = number(s.get("val_perplexity_after"))
        out.append(line + (f"; perplexity after training {ppl:.2f}" if ppl is not None else "") + ".\n")
    systems, rows = system_metrics(run), comparison_rows(run)
    data = run.eval.get("data") if isinstance(run.eval.get("data"), dict) else {}
    if systems:
        refs = data.get("references_per_example")
        each = f", up to {refs} references each" if isinstance(refs, int) and refs > 1 else ""
        where = (
            f" on `{data.get('source', '?')}` ({fmt_value(data.get('examples', '?'))} examples{each})" if data else ""
        )
        out.append(f"Task metrics{where}:\n")
        keys = list(dict.fromkeys(k for v in systems.values() for k in v))
        out.append(
            md_table(["metric", *systems], [[k, *(fmt_metric(k, v.get(k)) for v in systems.values())] for k in keys])
        )
    if rows:
        ci = rows[0].confidence
        header = ["baseline", "metric", "baseline value", "tuned", "delta", f"{ci:.0%} CI" if ci else "CI"]
        out.append("Tuned minus baseline on the same examples (paired bootstrap):\n")
        out.append(md_table(header, [r.cells() for r in rows]))
    f = forgetting(run)
    if f is not None:
        b, a = f["before"], f["after"]
        pairs = [
            f"{k} {fmt_metric(k, number(b.get(k)))} → {fmt_metric(k, number(a.get(k)))}"
            for k in ("loss", "perplexity")
            if number(b.get(k)) is not None and number(a.get(k)) is not None
        ]
        ratio = number(f.get("ratio"))
        name = f.get("text") if isinstance(f.get("text"), str) else "general text"
        text = f"Forgetting ({name}, base → tuned): " + "; ".join(pairs)
        text += f"; after/before ({f.get('ratio_of', 'as recorded')}) ×{ratio:.3f}" if ratio is not None else ""
        warning = forgetting_warning(f)
        out.append(text + (f". **Warning:** {warning}.\n" if warning else ". No forgetting warning.\n"))
    if len(out) == 1:
        out.append("No evaluation was recorded for this run.\n")
    return out


def _diagnosis(run: Run) -> list[str]:
    findings, recorded = diagnosis(run)
    if not findings and not run.metrics:
        return []
    out = ["## Diagnosis\n"]
    if not findings:
        return [*out, "The loss curves show no sign of over- or underfitting.\n"]
    if not recorded:
        out.append("(computed from metrics.jsonl when this card was written)\n")
    out += [f"- **{d['kind']}**: {d['message']}. *Try:* {d['advice']}." for d in findings]
    return [*out, ""]


def _limitations(run: Run) -> list[str]:
    notes = []
    model = run.model or ""
    if model.startswith(PRESET_PREFIX):
        notes.append(
            f"The base model `{model}` is a randomly initialised test model: its outputs carry no meaning. "
            "This run demonstrates the pipeline, not a usable model."
        )
    (n_train, train_dropped), (n_val, val_dropped) = example_count(run, "train"), example_count(run, "validation")
    if n_train is not None:
        dropped = f" ({train_dropped:,} more were dropped at data.max_length)" if train_dropped else ""
        notes.append(
            f"Trained on {'only ' if n_train < 1000 else ''}{n_train:,} examples{dropped}: expect it to work on "
            "inputs like those and not beyond them."
        )
    if n_val is None or n_val == 0:
        notes.append("No validation split: over- and underfitting could not be measured.")
    elif n_val < 100:
        dropped = f" ({val_dropped:,} more were dropped at data.max_length)" if val_dropped else ""
        notes.append(f"The validation loss comes from {n_val} examples{dropped}: small differences are within noise.")
    leak = leakage_text(run)
    if leak and leak[0] == "warning":
        notes.append(leak[1][0].upper() + leak[1][1:] + ".")
    data = run.eval.get("data") if isinstance(run.eval.get("data"), dict) else {}
    n_eval = data.get("examples")
    if not system_metrics(run):
        notes.append("Task metrics were not measured (`lmtune eval RUN --data test.jsonl` measures them).")
    elif isinstance(n_eval, int) and n_eval < 300:
        notes.append(f"Task metrics come from {n_eval} examples: read them with their confidence intervals.")
    if not comparison_rows(run):
        notes.append(
            "Not compared with the base model prompted zero- or few-shot: whether fine-tuning beat prompting is "
            "unknown (`lmtune eval RUN --baseline few-shot:3`)."
        )
    if forgetting(run) is None:
        notes.append("Forgetting of general ability was not measured (`lmtune eval RUN --forgetting general.txt`).")
    notes.append(
        "Not measured at all: safety, bias, factual accuracy, and behaviour on languages or domains outside the "
        "training data. The licences of the base model and of the training data apply."
    )
    return ["## Limitations\n", *(f"- {n}" for n in notes), ""]


def _how_to_use(run: Run) -> list[str]:
    if not run.final.is_dir():
        return ["## How to use\n", "The run has no `final/` model yet (it did not finish).\n"]
    run_path = str(run.path)
    lines = ["from pathlib import Path", ""]
    if run.adapter:
        lines.append("from peft import PeftModel")
    lines += [
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f"run = Path({json.dumps(run_path, ensure_ascii=False)})",
    ]
    lines.append('tokenizer = AutoTokenizer.from_pretrained(run / "final")')
    if run.adapter:
        if run.base_copy:
            base = 'run / "base_model"'
            comment = "  # the base weights the adapter was trained on"
        else:
            model_cfg = run.config.get("model") or {}
            extra = "".join(f", {k}={model_cfg[k]!r}" for k in ("revision", "trust_remote_code") if model_cfg.get(k))
            base, comment = f"{run.model!r}{extra}", ""
        lines.append(f"base = AutoModelForCausalLM.from_pretrained({base}){comment}")
        lines.append('model = PeftModel.from_pretrained(base, run / "final")  # .merge_and_unload() for a plain model')
    else:
        lines.append('model = AutoModelForCausalLM.from_pretrained(run / "final")')
    lines.append("")
    if is_chat(run):
        lines += [
            'messages = [{"role": "user", "content": "Your question here"}]',
            "inputs = tokenizer.apply_chat_template(",
            '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True',
            ")",
        ]
    else:
        template = (run.config.get("data") or {}).get("prompt_template")
        comment = f"  # render it as in training: {template!r}" if template else ""
        lines += [f'prompt = "Your prompt here"{comment}', 'inputs = tokenizer(prompt, return_tensors="pt")']
    lines += [
        "output = model.generate(**inputs, max_new_tokens=64, do_sample=False)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))',
    ]
    code = "\n".join(lines)
    example = "Your question here" if is_chat(run) else "Your prompt here"
    return [
        "## How to use\n",
        "With transformers" + (" and peft" if run.adapter else "") + ":\n",
        f"```python\n{code}\n```\n",
        "Or with lmtune, which renders the prompt exactly as training did:\n",
        f'```bash\nlmtune generate {shlex.quote(run_path)} --prompt "{example}"\n```\n',
    ]
