"""Save the tuned model of a run and load it back (full weights, or an adapter on its base model)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmtune.adapters import has_adapters, is_adapter_dir, load_adapters, save_adapters
from lmtune.config import RunConfig
from lmtune.errors import LmtuneError
from lmtune.methods import quantization_config, transformer_blocks
from lmtune.model import is_classifier, is_preset, is_token_classifier, load_model, load_tokenizer
from lmtune.tasks import TASKS
from lmtune.train.checkpoint import gathers, model_state, trainable_state

# The model class of each training type's saved model (others: a causal LM).
# The transformers class of each model kind a task trains (`lmtune.tasks`: a task entry's `model`).
AUTO_CLASSES = {
    "causal": AutoModelForCausalLM,
    "seq2seq": AutoModelForSeq2SeqLM,
    "classifier": AutoModelForSequenceClassification,
    "token_classifier": AutoModelForTokenClassification,
    "reward": AutoModelForSequenceClassification,  # a reward model: a classifier with one output, the score
}

FINAL = "final"
LAST = "last"  # the last step's weights, beside final/ when final/ holds the best evaluation's
BASE_MODEL = "base_model"


def needs_base_copy(cfg: RunConfig) -> bool:
    """A preset base has no home on disk to load an adapter onto, so the run keeps its own copy."""
    return cfg.method.name not in ("full", "freeze") and is_preset(cfg.model.name)


def save_base(run_dir: Path, base: PreTrainedModel) -> None:
    """Save the untouched base weights (call before the method wraps the model)."""
    tmp = run_dir / f".{BASE_MODEL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    base.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(run_dir / BASE_MODEL, ignore_errors=True)
    tmp.replace(run_dir / BASE_MODEL)


def final_state(model: Any) -> dict[str, Any] | None:
    """The weights `save_final` needs gathered whole when FSDP shards `model` or ZeRO holds its fp32 master weights
    (collective: call on every process), or None when the model holds them whole. An adapter's run saves only the
    trainable weights."""
    if not gathers(model):
        return None
    return trainable_state(model) if hasattr(model, "peft_config") or has_adapters(model) else model_state(model)


def save_final(
    run_dir: Path,
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    state_dict: dict[str, Any] | None = None,
    name: str = FINAL,
) -> Path:
    """Write the tuned model (or LoRA adapter) and its tokenizer to `final/` (or `name`) in safetensors, atomically.

    `state_dict`: the model's weights gathered whole (`checkpoint.model_state`) when FSDP holds them as shards."""
    out = run_dir / name
    tmp = run_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if has_adapters(model):
        save_adapters(model, tmp, state_dict)  # bottleneck adapters: lmtune's own (peft has none), the same contract
    else:
        model.save_pretrained(tmp, safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
        if hasattr(model, "peft_config") and (is_classifier(model) or is_token_classifier(model)):
            # A classifier adapter needs its label names (and head size) back: the base config that holds them.
            model.get_base_model().config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def read_run_config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise LmtuneError(f"{run_dir} is not a run directory (no config.yaml)", hint="pass runs/<name>")
    return RunConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def check_same_config(run_dir: Path, cfg: RunConfig) -> None:
    """Resuming with changed settings would silently mix two runs; only the run directory may differ."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved = read_run_config(run_dir).model_dump(mode="json")
    now = cfg.model_dump(mode="json")
    saved.pop("output_dir", None), now.pop("output_dir", None)
    changed = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if changed:
        raise LmtuneError(
            f"--resume: the config differs from the one {run_dir} was started with (sections: {', '.join(changed)})",
            hint=f"resume with the saved config: lmtune train {saved_path} --resume",
        )


def load_tuned(run_dir: Path) -> tuple[Any, PreTrainedTokenizerBase, RunConfig]:
    """The tuned model of a run in eval mode, its tokenizer (with the training chat template) and config.

    The run's task says the model class: an encoder-decoder for seq2seq, a sequence classifier for classification
    (label names in its config's id2label), a causal LM otherwise."""
    cfg = read_run_config(run_dir)
    kind = TASKS[cfg.task].model
    auto = AUTO_CLASSES[kind]
    final = run_dir / FINAL
    if not final.is_dir():
        raise LmtuneError(f"{run_dir} has no final model yet", hint="finish the run (lmtune train CONFIG --resume)")
    tokenizer = load_tokenizer(cfg.model.model_copy(update={"name": str(final), "tokenizer": None, "revision": None}))
    if (final / "adapter_config.json").exists() or is_adapter_dir(final):
        base_dir = run_dir / BASE_MODEL
        if base_dir.is_dir():
            base = auto.from_pretrained(base_dir, use_safetensors=True)
        else:
            extra: dict[str, Any] = {}
            if kind in ("classifier", "token_classifier", "reward"):
                saved = AutoConfig.from_pretrained(final)
                extra = dict(
                    labels=[saved.id2label[i] for i in range(saved.num_labels)], pad_token_id=saved.pad_token_id
                )
            base = load_model(
                cfg.model.model_copy(update={"gradient_checkpointing": False}),
                kind,
                quantization=_quantized(cfg),
                **extra,
            )
        if is_adapter_dir(final):
            model = load_adapters(base, final, transformer_blocks(base))
        else:
            from peft import PeftModel

            model = PeftModel.from_pretrained(base, final)
    else:
        model = auto.from_pretrained(final, use_safetensors=True)
    model.eval()
    return model, tokenizer, cfg


def _quantized(cfg: RunConfig) -> Any:
    """A qlora adapter goes back on the base quantized as in training where CUDA is; elsewhere on the unquantized
    base (outputs differ from the quantized model's by the quantization error)."""
    import torch

    return quantization_config(cfg.method) if cfg.method.name == "qlora" and torch.cuda.is_available() else None
