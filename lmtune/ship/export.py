"""`lmtune export RUN --out DIR`: the run's tuned model as a directory other tools load without lmtune.

- `hf`: a standalone Hugging Face model (safetensors shards, config with label maps, tokenizer with its chat
  template, generation config): LoRA/DoRA/IA3 merged into the base with peft's `merge_and_unload`, full and freeze
  runs saved as trained. Loads with plain `AutoModelFor….from_pretrained(DIR)`.
- `adapter`: the PEFT adapter directory (what vLLM, TGI and `PeftModel.from_pretrained` load).
- `gguf`: one GGUF file for llama.cpp and an Ollama Modelfile (`lmtune.ship.gguf`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmtune.errors import LmtuneError
from lmtune.export import FINAL, load_tuned, read_run_config

Reporter = Callable[..., None]
FORMATS = ("hf", "adapter", "gguf")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MERGEABLE = ("lora", "qlora", "dora", "ia3")
UNMERGEABLE = ("prompt_tuning", "prefix_tuning", "adapters")


def _silent(text: str, warning: bool = False) -> None:
    pass


@dataclass(frozen=True)
class Exported:
    out: Path
    format: str
    files: dict[str, int]  # file name -> size in bytes

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def export_model(
    run_dir: str | Path,
    out: str | Path,
    *,
    format: str = "hf",
    dtype: str | None = None,
    max_shard_size: str = "2GB",
    quant: str = "f16",
    overwrite: bool = False,
    report: Reporter = _silent,
) -> Exported:
    """Export the tuned model of `run_dir` to `out` in `format` (hf, adapter, gguf); see the module docstring.

    `dtype` (bf16, fp16, fp32; hf only): the weights' type, by default the one they were trained in (fp32 here).
    `quant` (f16, bf16, q8_0; gguf only)."""
    run_dir, out = Path(run_dir), Path(out)
    if format not in FORMATS:
        raise LmtuneError(f"unknown export format {format!r}", hint=f"use one of: {', '.join(FORMATS)}")
    if dtype is not None and dtype not in DTYPES:
        raise LmtuneError(f"unknown dtype {dtype!r}", hint=f"use one of: {', '.join(DTYPES)}")
    cfg = read_run_config(run_dir)
    _check_out(out, overwrite)
    if format == "adapter":
        return _export_adapter(run_dir, out, cfg.method.name, report)
    if cfg.method.name in UNMERGEABLE:
        raise LmtuneError(
            f"{run_dir} trained with method {cfg.method.name}, whose weights cannot be merged into the base model",
            hint=f"export the adapter instead: lmtune export {run_dir} --out {out} --format adapter",
        )
    model, tokenizer, _ = load_tuned(run_dir)
    model = merged(model)
    if format == "gguf":
        from lmtune.ship.gguf import write_gguf

        tmp = _tmp(out)
        write_gguf(model, tokenizer, tmp, quant=quant, name=run_dir.name)
        return _finish(tmp, out, "gguf", report)
    if dtype is not None:
        model = model.to(DTYPES[dtype])
    tmp = _tmp(out)
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(tmp)
    _write_card(run_dir, tmp, cfg.method.name, dtype or _dtype_name(model))
    return _finish(tmp, out, "hf", report)


def merged(model: Any) -> Any:
    """The plain transformers model: a peft model's adapters merged into its base weights (a classifier's trained
    head, peft's modules_to_save, put in place of the original), anything else as it is."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.eval()


def _export_adapter(run_dir: Path, out: Path, method: str, report: Reporter) -> Exported:
    final = run_dir / FINAL
    if method in ("full", "freeze"):
        raise LmtuneError(
            f"{run_dir} trained all its weights ({method}): there is no adapter to export",
            hint=f"export the model: lmtune export {run_dir} --out {out}",
        )
    if not final.is_dir():
        raise LmtuneError(f"{run_dir} has no final model yet", hint="finish the run (lmtune train CONFIG --resume)")
    tmp = _tmp(out)
    shutil.copytree(final, tmp)
    cfg_file = tmp / "adapter_config.json"
    base = run_dir / "base_model"
    if cfg_file.exists() and base.is_dir():
        # A preset base lives only in the run: ship it beside the adapter so the directory is complete.
        shutil.copytree(base, tmp / "base_model")
        report(f"the base model is a preset: copied it into {out / 'base_model'} (point base_model_name_or_path at it)")
    return _finish(tmp, out, "adapter", report)


def _dtype_name(model: Any) -> str:
    return {v: k for k, v in DTYPES.items()}.get(next(model.parameters()).dtype, "fp32")


def _write_card(run_dir: Path, out: Path, method: str, dtype: str) -> None:
    card = run_dir / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else f"# {run_dir.name}\n"
    how = "merged into the base weights (peft merge_and_unload)" if method in MERGEABLE else "saved as trained"
    text += (
        f"\n## Export\n\nExported by `lmtune export` from run `{run_dir.name}` (method {method}, {how}) as a "
        f"standalone Hugging Face model in {dtype}. Load it without lmtune or peft:\n\n"
        "```python\nfrom transformers import AutoModel, AutoTokenizer\n"
        'model = AutoModel.from_pretrained("PATH")  # or the AutoModelFor... class of the task\n'
        'tokenizer = AutoTokenizer.from_pretrained("PATH")\n```\n'
    )
    (out / "README.md").write_text(text, encoding="utf-8")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise LmtuneError(f"{out} exists and is not empty", hint="choose another --out or pass --overwrite")


def _tmp(out: Path) -> Path:
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def _finish(tmp: Path, out: Path, format: str, report: Reporter) -> Exported:
    """Move the finished export into place (a half-written export never sits at `out`)."""
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    report(f"exported ({format}) to {out}: {len(files)} files, {sum(files.values()) / 1e6:.2f} MB")
    return Exported(out, format, files)
