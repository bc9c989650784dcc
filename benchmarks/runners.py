"""The contenders of the throughput benchmark, each a function `(spec, on_step) -> model` that trains one LoRA run
and calls `on_step(trained_tokens)` after every optimizer step (where the orchestrator hands the CPU to the next
runner, so machine noise hits every runner alike).

- `hf`: transformers.Trainer + peft LoRA with dynamic padding (DataCollatorForSeq2Seq), the tutorial baseline;
  with `grouped`/`bf16`, the same Trainer with `train_sampling_strategy="group_by_length"` and `bf16=True`.
- `trl`: TRL's SFTTrainer on prompt/completion data (completion-only loss) with `padding_free`.
- `lmtune`: `lmtune.finetune` on the same JSONL with its defaults (plus any `overrides`).

All share the LoRA setup (r=16, alpha=32, dropout 0.05, every linear layer), AdamW, the cosine schedule, the
learning rate, warmup, clipping and batch size. The benchmark renders and tokenizes examples exactly as lmtune
does (prompt + completion + EOS, trained from the first token that overlaps the completion), so every runner
trains on the same tokens.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

IGNORE = -100


@dataclass(frozen=True)
class Spec:
    runner: str  # hf | trl | lmtune
    tokenizer: str
    model: str
    train: str
    validation: str
    max_length: int = 512
    steps: int = 30
    batch_size: int = 8
    lr: float = 5e-4
    warmup_steps: int = 3
    bf16: bool = False
    grouped: bool = False  # hf: length-grouped sampling
    overrides: tuple[str, ...] = field(default_factory=tuple)  # lmtune: key=value
    seed: int = 0


LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")


def read_jsonl(path: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def encode(rec: dict[str, str], tok: Any, max_length: int) -> dict[str, list[int]]:
    """lmtune's rendering of a raw prompt/completion example (see lmtune.data.tokenize.encode)."""
    text = rec["prompt"] + rec["completion"]
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    cut = len(rec["prompt"])
    ids = [*enc["input_ids"], tok.eos_token_id]
    labels = [t if end > cut else IGNORE for t, (_, end) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]
    labels.append(tok.eos_token_id)
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def trained_tokens(labels: torch.Tensor) -> int:
    return int((labels[..., 1:] != IGNORE).sum())


@torch.no_grad()
def validation_loss(model: torch.nn.Module, spec: Spec, tok: Any) -> float:
    """Token-weighted cross-entropy of the completions of the validation set, in float32, one scorer for all."""
    model.eval()
    rows = [encode(r, tok, spec.max_length) for r in read_jsonl(spec.validation)]
    total, n = 0.0, 0
    for i in range(0, len(rows), 8):
        batch = rows[i : i + 8]
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), IGNORE)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, r in enumerate(batch):
            k = len(r["input_ids"])
            ids[j, :k], labels[j, :k], mask[j, :k] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="sum"
        )
        total, n = total + float(loss), n + trained_tokens(labels)
    return total / max(n, 1)


def _hf_args(spec: Spec, out: str, **extra: Any) -> dict[str, Any]:
    return dict(
        output_dir=out,
        per_device_train_batch_size=spec.batch_size,
        max_steps=spec.steps,
        learning_rate=spec.lr,
        lr_scheduler_type="cosine",
        warmup_steps=spec.warmup_steps,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        bf16=spec.bf16,
        seed=spec.seed,
        data_seed=spec.seed,
        dataloader_num_workers=0,
        **extra,
    )


def _lora_model(spec: Spec) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(spec.model, dtype=torch.float32)
    if torch.cuda.is_available():
        model = model.cuda()
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA))


def counting(collator: Callable[[list[dict[str, Any]]], Any], counts: list[int]) -> Callable[..., Any]:
    """The collator, recording each batch's trained tokens in `counts` (in the order the batches are made)."""

    def collate(features: list[dict[str, Any]]) -> Any:
        batch = collator(features)
        counts.append(trained_tokens(batch["labels"]))
        return batch

    return collate


def _step_callback(on_step: Callable[[int], None], counts: list[int]) -> Any:
    from transformers import TrainerCallback

    class Baton(TrainerCallback):
        """Reports each finished step with its batch's trained tokens (the collator records them in order)."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            on_step(counts[state.global_step - 1])

    return Baton()


def run_hf(spec: Spec, on_step: Callable[[int], None]) -> Any:
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tok = AutoTokenizer.from_pretrained(spec.tokenizer)
    data = Dataset.from_list([encode(r, tok, spec.max_length) for r in read_jsonl(spec.train)])
    counts: list[int] = []
    collate = counting(DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=IGNORE), counts)
    model = _lora_model(spec)
    strategy = "group_by_length" if spec.grouped else "random"
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(**_hf_args(spec, out, train_sampling_strategy=strategy, remove_unused_columns=False))
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=collate,
            callbacks=[_step_callback(on_step, counts)],
        )
        trainer.train()
    return model, tok


def run_trl(spec: Spec, on_step: Callable[[int], None]) -> Any:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(spec.tokenizer)
    data = Dataset.from_list(read_jsonl(spec.train))
    data = data.filter(lambda r: len(tok(r["prompt"] + r["completion"])["input_ids"]) < spec.max_length)
    model = _lora_model(spec)
    counts: list[int] = []
    with tempfile.TemporaryDirectory() as out:
        # padding_free without packing does not truncate (TRL refuses a max_length): longer examples are left out.
        args = SFTConfig(
            **_hf_args(spec, out), completion_only_loss=True, dataset_num_proc=None, padding_free=True, max_length=None
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=data,
            processing_class=tok,
            callbacks=[_step_callback(on_step, counts)],
        )
        trainer.data_collator = counting(trainer.data_collator, counts)
        trainer.train()
    return model, tok


def lmtune_config(spec: Spec, out: str) -> dict[str, Any]:
    return {
        "model": {"name": spec.model, "tokenizer": spec.tokenizer},
        "data": {
            "train": spec.train,
            "format": "prompt_completion",
            "template": "raw",
            "max_length": spec.max_length,
            "val_fraction": 0.0,
            "leakage": "off",
        },
        "method": {"name": "lora", "r": LORA["r"], "alpha": LORA["lora_alpha"], "dropout": LORA["lora_dropout"]},
        "train": {
            "batch_size": spec.batch_size,
            "max_steps": spec.steps,
            "lr": spec.lr,
            "scheduler": "cosine",
            "warmup_steps": spec.warmup_steps,
            "max_grad_norm": 1.0,
            "log_every": 10**6,
        },
        "forgetting": {"measure": False},
        "output_dir": out,
        "seed": spec.seed,
    }


def run_lmtune(spec: Spec, on_step: Callable[[int], None]) -> Any:

    import lmtune
    from lmtune.export import load_tuned

    seen = [0]

    def after_step(state: Any) -> None:
        on_step(state.tokens - seen[0])
        seen[0] = state.tokens

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "run")
        result = lmtune.finetune(
            lmtune_config(spec, out),
            overrides=spec.overrides,
            after_step=[after_step],
            report=None,
        )
        model, tok, _ = load_tuned(result.run_dir)
    return model.float(), tok


RUNNERS = {"hf": run_hf, "trl": run_trl, "lmtune": run_lmtune}


def peak_memory_mb() -> dict[str, float]:
    import resource

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out
