"""`lmtune eval RUN`: a tiny run scored against its base model prompted zero- and few-shot, on the same data."""

import json
from pathlib import Path

import pytest
from support import run_main, write_jsonl

from lmtune.api import evaluate_run, finetune
from lmtune.api.evaluate import Baseline
from lmtune.api.fewshot import demonstrations
from lmtune.data.formats import PromptCompletionExample
from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import compute_metrics


def qa(i: int) -> dict:
    a, b = i % 7 + 1, i % 5 + 2
    return {"question": f"What is {a} plus {b}?\n", "answer": f"{a + b}", "alt": f"{a + b}.", "alt2": f"it is {a + b}"}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("eval-run")
    train = write_jsonl(tmp / "train.jsonl", [qa(i) for i in range(30)])
    cfg = {
        "data": {"train": str(train), "columns": {"prompt": "question", "completion": "answer"}, "max_length": 64},
        "method": {"name": "lora", "r": 4},
        "train": {"max_steps": 3, "batch_size": 4, "mixed_precision": "no", "lr": 1e-3},
    }
    return finetune(cfg, output_dir=str(tmp / "run")).run_dir


def test_eval_scores_tuned_and_baselines_with_multiple_references(lora_run: Path, tmp_path: Path) -> None:
    test = write_jsonl(tmp_path / "test.jsonl", [qa(i) for i in range(40, 46)])
    result = evaluate_run(
        lora_run,
        data=str(test),
        references=["answer", "alt", "alt2"],
        baselines=["zero-shot", "few-shot:2:retrieved"],
        metrics=["rouge", "exact_match"],
        max_new_tokens=6,
    )
    assert set(result.metrics) == {"tuned", "zero-shot", "2-shot (retrieved)"}
    assert result.data["examples"] == 6 and result.data["references_per_example"] == 3
    # The figures are the metrics library's on the saved outputs and references.
    sample = result.samples[0]
    first = qa(40)
    assert sample["reference"] == [first["answer"], first["alt"], first["alt2"]]
    outputs = [s["outputs"]["tuned"] for s in result.samples]
    refs = [s["reference"] for s in result.samples]
    assert compute_metrics(["rouge", "exact_match"], outputs, refs) == result.metrics["tuned"]
    assert {c["baseline"] for c in result.comparison} == {"zero-shot", "2-shot (retrieved)"}
    assert result.verdict and "rougeL" in result.verdict and "prompting" in result.verdict
    saved = json.loads((lora_run / "eval.json").read_text())
    assert saved["metrics"] == result.metrics and saved["verdict"] == result.verdict


def test_demonstrations_come_from_training_and_retrieval_finds_the_nearest() -> None:
    train = [
        PromptCompletionExample(f"capital of {c}?\n", c, "train.jsonl", i)
        for i, c in enumerate(["France", "Peru", "Japan", "Chile"], 1)
    ]
    query = [PromptCompletionExample("what is the capital of Japan?\n", "Tokyo", "test.jsonl", 1)]
    (shots,) = demonstrations(Baseline(2, "retrieved"), query, train, seed=0)
    assert shots[-1].prompt == "capital of Japan?\n" and all(s.source == "train.jsonl" for s in shots)
    (random_shots,) = demonstrations(Baseline(3, "random"), query, train, seed=0)
    assert len(random_shots) == 3 and set(random_shots) <= set(train)


@pytest.mark.parametrize("text", ["one-shot", "few-shot:0", "few-shot:2:nearest", "few-shot:x"])
def test_bad_baselines_are_refused(text: str) -> None:
    with pytest.raises(LmtuneError, match="unknown baseline"):
        Baseline.parse(text)


def test_cli_eval_run_json_is_one_object(lora_run: Path, monkeypatch, capsys) -> None:
    code, stdout, stderr = run_main(
        monkeypatch, capsys, "eval", lora_run, "--limit", "3", "--max-new-tokens", "4", "--json"
    )
    assert code == 0, stderr
    payload = json.loads(stdout)
    assert payload["data"]["examples"] == 3 and "tuned" in payload["metrics"]
    code, _, stderr = run_main(monkeypatch, capsys, "eval", lora_run, "--baseline", "two-shot")
    assert code == 2 and "unknown baseline" in stderr and "Traceback" not in stderr


def test_train_runs_the_configured_evaluation_into_the_report(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [qa(i) for i in range(20)])
    test = write_jsonl(tmp_path / "test.jsonl", [qa(i) for i in range(40, 44)])
    cfg = {
        "data": {"train": str(train), "columns": {"prompt": "question", "completion": "answer"}, "max_length": 64},
        "method": "full",
        "train": {"max_steps": 2, "batch_size": 4, "mixed_precision": "no"},
        "forgetting": {"measure": False},
        "eval": {"data": str(test), "references": ["answer", "alt"], "baselines": ["zero-shot"], "max_new_tokens": 4},
    }
    run_dir = finetune(cfg, output_dir=str(tmp_path / "run")).run_dir
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["data"]["examples"] == 4 and set(saved["metrics"]) == {"tuned", "zero-shot"}
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert saved["verdict"] in page.replace("&#x27;", "'") and "zero-shot" in page


def test_teacher_forced_metrics_and_forgetting(lora_run: Path) -> None:
    result = evaluate_run(
        lora_run,
        metrics=["exact_match", "perplexity", "token_accuracy"],
        baselines=["zero-shot"],
        limit=4,
        max_new_tokens=4,
        forgetting="general",
        save=False,
    )
    tuned, base = result.metrics["tuned"], result.metrics["zero-shot"]
    assert set(tuned) == {"exact_match", "perplexity", "token_accuracy"} and 0 <= tuned["token_accuracy"] <= 1
    assert tuned["perplexity"] > 1 and base["perplexity"] > 1 and tuned["perplexity"] != base["perplexity"]
    assert result.forgetting is not None and result.forgetting["ratio"] > 0
    assert result.as_dict()["forgetting"]["after"]["loss"] > 0


def test_a_plain_model_is_scored_as_it_is(tmp_path: Path, monkeypatch, capsys) -> None:
    test = write_jsonl(tmp_path / "test.jsonl", [qa(i) for i in range(40, 43)])
    train = write_jsonl(tmp_path / "train.jsonl", [qa(i) for i in range(10)])
    columns = ["--set", "data.columns.prompt=question", "--set", "data.columns.completion=answer"]
    code, stdout, stderr = run_main(monkeypatch, capsys, "eval", "preset:tiny-chat", "--data", test, *columns,
                                    "--set", f"data.train={train}", "--baseline", "few-shot:1", "--max-new-tokens", "3",
                                    "--json")  # fmt: skip
    assert code == 0, stderr
    payload = json.loads(stdout)
    assert set(payload["metrics"]) == {"model", "1-shot (random)"} and payload["data"]["examples"] == 3
    assert (
        "model zero-shot" in payload["verdict"]
        or "prompting beats" in payload["verdict"]
        or "no significant" in payload["verdict"]
    )
    assert not (tmp_path / "eval.json").exists()
    # Demonstrations from the evaluated file itself are refused.
    code, _, stderr = run_main(
        monkeypatch, capsys, "eval", "preset:tiny-chat", "--data", test, *columns, "--baseline", "few-shot:1"
    )
    assert code == 2 and "must come from training data" in stderr
    code, _, stderr = run_main(monkeypatch, capsys, "eval", "preset:tiny-chat")
    assert code == 2 and "give --data" in stderr
