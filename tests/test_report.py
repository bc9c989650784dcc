"""`lmtune report RUN`: report.html (self-contained, plots inline, text escaped) and the README.md model card.

Two real tiny runs (LoRA and full, a few steps on preset:tiny-chat) prove the card's loading code loads the tuned
model; synthetic run directories cover eval.json, forgetting, diagnosis and runs that lack some files.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from support import chat_record, run_main, write_jsonl

from lmtune.api import finetune
from lmtune.errors import LmtuneError
from lmtune.evaluate.predictions import score_predictions
from lmtune.export import load_tuned
from lmtune.plots import ema
from lmtune.report import write_report

SCRIPT = "<script>alert('x')</script>"
VERDICT = "fine-tuning beat 3-shot prompting (retrieved) by +6.23 rougeL [95% CI +3.10..+9.00]"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A LoRA run (base_model/ copy, adapter in final/) and a full run, 6 steps each with 3 evaluations."""
    root = tmp_path_factory.mktemp("report-runs")
    data = write_jsonl(root / "chat.jsonl", [chat_record(i) for i in range(30)])
    out = {}
    for method in ("lora", "full"):
        cfg = {
            "name": f"report-{method}",
            "seed": 3,
            "output_dir": str(root / method),
            "data": {"train": str(data), "val_fraction": 0.2, "max_length": 64},
            "method": {"name": method},
            "train": {"max_steps": 6, "batch_size": 4, "lr": 3e-3, "warmup_steps": 0, "mixed_precision": "no"},
        }
        cfg["train"]["eval_every"] = 3
        out[method] = finetune(cfg).run_dir
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / run.name
    shutil.copytree(run, dest)
    return dest


def eval_fixture() -> dict[str, Any]:
    """An eval.json as `lmtune eval RUN` writes it (schema in lmtune/report/run.py)."""
    return {
        "data": {"source": "data/test.jsonl", "examples": 200},
        "metrics": {
            "tuned": {"rougeL": 41.23, "bleu": 12.3, "exact_match": 0.05},
            "zero-shot": {"rougeL": 22.1, "bleu": 3.4, "exact_match": 0.0},
            "few-shot:3 (retrieved)": {"rougeL": 35.0, "bleu": 9.9, "exact_match": 0.02},
        },
        "comparison": [
            {
                "baseline": "few-shot:3 (retrieved)",
                "metric": "rougeL",
                "tuned": 41.23,
                "baseline_value": 35.0,
                "delta": 6.23,
                "low": 3.1,
                "high": 9.0,
                "p_value": 0.001,
                "confidence": 0.95,
            },
            # As `lmtune eval` writes it: Delta.to_dict(), a = the baseline, b = the tuned model.
            {
                "baseline": "zero-shot",
                "metric": "exact_match",
                "value_a": 0.0,
                "value_b": 0.05,
                "delta": 0.05,
                "low": -0.01,
                "high": 0.11,
                "p_value": 0.2,
                "confidence": 0.95,
                "n_resamples": 1000,
                "significant": False,
            },
        ],
        "verdict": VERDICT,
        "samples": [
            {
                "input": f"Summarize: hello {SCRIPT} & goodbye",
                "references": ["a greeting", "a farewell"],
                "outputs": {"tuned": "a greeting <b>bold</b>", "zero-shot": "hello"},
            },
            {"input": "long " * 300, "reference": "short", "outputs": {"tuned": "ok", "zero-shot": "no"}},
        ],
        "forgetting": {
            "text": "general",
            "file": "general.txt",
            "before": {"loss": 3.21, "perplexity": 24.78, "tokens": 4096},
            "after": {"loss": 3.95, "perplexity": 51.94, "tokens": 4096},
            "ratio": 1.2305,
            "ratio_of": "loss",
            "perplexity_ratio": 2.096,
            "threshold": 1.1,
            "warning": True,
        },
    }


