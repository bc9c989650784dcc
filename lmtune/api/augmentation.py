"""`augment`: augmented copies of a training file, through a named model when the strategy needs one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from lmtune.data.augment import (
    AugmentOptions,
    AugmentReport,
    augment_records,
    check_model,
    check_originals,
    check_paths,
    check_request,
)
from lmtune.data.load import load_records
from lmtune.data.records_io import write_records
from lmtune.evaluate.generate import text_generator
from lmtune.model import load_generation_model


def augment(
    data: str,
    strategy: str,
    *,
    out: str | Path,
    model: str | None = None,
    fields: Sequence[str] | None = None,
    copies: int = 1,
    seed: int = 0,
    options: AugmentOptions | None = None,
    temperature: float = 0.0,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    only_new: bool = False,
    overwrite: bool = False,
    force: bool = False,
    trust_remote_code: bool = False,
) -> AugmentReport:
    """Write `out`: the records of the training file `data` unchanged, then augmented copies of them.

    The strategies are in `lmtune.data.augment_strategies.STRATEGIES`; paraphrase and backtranslate generate with
    `model`.
    """
    started = time.perf_counter()
    options = options or AugmentOptions()
    # 1. Settings, paths and records first: a typo or a validation file should not cost a model load.
    check_request(strategy, options=options, copies=copies)
    check_model(strategy, model)
    out_path = check_paths(data, out, overwrite=overwrite, force=force)
    records = load_records(data)
    check_originals(records)

    # 2. The model, for the strategies that generate text.
    generate = None
    if model is not None:
        lm, tokenizer = load_generation_model(model, trust_remote_code=trust_remote_code)
        lm.to("cuda" if torch.cuda.is_available() else "cpu")
        generate = text_generator(
            lm, tokenizer, max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature, seed=seed
        )

    # 3. Augment, then write the originals (in order) followed by the copies.
    result = augment_records(
        records, strategy, fields=fields, copies=copies, seed=seed, options=options, generate=generate, model=model
    )
    rows = result.copies if only_new else [*(r.data for r in records), *result.copies]
    sha256 = write_records(out_path, rows)
    return AugmentReport(
        source=data,
        out=str(out_path),
        sha256=sha256,
        strategy=strategy,
        seed=seed,
        model=model,
        originals=len(records),
        copies=len(result.copies),
        written=len(rows),
        fields=result.fields,
        skipped=result.skipped,
        notes=result.notes,
        seconds=round(time.perf_counter() - started, 3),
    )