def assert_self_contained(html: str) -> None:
    assert html.startswith("<!doctype html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "external resource in the report"
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    assert "url(" not in html
    assert "data:image/png;base64," in html


def python_block(card: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) == 1, card
    return blocks[0]


def front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


# --- real runs ------------------------------------------------------------------------------------


def test_report_of_a_real_run(runs: dict[str, Path], tmp_path: Path) -> None:
    run = copy_run(runs["lora"], tmp_path)
    paths = write_report(run)
    assert paths.html == run / "report.html" and paths.model_card == run / "README.md"
    html = paths.html.read_text(encoding="utf-8")
    assert_self_contained(html)
    summary = json.loads((run / "summary.json").read_text())
    data = json.loads((run / "data.json").read_text())
    # Curves and the summary's figures.
    assert "Loss curves" in html and 'alt="loss curves"' in html
    assert f"{summary['val_loss_before']:.4f} → {summary['val_loss_after']:.4f}" in html
    assert f"{summary['trainable_parameters']:,} trainable of {summary['total_parameters']:,}" in html
    # Data fingerprints, hyperparameters and versions.
    assert data["splits"]["train"]["fingerprint"] in html and data["splits"]["train"]["file_sha256"] in html
    assert "train.lr" in html and "0.003" in html
    env = json.loads((run / "env.json").read_text())
    assert env["libraries"]["torch"] in html
    # No eval.json yet: its sections are left out, the footer says how to add them.
    assert "Baseline vs tuned" not in html and "Sample outputs" not in html
    assert "Not found: eval.json" in html
    # Forgetting and diagnosis as far as the run recorded them (older runs: diagnosis computed from the curves).
    assert ("<h2>Forgetting" in html) == ("forgetting" in summary)
    if "forgetting" in summary:
        assert f"×{summary['forgetting']['ratio']:.3f}" in html
    assert "<h2>Diagnosis" in html
    assert not list(run.glob(".*.tmp")), "a temporary file was left behind"

    card = paths.model_card.read_text(encoding="utf-8")
    meta = front_matter(card)
    assert meta["library_name"] == "peft" and "lmtune" in meta["tags"] and "lora" in meta["tags"]
    assert "base_model" not in meta  # a preset is no hub id
    for section in ("## Model", "## Training data", "## Training procedure", "## Evaluation", "## Limitations"):
        assert section in card
    assert data["splits"]["validation"]["fingerprint"] in card
    assert "| `train.lr` | 0.003 |" in card
    assert "randomly initialised test model" in card and "Task metrics were not measured" in card
    assert f"lmtune generate {run}" in card


@pytest.mark.parametrize("method", ["lora", "full"])
def test_card_loading_code_loads_the_tuned_model(
    runs: dict[str, Path], method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = runs[method]
    card = write_report(run).model_card.read_text(encoding="utf-8")
    code = python_block(card)
    assert ('PeftModel.from_pretrained(base, run / "final")' in code) == (method == "lora")
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the card's snippet, as a user would run it
    capsys.readouterr()
    loaded = namespace["model"].eval()
    reference, tokenizer, _ = load_tuned(run)
    ids = tokenizer("What is 2 plus 3?", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, reference(ids).logits)
    assert front_matter(card)["library_name"] == ("peft" if method == "lora" else "transformers")


# --- eval.json, forgetting, diagnosis -------------------------------------------------------------


def test_eval_sections_in_report_and_card(runs: dict[str, Path], tmp_path: Path) -> None:
    run = copy_run(runs["lora"], tmp_path)
    (run / "eval.json").write_text(json.dumps(eval_fixture()), encoding="utf-8")
    summary = json.loads((run / "summary.json").read_text())
    summary["diagnosis"] = [
        {"kind": "overfitting", "message": "validation loss rose from 2.1 to 2.5", "advice": "train for fewer steps"}
    ]
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    paths = write_report(run)
    html = paths.html.read_text(encoding="utf-8")
    assert_self_contained(html)

    assert f'<div class="verdict">{VERDICT}</div>' in html
    # The metric table (points with 2 decimals, fractions with 4) and the comparison with its interval.
    for value in ("41.23", "22.10", "35.00", "0.0500", "+6.23", "+3.10 .. +9.00", "-0.0100 .. +0.1100", "0.001"):
        assert value in html, value
    assert '<span class="ok">+6.23</span>' in html and '<span class="muted">+0.0500</span>' in html
    assert 'alt="rougeL by system"' in html
    # Forgetting: figure, values, ratio and the warning with what to do about it.
    assert 'alt="forgetting"' in html and "3.2100" in html and "51.94" in html
    assert "after / before (loss): <b>×1.230</b> (warning above ×1.1); perplexity ×2.096" in html
    assert "general-text loss rose ×1.230, above the threshold ×1.1" in html and "data.replay" in html
    assert "general.txt</code>, 4,096 tokens)" in html
    # The recorded diagnosis, as advice.
    assert "validation loss rose from 2.1 to 2.5" in html and "train for fewer steps" in html
    assert "Computed by this report" not in html
    # Samples: every text escaped, long ones cut with a note; baselines before the tuned model.
    assert SCRIPT not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; goodbye" in html
    assert "a greeting &lt;b&gt;bold&lt;/b&gt;" in html
    assert "[truncated: 400 of 1,500 characters shown" in html
    assert html.index("<th>zero-shot</th>") < html.index("<th>tuned</th>")

    card = paths.model_card.read_text(encoding="utf-8")
    assert f"> **{VERDICT}**" in card
    assert "| few-shot:3 (retrieved) | rougeL | 35.00 | 41.23 | +6.23 | +3.10 .. +9.00 |" in card
    assert "| zero-shot | exact_match | 0.0000 | 0.0500 | +0.0500 | -0.0100 .. +0.1100 |" in card
    assert "| metric | zero-shot | few-shot:3 (retrieved) | tuned |" in card
    assert "Forgetting (general, base → tuned): loss 3.2100 → 3.9500; perplexity 24.78 → 51.94; " in card
    assert "after/before (loss) ×1.230. **Warning:** general-text loss rose ×1.230" in card
    assert "- **overfitting**: validation loss rose from 2.1 to 2.5. *Try:* train for fewer steps." in card
    assert "Task metrics come from 200 examples" in card and "Task metrics were not measured" not in card
    assert "Not compared with the base model" not in card and "Forgetting of general ability" not in card
    assert SCRIPT not in card  # samples stay out of the card


def test_comparison_as_written_by_score_predictions(tmp_path: Path) -> None:
    """eval.json may carry `Comparison.to_dict()` (lmtune.evaluate.predictions) per baseline."""
    refs = ["the cat sat", "a dog ran", "birds fly high", "fish swim", "the sun is hot", "rain falls"]
    tuned = ["the cat sat", "a dog ran", "birds fly", "fish swim", "the sun is hot", "rain"]
    base = ["cat", "dog", "birds", "fish swim", "sun", "rain"]
    write_jsonl(tmp_path / "tuned.jsonl", [{"prediction": p, "reference": r} for p, r in zip(tuned, refs, strict=True)])
    write_jsonl(tmp_path / "base.jsonl", [{"prediction": p, "reference": r} for p, r in zip(base, refs, strict=True)])
    scored = score_predictions(
        tmp_path / "tuned.jsonl", metrics="rouge", baseline=tmp_path / "base.jsonl", n_resamples=200
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: cmp\nmodel: {name: org/model}\nmethod: {name: full}\n", encoding="utf-8")
    (run / "eval.json").write_text(
        json.dumps({"metrics": scored.metrics, "comparison": {"zero-shot": scored.comparison.to_dict()}}),
        encoding="utf-8",
    )
    html = write_report(run).html.read_text(encoding="utf-8")
    d = scored.comparison.deltas["rougeL"]
    assert f'<td>zero-shot</td><td>rougeL</td><td class="num">{d.value_a:.2f}</td>' in html
    assert f"{d.delta:+.2f}" in html and f"{d.low:+.2f} .. {d.high:+.2f}" in html
    # A flat {"metric": value} is the tuned model's column.
    assert "<th>tuned</th>" in html and f"{scored.metrics['rougeL']:.2f}" in html


# --- older, partial and odd runs ------------------------------------------------------------------


def metric_lines(train: list[float], val: list[tuple[int, float]]) -> str:
    records = [{"split": "train", "step": i + 1, "loss": loss, "lr": 1e-3} for i, loss in enumerate(train)]
    records += [{"split": "validation", "step": s, "loss": loss, "perplexity": 2.0} for s, loss in val]
    return "".join(json.dumps(r) + "\n" for r in records)


def test_partial_run_gets_a_report_without_the_missing_sections(tmp_path: Path) -> None:
    """A run that crashed early: config.yaml and a metrics.jsonl whose last line was cut short, nothing else."""
    run = tmp_path / "crashed"
    run.mkdir()
    (run / "config.yaml").write_text(
        yaml.safe_dump({"name": "old", "model": {"name": "Qwen/Qwen2.5-0.5B"}, "data": {"train": "tatsu-lab/alpaca"}}),
        encoding="utf-8",
    )
    losses = [3.0 - 0.01 * i for i in range(40)]
    (run / "metrics.jsonl").write_text(metric_lines(losses, []) + '{"split": "train", "st', encoding="utf-8")
    paths = write_report(run)
    html = paths.html.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert "Loss curves" in html and "1 unreadable line(s) of metrics.jsonl" in html
    assert "did not finish" in html
    for absent in ("Baseline vs tuned", "<h2>Forgetting", "Sample outputs", "<h2>Data", "<h2>Environment"):
        assert absent not in html
    assert "Not found: summary.json" in html and "Not found: eval.json" in html
    card = paths.model_card.read_text(encoding="utf-8")
    meta = front_matter(card)
    assert meta["base_model"] == "Qwen/Qwen2.5-0.5B" and meta["datasets"] == ["tatsu-lab/alpaca"]
    assert "## Training data" not in card and "```python" not in card
    assert "no `final/` model yet" in card


def test_diagnosis_is_computed_for_runs_that_did_not_record_one(tmp_path: Path) -> None:
    run = tmp_path / "old"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"steps": 60}), encoding="utf-8")
    train = [2.0 - 0.02 * i for i in range(60)]  # training loss keeps falling ...
    val = [(0, 2.0), (20, 1.5), (40, 1.7), (60, 1.9)]  # ... validation loss turns up after step 20
    (run / "metrics.jsonl").write_text(metric_lines(train, val), encoding="utf-8")
    html = write_report(run).html.read_text(encoding="utf-8")
    assert "Computed by this report from metrics.jsonl" in html
    assert "overfitting" in html and "validation loss rose from 1.5000 (step 20) to 1.9000 (step 60)" in html
    assert "exponential moving average (weight 0.83)" in html  # 60 points: smoothed, 1 - 10/60


def test_early_stopping_names_the_kept_step(tmp_path: Path) -> None:
    run = tmp_path / "early"
    run.mkdir()
    summary = {
        "steps": 40,
        "stopped_early": True,
        "stopped_at": 40,
        "best_step": 20,
        "final_step": 20,
        "val_loss_after": 1.9,
        "val_loss_final": 1.5,
        "early_stopping": {"metric": "loss", "patience": 2, "reason": "no improvement in 2 evaluations"},
        "forgetting": {"before": {"loss": 2.0}, "after": {"loss": 2.1}, "ratio": 1.05, "threshold": 1.1},
    }
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    (run / "metrics.jsonl").write_text(
        metric_lines([2.0 - 0.02 * i for i in range(40)], [(0, 2.0), (20, 1.5), (40, 1.9)])
    )
    paths = write_report(run)
    html = paths.html.read_text(encoding="utf-8")
    assert (
        "Stopped early at step 40 (no improvement in 2 evaluations). The final model is the best evaluation: step 20"
        in html
    )
    assert "<b>1.5000</b><span>validation loss of the final model (step 20)</span>" in html
    assert '<p class="ok">No forgetting warning.</p>' in html
    card = paths.model_card.read_text(encoding="utf-8")
    assert "stopped early at step 40; the final model is the best evaluation (step 20)" in card
    assert "after/before (as recorded) ×1.050. No forgetting warning." in card


def test_missing_or_foreign_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LmtuneError, match="nowhere"):
        write_report(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(LmtuneError, match="is not a run directory"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_markdown_cells_are_escaped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text("{}", encoding="utf-8")
    (run / "eval.json").write_text(json.dumps({"metrics": {"tuned": {"a|b": 0.5}, "x|y\nz": {"a|b": 0.25}}}))
    card = write_report(run).model_card.read_text(encoding="utf-8")
    assert "| metric | x\\|y z | tuned |" in card and "| a\\|b | 0.2500 | 0.5000 |" in card


# --- CLI and helpers ------------------------------------------------------------------------------


def test_cli_report(runs: dict[str, Path], tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    run = copy_run(runs["full"], tmp_path)
    code, out, _ = run_main(monkeypatch, capsys, "report", run)
    assert code == 0 and out.split() == ["wrote", str(run / "report.html"), "wrote", str(run / "README.md")]
    code, out, _ = run_main(monkeypatch, capsys, "report", run, "--json")
    assert code == 0 and json.loads(out) == {"html": str(run / "report.html"), "model_card": str(run / "README.md")}
    code, out, err = run_main(monkeypatch, capsys, "report", tmp_path / "missing-run")
    assert code == 2 and "missing-run" in err and "error:" in err and out == ""


def test_ema_is_debiased() -> None:
    assert ema([5.0] * 10, 0.9) == pytest.approx([5.0] * 10)
    smoothed = ema([1.0, 0.0, 0.0], 0.5)  # averages 0.5, 0.25, 0.125 over weights 0.5, 0.75, 0.875
    assert smoothed == pytest.approx([1.0, 1 / 3, 1 / 7])


def test_report_reads_eval_json_written_by_lmtune_eval(runs: dict[str, Path], tmp_path: Path) -> None:
    """The contract with `lmtune eval`: what evaluate_run saves is what the report shows."""
    from lmtune.api.evaluate import evaluate_run

    run = copy_run(runs["lora"], tmp_path)
    result = evaluate_run(run, baselines=["zero-shot"], limit=3, max_new_tokens=4, metrics=["chrf"])
    html = write_report(run).html.read_text(encoding="utf-8")
    chrf = result.metrics["tuned"]["chrf"]
    assert f'<td>chrf</td><td class="num">{result.metrics["zero-shot"]["chrf"]:.2f}</td>' in html
    assert f'<td class="num">{chrf:.2f}</td></tr>' in html
    row = next(r for r in result.comparison if r["metric"] == "chrf")
    assert f'<td>zero-shot</td><td>chrf</td><td class="num">{row["value_a"]:.2f}</td>' in html
    assert f"{row['low']:+.2f} .. {row['high']:+.2f}" in html
    if result.verdict:
        assert result.verdict.replace("'", "&#x27;") in html
    sample = result.samples[0]
    assert f"<td>1</td><td>{sample['input']}</td>" in html  # plain arithmetic questions: nothing to escape
